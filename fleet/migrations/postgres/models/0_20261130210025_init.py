# ruff: noqa: E501, RUF100
# Made by aerich (python -m fleet.migrations); docs/fleet.md "Database schema and migrations".
from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return r"""
        CREATE TABLE IF NOT EXISTS "audit" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    "actor" VARCHAR(80) NOT NULL,
    "action" VARCHAR(64) NOT NULL,
    "target" VARCHAR(200) NOT NULL,
    "detail" JSONB,
    "source" VARCHAR(64) NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_audit_at_50be99" ON "audit" ("at");
CREATE TABLE IF NOT EXISTS "command" (
    "id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "name" VARCHAR(64) NOT NULL,
    "args" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "expires_ms" BIGINT NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "detail" JSONB,
    "answered_at" TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS "idx_command_device__ff94e6" ON "command" ("device_id");
CREATE TABLE IF NOT EXISTS "device" (
    "id" VARCHAR(63) NOT NULL PRIMARY KEY,
    "kind" VARCHAR(16),
    "name" VARCHAR(120) NOT NULL,
    "ward" VARCHAR(80) NOT NULL,
    "site" VARCHAR(120) NOT NULL,
    "tags" JSONB NOT NULL,
    "latitude" DOUBLE PRECISION,
    "longitude" DOUBLE PRECISION,
    "status" VARCHAR(14) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "online" BOOL NOT NULL,
    "session" BIGINT,
    "epoch" INT NOT NULL,
    "last_birth_at" TIMESTAMPTZ,
    "last_death_at" TIMESTAMPTZ,
    "last_death_reason" VARCHAR(16),
    "ended_session" BIGINT,
    "last_seen_at" TIMESTAMPTZ,
    "last_seen_ms" BIGINT,
    "health_period_s" BIGINT NOT NULL,
    "silenced_at" TIMESTAMPTZ,
    "fw" VARCHAR(64),
    "roles" JSONB NOT NULL,
    "birth" JSONB,
    "last_health" JSONB,
    "last_health_at" TIMESTAMPTZ,
    "desired_version" INT NOT NULL,
    "desired_doc" JSONB,
    "reported_version" INT,
    "reported_status" VARCHAR(16)
);
CREATE INDEX IF NOT EXISTS "idx_device_ward_ea6ee1" ON "device" ("ward");
CREATE INDEX IF NOT EXISTS "idx_device_status_b5b573" ON "device" ("status");
CREATE INDEX IF NOT EXISTS "idx_device_online_81dc1e" ON "device" ("online");
COMMENT ON COLUMN "device"."status" IS 'REGISTERED: registered\nDISCOVERED: discovered\nACTIVE: active\nDECOMMISSIONED: decommissioned\nREPLACED: replaced';
CREATE TABLE IF NOT EXISTS "device_credential" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "secret_hash" VARCHAR(200) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "revoked_at" TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS "idx_device_cred_device__99e5a8" ON "device_credential" ("device_id");
COMMENT ON TABLE "device_credential" IS 'A device''s MQTT password, as a hash. At most one is live per device.';
CREATE TABLE IF NOT EXISTS "enrollment_token" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "token_hash" VARCHAR(64) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL,
    "site" VARCHAR(120) NOT NULL,
    "ward" VARCHAR(80) NOT NULL,
    "device_id" VARCHAR(63),
    "created_by" VARCHAR(64) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "used_at" TIMESTAMPTZ,
    "used_by_device" VARCHAR(63),
    "revoked_at" TIMESTAMPTZ
);
COMMENT ON TABLE "enrollment_token" IS 'Single use, expiring, bound to a device kind and site (and optionally to one device id).';
CREATE TABLE IF NOT EXISTS "event" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "seq" BIGINT NOT NULL,
    "device_ts" BIGINT,
    "received_at" TIMESTAMPTZ NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    "event_id" VARCHAR(200) NOT NULL,
    "type" VARCHAR(64) NOT NULL,
    "phase" VARCHAR(8) NOT NULL,
    "category" VARCHAR(16) NOT NULL,
    "data" JSONB NOT NULL,
    "snapshot" JSONB,
    CONSTRAINT "uid_event_device__b05fc7" UNIQUE ("device_id", "epoch", "ses", "seq")
);
CREATE INDEX IF NOT EXISTS "idx_event_device__6e9cc0" ON "event" ("device_id", "at");
CREATE TABLE IF NOT EXISTS "health" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "seq" BIGINT NOT NULL,
    "device_ts" BIGINT,
    "received_at" TIMESTAMPTZ NOT NULL,
    "data" JSONB NOT NULL,
    CONSTRAINT "uid_health_device__c032fc" UNIQUE ("device_id", "epoch", "ses", "seq")
);
CREATE INDEX IF NOT EXISTS "idx_health_device__fa174f" ON "health" ("device_id", "received_at");
CREATE TABLE IF NOT EXISTS "rejected_message" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    "topic" VARCHAR(256) NOT NULL,
    "reason" VARCHAR(32) NOT NULL,
    "detail" VARCHAR(300) NOT NULL,
    "size" INT NOT NULL
);
COMMENT ON TABLE "rejected_message" IS 'A bounded record of recent refused messages, for ops to see what is sending garbage.';
CREATE TABLE IF NOT EXISTS "seq_gap" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "first_seq" BIGINT NOT NULL,
    "last_seq" BIGINT NOT NULL,
    "detected_at" TIMESTAMPTZ NOT NULL,
    "open" BOOL NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_seq_gap_device__3d5c69" ON "seq_gap" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_seq_gap_device__be20e5" ON "seq_gap" ("device_id", "epoch", "ses", "open");
COMMENT ON TABLE "seq_gap" IS 'Missing `seq` numbers [first, last] in a stream; shrinks as late messages fill it.';
CREATE TABLE IF NOT EXISTS "seq_stream" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "max_seq" BIGINT NOT NULL,
    "received" BIGINT NOT NULL,
    "duplicates" BIGINT NOT NULL,
    "first_at" TIMESTAMPTZ NOT NULL,
    "last_at" TIMESTAMPTZ NOT NULL,
    CONSTRAINT "uid_seq_stream_device__686048" UNIQUE ("device_id", "epoch", "ses")
);
COMMENT ON TABLE "seq_stream" IS 'The highest `seq` seen in one (device, ses) stream: what dedupe and gap detection need.';
CREATE TABLE IF NOT EXISTS "telemetry" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "seq" BIGINT NOT NULL,
    "device_ts" BIGINT,
    "received_at" TIMESTAMPTZ NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    "role" VARCHAR(32) NOT NULL,
    "readings" JSONB NOT NULL,
    CONSTRAINT "uid_telemetry_device__9e828e" UNIQUE ("device_id", "epoch", "ses", "seq")
);
CREATE INDEX IF NOT EXISTS "idx_telemetry_device__f7abd4" ON "telemetry" ("device_id", "at");
CREATE TABLE IF NOT EXISTS "app_user" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "username" VARCHAR(64) NOT NULL UNIQUE,
    "full_name" VARCHAR(120) NOT NULL,
    "password_hash" VARCHAR(200) NOT NULL,
    "role" VARCHAR(16) NOT NULL,
    "disabled" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS "api_token" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "token_hash" VARCHAR(64) NOT NULL UNIQUE,
    "kind" VARCHAR(8) NOT NULL,
    "name" VARCHAR(80) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "last_used_at" TIMESTAMPTZ,
    "revoked_at" TIMESTAMPTZ,
    "user_id" INT NOT NULL REFERENCES "app_user" ("id") ON DELETE CASCADE
);
COMMENT ON TABLE "api_token" IS 'A bearer token: a login session (kind ''session'') or a long-lived tool token (kind ''api'').';
CREATE TABLE IF NOT EXISTS "ota_release" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL,
    "version" VARCHAR(32) NOT NULL,
    "min_version" VARCHAR(32) NOT NULL,
    "floor" VARCHAR(32) NOT NULL,
    "classes" JSONB NOT NULL,
    "meta" TEXT NOT NULL,
    "sigs" JSONB NOT NULL,
    "key_ids" JSONB NOT NULL,
    "files" JSONB NOT NULL,
    "expires" BIGINT NOT NULL,
    "total_size" BIGINT NOT NULL,
    "downloads" BIGINT NOT NULL,
    "bytes_served" BIGINT NOT NULL,
    "deltas_state" VARCHAR(8) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_ota_release_kind_e3b932" ON "ota_release" ("kind");
CREATE INDEX IF NOT EXISTS "idx_ota_release_created_76c723" ON "ota_release" ("created_at");
COMMENT ON TABLE "ota_release" IS 'A published, signed release: its metadata text exactly as signed, and what was parsed from it.';
CREATE TABLE IF NOT EXISTS "ota_release_blob" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "sha256" VARCHAR(64) NOT NULL,
    "size" BIGINT NOT NULL,
    "base_sha256" VARCHAR(64),
    "base_release" VARCHAR(64),
    "release_id" INT NOT NULL REFERENCES "ota_release" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_ota_release_release_1a1be1" UNIQUE ("release_id", "sha256")
);
CREATE INDEX IF NOT EXISTS "idx_ota_release_sha256_6ed515" ON "ota_release_blob" ("sha256");
COMMENT ON TABLE "ota_release_blob" IS 'A stored file a release may serve: one of its files, or a delta to its (one) file.';
CREATE TABLE IF NOT EXISTS "ota_rollout" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "release_name" VARCHAR(64) NOT NULL,
    "target" JSONB NOT NULL,
    "total" INT NOT NULL,
    "phases" JSONB NOT NULL,
    "sizes" JSONB NOT NULL,
    "phase" INT NOT NULL,
    "phase_started_at" TIMESTAMPTZ,
    "soak_started_at" TIMESTAMPTZ,
    "judged_from" TIMESTAMPTZ,
    "status" VARCHAR(16) NOT NULL,
    "pause_reason" JSONB,
    "soak_s" DOUBLE PRECISION NOT NULL,
    "max_failure_pct" DOUBLE PRECISION NOT NULL,
    "online_within_s" INT NOT NULL,
    "offer_timeout_s" INT NOT NULL,
    "max_boots" INT NOT NULL,
    "tolerance_pct" DOUBLE PRECISION NOT NULL,
    "offers_per_min" INT NOT NULL,
    "windows" JSONB NOT NULL,
    "timezone" VARCHAR(64) NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "release_id" INT NOT NULL REFERENCES "ota_release" ("id") ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_release_49d4b4" ON "ota_rollout" ("release_name");
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_status_6d02d3" ON "ota_rollout" ("status");
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_created_817fbf" ON "ota_rollout" ("created_at");
COMMENT ON COLUMN "ota_rollout"."status" IS 'RUNNING: running\nPAUSED: paused\nABORTED: aborted\nDONE: done';
COMMENT ON TABLE "ota_rollout" IS 'One release going to a target, phase by phase.';
CREATE TABLE IF NOT EXISTS "ota_rollout_device" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "rank" INT NOT NULL,
    "phase" INT NOT NULL,
    "window" VARCHAR(200) NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "reason" VARCHAR(200),
    "pct" INT,
    "action" VARCHAR(16) NOT NULL,
    "offer_id" VARCHAR(64),
    "offer_live" BOOL NOT NULL,
    "offered_at" TIMESTAMPTZ,
    "reported_at" TIMESTAMPTZ,
    "done_at" TIMESTAMPTZ,
    "boots_before" BIGINT,
    "before" JSONB,
    "after" JSONB,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "rollout_id" INT NOT NULL REFERENCES "ota_rollout" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_ota_rollout_rollout_f576d7" UNIQUE ("rollout_id", "device_id")
);
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_device__4ab705" ON "ota_rollout_device" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_offer_l_bcf1e7" ON "ota_rollout_device" ("offer_live");
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_rollout_0cf08e" ON "ota_rollout_device" ("rollout_id", "state", "phase", "rank");
CREATE INDEX IF NOT EXISTS "idx_ota_rollout_rollout_201dae" ON "ota_rollout_device" ("rollout_id", "offered_at");
COMMENT ON COLUMN "ota_rollout_device"."state" IS 'PENDING: pending\nOFFERED: offered\nRECEIVED: received\nDOWNLOADING: downloading\nVERIFYING: verifying\nINSTALLING: installing\nREBOOTING: rebooting\nCONFIRMED: confirmed\nFAILED: failed\nROLLED_BACK: rolled_back';
COMMENT ON TABLE "ota_rollout_device" IS 'One targeted device in a rollout: its place in the order, its phase, its state.';
CREATE TABLE IF NOT EXISTS "audio_clip" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "title" VARCHAR(200) NOT NULL,
    "source" VARCHAR(8) NOT NULL,
    "source_sha256" VARCHAR(64) NOT NULL,
    "source_format" VARCHAR(32) NOT NULL,
    "source_bytes" BIGINT NOT NULL,
    "text" TEXT,
    "voice" VARCHAR(16),
    "duration_ms" INT NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "deleted_at" TIMESTAMPTZ,
    "deleted_by" VARCHAR(80)
);
CREATE INDEX IF NOT EXISTS "idx_audio_clip_source__bdaa8c" ON "audio_clip" ("source_sha256");
CREATE INDEX IF NOT EXISTS "idx_audio_clip_created_aa0b32" ON "audio_clip" ("created_at");
COMMENT ON TABLE "audio_clip" IS 'One clip of the library: an upload or a text-to-speech notice, in one variant per speaker kind.';
CREATE TABLE IF NOT EXISTS "broadcast" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "title" VARCHAR(200) NOT NULL,
    "level" VARCHAR(16) NOT NULL,
    "targets" JSONB NOT NULL,
    "start_local" VARCHAR(19) NOT NULL,
    "timezone" VARCHAR(64) NOT NULL,
    "rrule" VARCHAR(500) NOT NULL,
    "until" VARCHAR(10),
    "count" INT,
    "exceptions" JSONB NOT NULL,
    "order" INT NOT NULL,
    "ends_at" TIMESTAMPTZ,
    "status" VARCHAR(16) NOT NULL,
    "version" INT NOT NULL,
    "repeat_of" INT,
    "in_force_until" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL,
    "clip_id" INT NOT NULL REFERENCES "audio_clip" ("id") ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_ends_at_29f29a" ON "broadcast" ("ends_at");
CREATE INDEX IF NOT EXISTS "idx_broadcast_status_0a5d47" ON "broadcast" ("status");
COMMENT ON COLUMN "broadcast"."level" IS 'NORMAL: normal\nPRIORITY: priority\nEMERGENCY: emergency';
COMMENT ON COLUMN "broadcast"."status" IS 'ACTIVE: active\nCANCELLED: cancelled';
COMMENT ON TABLE "broadcast" IS 'A broadcast''s current version; every version''s definition is also in BroadcastVersion.';
CREATE TABLE IF NOT EXISTS "broadcast_receipt" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(64) NOT NULL,
    "entry_id" VARCHAR(32) NOT NULL,
    "occurrence_at" TIMESTAMPTZ NOT NULL,
    "version" INT NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "reason" VARCHAR(200),
    "emergency" BOOL NOT NULL,
    "delivered_at" TIMESTAMPTZ,
    "clip_ready_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ,
    "ended_at" TIMESTAMPTZ,
    "device_started_ms" BIGINT,
    "offset_ms" INT,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "broadcast_id" INT NOT NULL REFERENCES "broadcast" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_broadcast_r_entry_i_51a34e" UNIQUE ("entry_id", "device_id")
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_r_device__389277" ON "broadcast_receipt" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_broadcast_r_occurre_0a96de" ON "broadcast_receipt" ("occurrence_at");
CREATE INDEX IF NOT EXISTS "idx_broadcast_r_state_267141" ON "broadcast_receipt" ("state");
COMMENT ON COLUMN "broadcast_receipt"."state" IS 'PENDING: pending\nDELIVERED: delivered\nCLIP_READY: clip_ready\nSTARTED: started\nCOMPLETED: completed\nFAILED: failed\nMISSED: missed\nNOT_DELIVERED: not_delivered\nSKIPPED: skipped';
COMMENT ON TABLE "broadcast_receipt" IS 'One speaker, one occurrence of a broadcast: what happened to it there.';
CREATE TABLE IF NOT EXISTS "broadcast_version" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" INT NOT NULL,
    "definition" JSONB NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "broadcast_id" INT NOT NULL REFERENCES "broadcast" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_broadcast_v_broadca_ba4a44" UNIQUE ("broadcast_id", "version")
);
CREATE TABLE IF NOT EXISTS "audio_clip_file" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "kind" VARCHAR(16) NOT NULL,
    "sha256" VARCHAR(64) NOT NULL,
    "bytes" BIGINT NOT NULL,
    "sample_rate" INT NOT NULL,
    "duration_ms" INT NOT NULL,
    "loudness_lufs" DOUBLE PRECISION NOT NULL,
    "true_peak_dbtp" DOUBLE PRECISION NOT NULL,
    "clip_id" INT NOT NULL REFERENCES "audio_clip" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_audio_clip__clip_id_bb9fbc" UNIQUE ("clip_id", "kind")
);
CREATE INDEX IF NOT EXISTS "idx_audio_clip__sha256_3433fa" ON "audio_clip_file" ("sha256");
COMMENT ON TABLE "audio_clip_file" IS 'A clip''s variant for one speaker kind: the bytes a speaker downloads, by SHA-256.';
CREATE TABLE IF NOT EXISTS "broadcast_device_clock" (
    "device_id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "offset_ms" INT,
    "samples" JSONB NOT NULL,
    "flagged" BOOL NOT NULL,
    "set_time_at" TIMESTAMPTZ,
    "set_time_skew_ms" INT,
    "updated_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE "broadcast_device_clock" IS 'A speaker''s clock offset from the fleet''s, estimated from its messages'' `ts`.';
CREATE TABLE IF NOT EXISTS "broadcast_emergency_dispatch" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(64) NOT NULL,
    "command_id" VARCHAR(64),
    "state" VARCHAR(16) NOT NULL,
    "expires_at" TIMESTAMPTZ,
    "sent_at" TIMESTAMPTZ,
    "acked_at" TIMESTAMPTZ,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "broadcast_id" INT NOT NULL REFERENCES "broadcast" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_broadcast_e_broadca_4e20cb" UNIQUE ("broadcast_id", "device_id")
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_e_device__0e86b1" ON "broadcast_emergency_dispatch" ("device_id");
COMMENT ON TABLE "broadcast_emergency_dispatch" IS 'An emergency''s immediate command to one speaker. The document builder leaves the emergency''s';
CREATE TABLE IF NOT EXISTS "broadcast_speaker_clip" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(64) NOT NULL,
    "name" VARCHAR(32) NOT NULL,
    "sha256" VARCHAR(64) NOT NULL,
    "bytes" BIGINT NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "command_id" VARCHAR(64),
    "attempts" INT NOT NULL,
    "next_try_at" TIMESTAMPTZ,
    "reason" VARCHAR(200),
    "updated_at" TIMESTAMPTZ NOT NULL,
    CONSTRAINT "uid_broadcast_s_device__023069" UNIQUE ("device_id", "name")
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_s_device__3469b1" ON "broadcast_speaker_clip" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_broadcast_s_next_tr_22d114" ON "broadcast_speaker_clip" ("next_try_at");
COMMENT ON TABLE "broadcast_speaker_clip" IS 'A clip a speaker has been asked to hold (speaker.clip_fetch) and what it answered.';
CREATE TABLE IF NOT EXISTS "broadcast_speaker_delivery" (
    "device_id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "doc" JSONB,
    "doc_sha256" VARCHAR(64) NOT NULL,
    "sent_version" INT,
    "sent_at" TIMESTAMPTZ,
    "applied_version" INT,
    "unsent" BOOL NOT NULL,
    "due_at" TIMESTAMPTZ,
    "reason" VARCHAR(64) NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_s_due_at_215f2d" ON "broadcast_speaker_delivery" ("due_at");
COMMENT ON TABLE "broadcast_speaker_delivery" IS 'One per speaker: the `speaker` document computed for it and where it stands on the device.';
CREATE TABLE IF NOT EXISTS "broadcast_quiet_hours" (
    "ward" VARCHAR(80) NOT NULL PRIMARY KEY,
    "start" VARCHAR(5) NOT NULL,
    "end" VARCHAR(5) NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
COMMENT ON TABLE "broadcast_quiet_hours" IS 'A ward''s quiet hours: normal broadcasts that start inside them do not play there.';
CREATE TABLE IF NOT EXISTS "broadcast_ward_volume" (
    "ward" VARCHAR(80) NOT NULL PRIMARY KEY,
    "steps" JSONB NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
COMMENT ON TABLE "broadcast_ward_volume" IS 'A ward''s speaker volume by time of day: [{\"from\": \"HH:MM\", \"volume\": 0..100}, …], the entry';
CREATE TABLE IF NOT EXISTS "broadcast_cap_alert" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "identifier" VARCHAR(200) NOT NULL,
    "sender" VARCHAR(200) NOT NULL,
    "sent" TIMESTAMPTZ NOT NULL,
    "msg_type" VARCHAR(8) NOT NULL,
    "status" VARCHAR(8) NOT NULL,
    "document" BYTEA NOT NULL,
    "draft" JSONB NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "reason" VARCHAR(200),
    "broadcast_id" INT,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(80) NOT NULL,
    "decided_at" TIMESTAMPTZ,
    "decided_by" VARCHAR(80),
    CONSTRAINT "uid_broadcast_c_sender_2ab0dc" UNIQUE ("sender", "identifier")
);
CREATE INDEX IF NOT EXISTS "idx_broadcast_c_state_bbf960" ON "broadcast_cap_alert" ("state");
CREATE INDEX IF NOT EXISTS "idx_broadcast_c_broadca_43b987" ON "broadcast_cap_alert" ("broadcast_id");
COMMENT ON COLUMN "broadcast_cap_alert"."state" IS 'DRAFT: draft\nCONFIRMED: confirmed\nCANCELLED: cancelled\nREFUSED: refused';
CREATE TABLE IF NOT EXISTS "ops_alert_rule" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(80) NOT NULL UNIQUE,
    "kind" VARCHAR(32) NOT NULL,
    "device_kind" VARCHAR(16),
    "role" VARCHAR(32),
    "ward" VARCHAR(80),
    "severity" VARCHAR(8) NOT NULL,
    "params" JSONB NOT NULL,
    "enabled" BOOL NOT NULL,
    "channels" JSONB NOT NULL,
    "builtin" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
COMMENT ON COLUMN "ops_alert_rule"."severity" IS 'CRITICAL: critical\nMAJOR: major\nMINOR: minor\nWARNING: warning';
COMMENT ON TABLE "ops_alert_rule" IS 'A rule as data: what it watches (`kind`, fleet/ops/rules.py), on which devices (`device_kind`,';
CREATE TABLE IF NOT EXISTS "ops_alert" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "kind" VARCHAR(32) NOT NULL,
    "device_id" VARCHAR(63) NOT NULL,
    "device_kind" VARCHAR(16),
    "ward" VARCHAR(80) NOT NULL,
    "severity" VARCHAR(8) NOT NULL,
    "state" VARCHAR(12) NOT NULL,
    "live_key" VARCHAR(100) UNIQUE,
    "summary" VARCHAR(300) NOT NULL,
    "value" JSONB,
    "raised_at" TIMESTAMPTZ NOT NULL,
    "last_true_at" TIMESTAMPTZ NOT NULL,
    "acknowledged_at" TIMESTAMPTZ,
    "acknowledged_by" VARCHAR(80),
    "silenced_until" TIMESTAMPTZ,
    "silenced_by" VARCHAR(80),
    "resolved_at" TIMESTAMPTZ,
    "resolved_by" VARCHAR(80),
    "count" INT NOT NULL,
    "rule_id" INT NOT NULL REFERENCES "ops_alert_rule" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_ops_alert_device__2df182" ON "ops_alert" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_ward_108962" ON "ops_alert" ("ward");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_state_0df701" ON "ops_alert" ("state");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_raised__d1d08f" ON "ops_alert" ("raised_at");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_silence_894532" ON "ops_alert" ("silenced_until");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_state_3eeefd" ON "ops_alert" ("state", "severity");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_ward_fa2b91" ON "ops_alert" ("ward", "state");
COMMENT ON COLUMN "ops_alert"."severity" IS 'CRITICAL: critical\nMAJOR: major\nMINOR: minor\nWARNING: warning';
COMMENT ON COLUMN "ops_alert"."state" IS 'OPEN: open\nACKNOWLEDGED: acknowledged\nRESOLVED: resolved';
COMMENT ON TABLE "ops_alert" IS 'One rule firing on one device, from raised to resolved. At most one not resolved per';
CREATE TABLE IF NOT EXISTS "ops_alert_event" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    "action" VARCHAR(16) NOT NULL,
    "actor" VARCHAR(80) NOT NULL,
    "detail" JSONB,
    "notify" VARCHAR(8) NOT NULL,
    "alert_id" BIGINT NOT NULL REFERENCES "ops_alert" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_ops_alert_e_at_b18ff5" ON "ops_alert_event" ("at");
CREATE INDEX IF NOT EXISTS "idx_ops_alert_e_notify_28ca33" ON "ops_alert_event" ("notify");
COMMENT ON TABLE "ops_alert_event" IS 'The history of an alert: raised, acknowledged, silenced, unsilenced, resolved, reopened.';
CREATE TABLE IF NOT EXISTS "ops_health_hourly" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "hour" TIMESTAMPTZ NOT NULL,
    "figures" JSONB NOT NULL,
    "messages" INT NOT NULL,
    CONSTRAINT "uid_ops_health__device__386f15" UNIQUE ("device_id", "hour")
);
CREATE INDEX IF NOT EXISTS "idx_ops_health__hour_573364" ON "ops_health_hourly" ("hour");
COMMENT ON TABLE "ops_health_hourly" IS 'A device''s health figures over one hour: per numeric field its min, max, mean and count.';
CREATE TABLE IF NOT EXISTS "ops_notification_channel" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "kind" VARCHAR(8) NOT NULL,
    "target" JSONB NOT NULL,
    "secret" VARCHAR(200),
    "min_severity" VARCHAR(8) NOT NULL,
    "rate_per_hour" INT NOT NULL,
    "enabled" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
COMMENT ON COLUMN "ops_notification_channel"."min_severity" IS 'CRITICAL: critical\nMAJOR: major\nMINOR: minor\nWARNING: warning';
COMMENT ON TABLE "ops_notification_channel" IS 'Where alerts go: a signed webhook or e-mail over SMTP, with its own rate limit and digest.';
CREATE TABLE IF NOT EXISTS "ops_notification" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "event_ids" JSONB NOT NULL,
    "digest" BOOL NOT NULL,
    "state" VARCHAR(8) NOT NULL,
    "attempts" INT NOT NULL,
    "next_try_at" TIMESTAMPTZ,
    "created_at" TIMESTAMPTZ NOT NULL,
    "sent_at" TIMESTAMPTZ,
    "last_error" VARCHAR(300),
    "channel_id" INT NOT NULL REFERENCES "ops_notification_channel" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_ops_notific_state_c9fe63" ON "ops_notification" ("state");
CREATE INDEX IF NOT EXISTS "idx_ops_notific_next_tr_66e320" ON "ops_notification" ("next_try_at");
COMMENT ON TABLE "ops_notification" IS 'The outbox: one message to one channel (one alert change, or a digest of many).';
CREATE TABLE IF NOT EXISTS "ops_presence_change" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    "online" BOOL NOT NULL,
    "reason" VARCHAR(32)
);
CREATE INDEX IF NOT EXISTS "idx_ops_presenc_device__dcf834" ON "ops_presence_change" ("device_id", "at");
CREATE INDEX IF NOT EXISTS "idx_ops_presenc_at_92e1a6" ON "ops_presence_change" ("at");
COMMENT ON TABLE "ops_presence_change" IS 'One change of a device''s presence as the fleet recorded it: for flapping and history.';
CREATE TABLE IF NOT EXISTS "ops_telemetry_hourly" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "role" VARCHAR(32) NOT NULL,
    "hour" TIMESTAMPTZ NOT NULL,
    "figures" JSONB NOT NULL,
    "messages" INT NOT NULL,
    CONSTRAINT "uid_ops_telemet_device__7043e1" UNIQUE ("device_id", "role", "hour")
);
CREATE INDEX IF NOT EXISTS "idx_ops_telemet_hour_50424f" ON "ops_telemetry_hourly" ("hour");
COMMENT ON TABLE "ops_telemetry_hourly" IS 'A device role''s telemetry over one hour: per reading its min, max, mean and count.';
CREATE TABLE IF NOT EXISTS "relay_endpoint" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "kind" VARCHAR(7) NOT NULL,
    "url" VARCHAR(500) NOT NULL,
    "topic" VARCHAR(200) NOT NULL,
    "username" VARCHAR(120),
    "password" VARCHAR(200),
    "ca_pem" TEXT,
    "secret" VARCHAR(200) NOT NULL,
    "previous_secret" VARCHAR(200),
    "previous_until" TIMESTAMPTZ,
    "enabled" BOOL NOT NULL,
    "disabled_reason" VARCHAR(300),
    "disabled_at" TIMESTAMPTZ,
    "timeout_s" DOUBLE PRECISION NOT NULL,
    "retry_base_s" DOUBLE PRECISION NOT NULL,
    "retry_max_s" DOUBLE PRECISION NOT NULL,
    "max_attempts" INT NOT NULL,
    "gone_limit" INT NOT NULL,
    "failure_budget" INT NOT NULL,
    "failure_window_s" DOUBLE PRECISION NOT NULL,
    "max_in_flight" INT NOT NULL,
    "snapshot_wait_s" DOUBLE PRECISION NOT NULL,
    "consecutive_failures" INT NOT NULL,
    "consecutive_gone" INT NOT NULL,
    "failing_since" TIMESTAMPTZ,
    "last_success_at" TIMESTAMPTZ,
    "last_failure_at" TIMESTAMPTZ,
    "last_error" VARCHAR(300),
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
COMMENT ON COLUMN "relay_endpoint"."kind" IS 'WEBHOOK: webhook\nMQTT: mqtt';
COMMENT ON TABLE "relay_endpoint" IS 'Where relayed events go: a webhook URL or a topic on another MQTT broker, with its retry';
CREATE TABLE IF NOT EXISTS "relay_delivery" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "device_id" VARCHAR(63) NOT NULL,
    "message_id" VARCHAR(40) NOT NULL,
    "payload" JSONB NOT NULL,
    "snapshot_sha256" VARCHAR(64),
    "status" VARCHAR(9) NOT NULL,
    "attempts" INT NOT NULL,
    "next_at" TIMESTAMPTZ NOT NULL,
    "claim" VARCHAR(32),
    "created_at" TIMESTAMPTZ NOT NULL,
    "last_attempt_at" TIMESTAMPTZ,
    "last_status" INT,
    "last_error" VARCHAR(300),
    "done_at" TIMESTAMPTZ,
    "endpoint_id" INT NOT NULL REFERENCES "relay_endpoint" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_relay_deliv_endpoin_083081" UNIQUE ("endpoint_id", "message_id")
);
CREATE INDEX IF NOT EXISTS "idx_relay_deliv_endpoin_798c5a" ON "relay_delivery" ("endpoint_id", "status", "device_id", "id");
CREATE INDEX IF NOT EXISTS "idx_relay_deliv_status_1a5884" ON "relay_delivery" ("status", "next_at");
CREATE INDEX IF NOT EXISTS "idx_relay_deliv_done_at_0acc3b" ON "relay_delivery" ("done_at");
COMMENT ON COLUMN "relay_delivery"."status" IS 'PENDING: pending\nDELIVERED: delivered\nDEAD: dead';
COMMENT ON TABLE "relay_delivery" IS 'The outbox: one event message to one endpoint, made in the ingest''s transaction.';
CREATE TABLE IF NOT EXISTS "relay_route" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "enabled" BOOL NOT NULL,
    "types" JSONB NOT NULL,
    "phases" JSONB NOT NULL,
    "categories" JSONB NOT NULL,
    "wards" JSONB NOT NULL,
    "device_kinds" JSONB NOT NULL,
    "tags" JSONB NOT NULL,
    "devices" JSONB NOT NULL,
    "min_severity" VARCHAR(16),
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL,
    "endpoint_id" INT NOT NULL REFERENCES "relay_endpoint" ("id") ON DELETE CASCADE
);
COMMENT ON TABLE "relay_route" IS 'Which events go to an endpoint: each list is \"any of\", empty is no condition.';
CREATE TABLE IF NOT EXISTS "relay_snapshot" (
    "sha256" VARCHAR(64) NOT NULL PRIMARY KEY,
    "bytes" INT NOT NULL,
    "type" VARCHAR(32) NOT NULL,
    "device_id" VARCHAR(63) NOT NULL,
    "received_at" TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_relay_snaps_device__cd60e1" ON "relay_snapshot" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_relay_snaps_receive_23dec1" ON "relay_snapshot" ("received_at");
COMMENT ON TABLE "relay_snapshot" IS 'One image a device uploaded, stored once by its SHA-256 (docs/relay.md, \"Snapshots\").';
CREATE TABLE IF NOT EXISTS "child_change" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "parent_id" VARCHAR(63) NOT NULL,
    "child_id" VARCHAR(63) NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    "what" VARCHAR(16) NOT NULL,
    "detail" VARCHAR(32)
);
CREATE INDEX IF NOT EXISTS "idx_child_chang_parent__a60538" ON "child_change" ("parent_id", "child_id", "at");
COMMENT ON TABLE "child_change" IS 'A child''s birth, death or change of health state, as the fleet applied it.';
CREATE TABLE IF NOT EXISTS "child_device" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "parent_id" VARCHAR(63) NOT NULL,
    "child_id" VARCHAR(63) NOT NULL,
    "kind" VARCHAR(32),
    "fw" VARCHAR(64),
    "hw" VARCHAR(200),
    "present" BOOL,
    "state" VARCHAR(32),
    "state_since" TIMESTAMPTZ,
    "last_health" JSONB,
    "last_health_at" TIMESTAMPTZ,
    "last_birth_at" TIMESTAMPTZ,
    "last_death_at" TIMESTAMPTZ,
    "last_death_reason" VARCHAR(32),
    "first_seen_at" TIMESTAMPTZ NOT NULL,
    "last_seen_at" TIMESTAMPTZ NOT NULL,
    "epoch" INT NOT NULL,
    "ses" BIGINT NOT NULL,
    "seq" BIGINT NOT NULL,
    CONSTRAINT "uid_child_devic_parent__31a1ff" UNIQUE ("parent_id", "child_id")
);
CREATE TABLE IF NOT EXISTS "asset" (
    "id" VARCHAR(63) NOT NULL PRIMARY KEY,
    "kind" VARCHAR(12) NOT NULL,
    "name" VARCHAR(120) NOT NULL,
    "ward" VARCHAR(80) NOT NULL,
    "address" VARCHAR(200) NOT NULL,
    "latitude" DOUBLE PRECISION,
    "longitude" DOUBLE PRECISION,
    "attributes" JSONB NOT NULL,
    "device_id" VARCHAR(63) UNIQUE,
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "updated_by" VARCHAR(80) NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_asset_ward_f748e7" ON "asset" ("ward");
COMMENT ON COLUMN "asset"."kind" IS 'POLE: pole\nCABINET: cabinet\nSPEAKER_MAST: speaker_mast\nINTERSECTION: intersection\nOTHER: other';
COMMENT ON TABLE "asset" IS 'A place the city keeps a device at: its history, programs, alerts and reports follow it';
CREATE TABLE IF NOT EXISTS "asset_fitting" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "asset_id" VARCHAR(63) NOT NULL,
    "device_id" VARCHAR(63) NOT NULL,
    "fitted_at" TIMESTAMPTZ NOT NULL,
    "removed_at" TIMESTAMPTZ,
    "reason" VARCHAR(32) NOT NULL,
    "by" VARCHAR(80) NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_asset_fitti_asset_i_d35c00" ON "asset_fitting" ("asset_id");
CREATE INDEX IF NOT EXISTS "idx_asset_fitti_device__cd5a31" ON "asset_fitting" ("device_id");
CREATE INDEX IF NOT EXISTS "idx_asset_fitti_asset_i_163f9c" ON "asset_fitting" ("asset_id", "fitted_at");
COMMENT ON TABLE "asset_fitting" IS 'One device''s time on one asset: from fitted to removed (null while it is there).';
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return r"""
        """


MODELS_STATE = (
    "eJztXetz2za2/1cw+pJkRk1iJ05Tbaczsq00uvUjKzvp9lYdmRIhC2sKVPiwot3b//0C4J"
    "sEKYIiaZLBh906JA5J/Q4e533+21vrKtTMl8MNutUfIO4NwH97WFlD8kfiXh/0lM0muEMv"
    "WMpcY4OVDZpZ/rC5aRnKwiI3lopmQnJJhebCQBsL6fQlvSGYQ8WABmA0A6AATb9HGJjQNM"
    "kQ8PwBYRU8c//57AXQDTYG3/+goUeoEjpdc4i9seQLnr14SV+v6gvyfoTvK3+TjdFXG5If"
    "fg+tFTTI+/78i1wmo+A3aHr/3DzMlghqagRdpNIHsOsza7dh18bY+sAG0h8xny10zV7jYP"
    "BmZ6107I9G2KJX7yGGhmJB+njLsCnY2NY0lzEe/s6XBkOcTwzRqHCp2BplGaV2PiC41pvN"
    "rq5vZzej29msl2CnRxHC3b200DGdCuRTTfbr7+kn/HB89PbHt+/fvHv7ngxhn+lf+fFv59"
    "UBMA4hg+fqtvc3u69YijOCYRyAytg0WynmKgnu2Uox+OhGqWIok8+Po+xh2lyY18q3mQbx"
    "vbUi/3z3NgPTL8PJ2cfh5Pm7ty/oC3WybJ0FfeXeOWa3KOwBzHQZiADsjS8HWu9CgG2wyd"
    "QO7vsc2L5PhfZ9HFn2XwFkvfH1Idvr1YPr6zzAvk5H9nUc2oUBKRQzxUoCfE7uWGgN+SBH"
    "KWNQqy7pS++PNk5p8gPVa6zt3H0qA/rb8eXo5nZ4+Ym+bm2aXzWG3/B2RO8cs6u72NXn72"
    "Js8h8Cfh/ffgT0n+B/r69GDF7dtO4N9sZg3O3/9ug3Kbalz7C+nSlqaEv1rnqoRbgOv20Q"
    "eVoBrkcpO8j1lnDZwySTzZpiWjPbLLS847QlsNqdmZLT5XPagI9EXCvC5yil5HKTuUyWoz"
    "ETUpFCFPv1pBbszmWoSlT5XD5wNSUKVxLdD7oB0T3+De4YyGPyRQpe8CRM1zjw2X1My8D9"
    "25s93tVgNRvK1tfWw5OK/Hbyi6HlCOTDm7Ph+ajHEJ4ri4etYqizCNT0jn6sx674Y5O31s"
    "fr+BUFK/cMHPor6Dd7JhlbRdYIW8auxzPYBHf7mSYbOi6XuSYd15INIKfo/nuxgfx0fPzm"
    "zY/Hr9+8e3/y9scfT96/9ld48lbWUj8d/0pXe2Sr3m8pET8+65SDa+VHd5UfsqZ1zi6fbk"
    "7wCbpoqSndokDQol8khq9L0UGAy7czWopBzhUhU65P0TmL2PHrPBOYjEoFmN2LIqxCS0Fa"
    "EuH/ubm+4iMcUMSPArSwwP8BDZl5xO326E4Uish+7wH6/HL4rzjWZxfXp/GNnD7gNIa7qd"
    "vGQsjSG1B0bmaXs3EklJ2nkc3P9DW5FxV1Y7cypfJFaFBj5PL0acmVyqXPzDvL0gVwFT6i"
    "BeTaONLRjhBVtQ88Iepv8qD+Jh31N+3zp7VuSofkX+PeFBEdvPEHCQ5NA7luyUG6MdPne3"
    "c1ec8ZueYsuCyjWZSuS4bxWuxnIYHdUiybA36GwO5T1Ciwm9DhafXHydG7HMfJUXzJBMcJ"
    "vSV10SacKAo2t9AodKTESKVPtWk+1YYoxedMb+lxdGL3Tj9LJVaDMVIjbrtulq4R1xpV2r"
    "B9puqztfl6cE22xqPjPFZ0Miod3OOEFZ1ukCLoeuNrs+C0NmjXRJaYldwdL+dtnnlrKWIG"
    "HG98/Qac3s9LGzPnKZjbSLMQNl/S9/1SFfp1C+GaYiHLVjmT/YOmKynafZgoxpMlpWrfOZ"
    "gB+/n159OLEfg0GZ2Nb8YuC3wBm92kl8gF5ARpTUbDizjKOr4vAHOYSuKcA+csa8kI2+tE"
    "dGHNlpPkAWnAe7KdUF1WcEchP//X8c3taDI6H4DgKVN8Pr45u/7iXFeRudAfnevDs9vxl9"
    "EA0FiQR0jGjc6uLy/HNxRrNhZSFyBi6Yh0/GT06WJ45jx9oykL9wtFz4881v+jdOv/UcL6"
    "Lw3R6dB31xBtb9SCXI9SSq43hesc25H79QHXdawhzDk0T3VdgwrmMzwgijF7Tqgq2sd9ht"
    "d7Zp5eX19EWHk6jnkUrj5fno7IDvsienZyHA1OIrqYmydEVMjH0zDp5GlcPHCjLzh54+m+"
    "NW98fW6119UCfmBefiwdb44Ma1U0Hy9MLN0KzTkakhIBY5dKJLrCvA4TS163hNdE2DHFgt"
    "+5xNJ4v994D8nPUmeFBIMEqRQPiooHbPqaEOKi21yIVu5yjd/lGLdEw63ilHK1FV1tK6ho"
    "5KDYQAPpZAMTYwOHuD4Z/V3FQnrdgW+InGyLQhafGKnc9Jq86S23IrKcM7p7wlv5QfKGrk"
    "EhJ6tPIL2skbVThpeVWRVEmOETyADTQ3zbRCpyzmQR7GNkkgOlcKCo9hKhlkd5k49yAgGi"
    "QdmP0OBbDFIFZw6lNG7HJWIPJPJmke0sRia3s+LbmQE3umEVmuE80g5p6aVNch8n8cQnDm"
    "n3FIVyrLyNSs84I7sTxBZStF5qokZoTH9/ysZsER2eoyy8Q/jMBJf/vL0FG8U0t7qh9oFi"
    "AgXQEt0vwdACa7JBAB1DgExAq7SDDTRcUl4F+HIeKou9N6vYu6ygkNyWyq+gYEKyiC3hmv"
    "oxsg7WU6ikHpMMqkxHv53hdXmCKj3ezXciSyxK1cEVVn46kSwe3VX7R0Mk6RE2dE1bE5k3"
    "tZ9SfEimHA39wSLdlW4IpzUIbHqPVQAh/+6DuW5j2s6IyLyOFARYOyOF/I+mzYHn9C+dPU"
    "TRtB0dSaVhdyxSOc2VqnyRFLebJW7L3kq1+Atlb6UKI+man05cH7jfQyI8x8Xda6no+kTW"
    "joaJqVVbO6QmVtMxJw0d6dB319Ahu7Glcr0lXM4VgFCwEZvswdYm/s53s6AwW96TMkkppZ"
    "L9Uok0W3Z1VTXFbPkIsTWBC92IGtI4t/uZ5spHt/5suYUa/4wqMn7itekESpvwa++vmG0w"
    "RkLm/19C5kLZiYzeq6MTWXPd+J06Q2R1g9Ji40xeQsee8hz1ItmRTSMM+VdRyL9KyA+C3N"
    "1iLcG5HiHrUGRtzegbcAHRY0GZP0IqbSWNk/oj1fcb3YhVsrUgW5kmJCjUhmk6KNNWEjDJ"
    "ABLA2BvfQXzLd9JsVoophK5P0EF43+fx6KY7dBMOMILDvW6I+RlDNB1EuIKWQoqlJAHOyN"
    "Fzx8sOdYf0tsXKxlzpHLkmHfgwjcyMFMO+ITbkjyxBPN2IHLnfz7IiBzn/TTMjh1UraU+W"
    "9uQG7/rSniztya2Yp9Ke/H1ALu3J0p7c0AXRJcOjVHm/L7VrAv8NF4Qxl9A0Fba1JDSv+J"
    "B+lvJluINn69DoHIU7WNIfVIHBFDygL+lfEFvkP0sa9Qfc55l9sNQNoG9MmvdnQgi2K8Wi"
    "NTdMiFXCVHCvGHMykFfIo5qXlJxpKFW9ulQ96Tvr5BFm6RvEKa2WlWTqEnRQcz8+yWMVJ6"
    "PSvWYnCbu4ePOGAzs2NBvjN8c5IH5znIowvRVXdiwFaWIWKI+iiwDncv2+yXD9vkm6fk30"
    "H45zMl2Dd4d3SYU/yATVEAH2Bn79Vdnw5Fb3Tqa4asKvs3t30F4p9ZJ21STC3x2huiPfsZ"
    "5DwwR/LpFhWn1Ay9z+BRAGCiAPgsr6H8BcES48mLRQnEYmhy9egiXSNICspIxazSv2S6h7"
    "fBv6BmLpsWioGNtcj0WXCtlJh4V0WLRtzwi156AHyEzYbREhk/AXht9t7CSIfphKgn+A58"
    "hyTJLi9p4YqTT8NNrww6TU5ArLbDLtklTWYjrJTE8oalWL6eYoezdM8enx9T33Zn+fymcG"
    "4/ZqfbcrCFbofgVNy1XLaIc+qoXRqoPPHUG6Ty6aL1ytbOC4C1So2hvI6hYSFRM4ewltjo"
    "QhVJOqX4XvEQxmi0exSb1P6n3NPcGk4icVv1bM0ycRfuniEFY8QkQS+oNjpsSwD1N1Zgep"
    "W+OzNxqi2U6iwYIROon+IbYmcWU7TCc17UZr2swyVbATpGRwQxncEB3/FmpwDS1jl54LFh"
    "/Sz9L3LW9wLnW/5owwmQgm1etm72pSvZbqdSvmqUwE+z4gl4lgTTBqyESwDmoAsrBY59lq"
    "6JpQSSZvfAdl2fLD9mnnDfJ+zsmUnkAZppFJlO1MovxsMntAwk7BrvezjBPkzsz2RpVqmz"
    "jEh/+9WBgqa3ZIWcr+FthpwzSy0WHcbpAoLrgkb52JYhwh6lzXuEp68m0U09zqZIcUbd2Z"
    "IOygCFFJTVIpolVZ0hGZ9JfzLOtZcaJhshpjRf0rrQoWlY368k31bjXqE5DFY12heZY8l+"
    "7DbxOoKQzZ5CRwpezhBvmt0Fs2Bf72Jr131ZsK1ZZ8IfucCXvcUi/OrX6WzqITodcIDcxR"
    "3WVjz4kWu4JqH5joHrMSLOwBA4AsE6yhpVBZGljwmwXgN/I0bUdTWp3BfRbbzGKdt+TiRj"
    "ForZaloa+5ObTVv06qW81St0TVAKlmpchLze8n/3TYli+LPkLDRGJ1VEIkHRT3y7fIrhGe"
    "FYA5RiahzgH1UtN1Q8gY4xFIeHPAu9AUkxvgke5aCJHU71no/by0sZOHNreRZiFsvqTv+6"
    "UqW1gd/obI1gJ5lTJviUiZsqdAbqXMds72LF119K/bbLB9VfXi+upXb3icA/FiTWJeNW+8"
    "nPelz/sHuJshVYgbIRLJkNIZskSa2LngE0hmlM4M+G2DDNE4zBCRDAwsHJpm6Zaizfhl/b"
    "LQj9JJBhSPzNS3WNMV3tmQGZkZJutMVHfN2M93FjRnJjSEE07jlJIDReOSNUshQFoEJRE1"
    "OE5XY1gC1jGs6uCttvthq7yKtdosu+VU5DF9Ltb0MkLVCeU7trTyhKC8T49Aec8CUAp5b+"
    "eaPj/Qeet6HE/Jk1rIiVT/bSyeR9Ntbr6KCFDOU7oEUg1Objav0h3d3rTL5eyezb3ROTze"
    "pqUb1GtMVG2geO5nsFZ2gElaA1bUS18yfzTTx/tAN8hIJg3QriP0xnMy6AW7zfNyl/2KKZ"
    "5iWoSMPRc8QLgxyWj6o8F2xV6Cd8DQt4BiaTJqc6Ucn7z7h//Q4K5FHsS+DFlgo1iLFTSn"
    "+PndnOLoUN29YH52OtD7dov63BnVgjyEudzT65eFQhCcBx5Wt0w64Q90wrtMEDiaA4rueY"
    "vL98SLGzakSeNwtTrYr0Rmdoys0PRuWrppxdObQRba04WgDtFJrPdj7Qk0QudglKhLe0q5"
    "bVASMCcx/kAELHSPf4M7BvWYfJSCF7zpm4zLbBnEacI/uWwoW182i80uggD53dAJKj8b3p"
    "wNz0e9v58muc9TvHhaRKCT7dEgQgP3Kg/XOJCI73XaDYbI6kRgVwwi/vbBZkVvzHfOH0nF"
    "QJxchrM2S5L21oJoWGucTkrV+49CZ1mIeM8DCpmufYCjnHldBTYPf7yUPDh6CtvMhYJAAg"
    "o5jQ+YxlTHFoxM+4+E/WDY2ewV2D388Z3xbpe7dVD3s1HMo8qjL8Gv2jCVvCV+VA+TTEeq"
    "qSsPBzCcQy753WR+/9tWiWY7o+4UUV7HSCWfm8xnGkJkc4QRqjGOsL1OGJuiy9qnrk1v7B"
    "k2xpQ7YsztTT5fXY2vfh0Al36KPw0/34zOB2Cj2CZUp3h4ej25pReUuU73qSk+J6APgOpF"
    "PD158h/70llaJ/UMuT1Gd5AY2Z7FWI3wzk4yjn1W05U0n5pPEgN+SWm6JbmfX38+vRiBT5"
    "PR2fhm7OLv73jsJr0UlP+YjIYXnP4zSwVptgFnmwVH1sjAmkMrQc8Duo41hOFsi6wVwrwJ"
    "nqoncSilvYWjNOnLJTRmVOTRbUsM4SSlRDilcdVc13lhc5l9q3waiSo3R0YjP5+If8KbcY"
    "JSbsW5tmK63M3Zhqz5NeIIetn7RIRQTmjOhN6S36FvhSywIZJmJEDS13YmAZKebP9xtay8"
    "jsswTY3pL0MTKa8+6rOzFZpdIryqigVV+zBlYkSFiREy7SgX8t1NO7I3akGmRyllBcumcJ"
    "1jTE0k7SwRZhUEC/WxjJBKm3lz2Jxc3TIUVobC1rtsDgmFnZD5Phmf3WbFwsY7ZZWTd3jO"
    "ntUh1KvNPoyAlh45HKCaK354pgbjc4URO7GKUAUOIUCYZgo6D3Nq4W40xblO8/B0Q4VG37"
    "lOozqcP1llAn6cccnP5+f5BbHTQXfNZFvV0LCglIIX9WMo+KFHSCLDmIXFOaZlD1bZg7XB"
    "ylXFLVjZ6hCQftzhUu5Ji6YTAPMJAhNbhKZjqhVZ/AFF59r7VNJsJqNcUb6QobqNthuI1Q"
    "IhQ59GV+csZMiln+LrDx9GExoi5MoBUzwZnY3GX+glr1UpDRv6/erieujQepXKGP2X0WT8"
    "4Q92/REaaLljV8dXRCO9uGCXEcVN09j1yej0+vrWCVqC1EfJrp5dX30YTy7pKwnrl8hY03"
    "d+GI4v6CUa+8C+6/qC/Ht2Ojz7bcCkK2q1JXJqXCR7mkCmtBCmrDyllOClDiTrVrJIub7a"
    "9COF659tc4/j0s4TZeEpu3nnakBR4x7nbhz1HCvl7whOiIuY0B6m6d6uUL7Pz8FLI4cURz"
    "/N6mQWJaysl1lCP/LRb20rs5C9IAF5tkcgSikdAs12CGz0gokxMVLJ5ybzmWYCFOBxiEzy"
    "t8n8ZXGgszlc6oZg2aw4ZYcE6bqrZ6Wgnx6bl4q6zGsRiMFTlhbktGJKh90nkKgXR10GCq"
    "VvP90NFPJcs2IBJBEiafrPEUAS+G0PDSDpXCHlfjyAJDK7mlRL7dTQFXWhmNxqasHNflY8"
    "xDwyLEcpZp/gmQkWtmFAbAG3ueM/ACR/7bx/kgGEaQgjFp+PTEAeqdPgBf/TvjgDeeWYq3"
    "qNrM7WrOpsFrI0wewGl6CDMfaVuDs0slo4pcHy+SR94iaj3bu6nlwOLwipbqwVbYo/TcbX"
    "k/HtHwOwMZBuIGs3xaPL0eTX0dUZuQjX0CBfvtg1w+XnhH0JJV2FSGThq0NKFtC6OzNNX/"
    "CK52WUWo+SNXltFHVj/ZRnlv+UPst/Sszy1mSytdiPZRi22GnqE3Quvuck11l6knGWniTP"
    "UhtbSGin8Am654U9yoPvUTq8R8mEQN3GIqEZ/vgO2ZRLC86A3xaQfYSQYBGlakZCd6c62r"
    "KgfYE57o+vz6x19LotxTYhVs0CBuIQWS1exzr19fbagpNOx/ZV4KPxbY+iTUB7w7Pb8ZfR"
    "ADjUU3w2vDobXbCg1QX9aTREtRmqqmtyE9i/QhQ17mAt2b8MuIGKNdOXIs6OMI0UfJKgIj"
    "xb6sYCzlKE9eyzIUktA1OafEa0q4iIdBPvZ7tsXtygGj0yCqNryytPFIbHO7HlFaWSyytP"
    "CSwNbcRiXUIUMtBlf6ALhSuJrnCUy5n7mJaBmzfEJTSpDiiQwtI8N4d2ZvejNibO4zoEO0"
    "+VLgutL4Ge3UW0VGS6fc8Pw2vkuf7P3Qd2CbBaYs28ZZkVchZaujkiz2ZGaHiuQjzmBioP"
    "tPaNTv6hL5z4sAX5cwmUIHJsALYrxQIr8gmEwSpt3IksWjnHSKm/U85juWV3ILaMnbvFpt"
    "fdkXVzZN2cwyzQLY5dCC+RvCCHaTqocLw5zgHym+NUkOmtmPvR39WKJN7GibtXebe9SnzS"
    "SNYSZ03Dlcv2lPdJuiNLq+5zProYf3Hq+xA5Dj06FX7OLsafZpPR8PyPAWAqJLWI7aaYTF"
    "ynXZjb1pBW5rn8dDG6dSrzrDdUv+RU5rkc37C2Y2tksrZj9BtDb8Y6Ldnov/3mt/GnT+wt"
    "D4iIYg3xkMr6PZUHtEfCt2MycVatjghdZaU6kmj7V1pbq8NfdUVS/GO00p3aZJkh2MaLeF"
    "TjxJLXTeb1AT2LZbvi1nCZiHCFeBymkxxuModdS5O3KNc8E3mGrZBL3qHAspqrtOjLpQkt"
    "LheyutMFNB2CvjTFW4ahpEPd3TCUwEMkFCIRJ5OmrP1xEpEyEAcGS0QqT7QM5rwRE/E51s"
    "iyIF5MQJarNhQ3kMdVG7IQ73XVpoPOdZFGpqD3noM8pN+Le7Sy4hzSg1C2IBNUqkmCmp6V"
    "GaWSFR8Oq/iQmlOWauyoOI/sCQ305TtAZEJGOvTtFNVlQkaDIsalTiR1IqkTCetELICfow"
    "d5gf3puo9iq0ifeXkE+eJT6WgaNUq7NGpobijGbgAUDOwN7XcEdAMowILfrB8s/QdzA+Fi"
    "RYMb0II8DmEWffqoGEjBFthAwwtLBQ+E//zA1YrfJ2smNkstkzUTK+/jptvGQgjigKKDGL"
    "/PI8WkCzF8dGfmSjk+eScOcohQxlXvj6t2QVvS2pgcUWYv2gFhB2d2+RHWLmrzncXNVcpw"
    "xMYpuySj1+yEpcJOEvxbcjXlgHTHdyECM8uqMPrXbbZFzTcqXFxf/eoNj5vZYjWBdCR2VP"
    "oEXUC7anOaahsspVEsoCBG1aWdpDRTfLsMlbVKJNJOKe2UB9opHctPwYBxWOrqatiJ0ZLV"
    "lDP00OGV2HKKUnVPCihnNSUs03lqcPg22LLqSrRwa8tVUGKJtENrSVDb8QektdET+SQlJH"
    "y8UuzwHpZ5bPGzpTc4R8siSvDM9G3cS91gNu+wnXvAbOdM9QaKf0fVt5ha0M0+uQVuPg5/"
    "OD55x+tWVMEbuDFSnhuCPlDGRj2pEZ6xQODQ88Z3UHosX+stYBqWNmEBm3AB66Q0Sx5ulj"
    "QVmvs+M7hVBNLtwlGqLuFfXlylNJNVhKym2yqGpjnT7CUH2w9EeklBN0EZw3dJSVuIcAZ8"
    "59efTy9G4NNkdDa+Gbvhq77Gzm7SS0Gu/WQ0vIj7Lsg5M6Pi4UydW7zilemIJ0kl5Hkgl2"
    "VYZRnWBgTQpZVhfeLYuXOWIHym6YuHHkd1D9/u58siclOOFz5NDiXe1ZhpO2BKBpycWbA0"
    "9DXTrJcahNYzokdD00JrOjmce8gywZqcQuS3mc/AnWXe8RT4kp9+QMRcU4oNPq3yXon+k6"
    "7My6TtKqqlMb1FqP1ciET2nos4gcrIfVpqyv095JWSzSqbFaKSRbMEimbRzYF6KIvU14mS"
    "Sh9ok32gPrPMB7gVO0J4pPIkkeU/uh+rw1lZvv8xp9O7SpUn2SaAo/hwewnkUX/8QpQzNU"
    "y5XwnCwCclmgpar6GKyFSlNVXJT2Gl6ENux5fglmguZArZa4gtJtOo0ADkpH+EJtNqQk9L"
    "6kQVvmyKWeFuoNuWU1w/UL/8J2xXSINMv/JAAsgEd1sFEcHsnjmB78Bz+mDvg5a6pulb9r"
    "Ippvdf9MGdSZ51RzOg7sjEgOpdn/3tt9Uk/6akG5u8B1lONtQCsj/JywgfNDqhyIsI1XYF"
    "Mfsl7tdO8UoxAdaDDzT07YDSbtl1C1gK+cVUV/RJfRC82rgvyNyDjwSpuW6twHOF0KkQ3K"
    "NHiKeYXdvqtka+UFN2wNoSLe/FS0cbfeVPqFf+U19udmBNvs1kv2qtu9ibkH6a+Q9A37Rj"
    "bEOECWuFvAo5H0amHjYVR/q1aH8DJ+bNYZ3/pnTPdCRZUnY4aKQjSnY4eFqvq7tRCcIcpe"
    "petFwFGU/pZdpT5PCqS7NzjA3hg6wqA0PVYRrw2wYRea9IddEIpVRwmyOG8xRcbBUyYvhk"
    "kr9N5i8TjAswOEwnOdxkDkv7SfoR2S37iSwV9CTxDbJUUHdKBd041p20ikHh2/189j7XXi"
    "RQRMjJKAjlCVBL0xxCDBTzwek5udI1FTz3rG9OTgS0FqsXzPTDWlQii/xtbmnzlbSkhbJf"
    "wbUNRQwFDE5pFpJmIWkWclFm/xUA2BvfwUySCsqxNDCTpFPGNplK8jSpJO2wcWILep/SOu"
    "umNNfXs4MolgXXG17GeuoOEiapbxN5Xe0OUlq4DIbfrBltjC1u74mR1mLWk/2di1n1ZKvZ"
    "yuuASsNpOvrdMpw2JPDMtS6dO01zd710A5Q/pC9mhFLDdLmqWYdqQjtFLO7cf90F0Vq0q7"
    "fNsmJ0wzEKsaAng4VSUYunagLdiTRy7AP8QtbVvUpm5DRRCMwwPemLJNwZHXKc4QcljTTs"
    "eKs7O4R8UYGSzFGqGnXLerTKCoKTaFiEeGOtOJlME+Bl3MhAlS4rPETM0RCRqcVXD4dSLi"
    "BOng2ma4FjzM3KDwyIZHqgQHqgahfJDAyopGmmwTtV7aaZ70uGkmaZdOilWaYCs8zv5An/"
    "tBG0Puq24SAYs8rERvTzGWW+UorZyifJERhEf8wzEzBKwCjJ19IWLVqQpmU6KVwsxQwgbC"
    "IVUnvIGqg6y0tzksmozYQXF1TBGw6wvtCvEdlIvfGds7mUVaM93ebCuCmCtU/QwUiJkxxo"
    "n6SCfZJIlRGrFgs7Wyy2ZFylKPC9iAI8rov1HYhSdXBt1d54oGqZ6wvlHUyTt9y7OWUt9k"
    "WPAUl+WcuLkHaIaaF2uiPQygWqsqMn6LRHi8FNCdG09/Hj4PJySt4w7Tnj6eXXL18eMf/0"
    "1D5+ffyO/G5WDIAWQUgXwCp97RQjTD1oCwiIHKcATV8Q+Y69ADlJ/xoBDWxXugnBHX3PHb"
    "1BxuoGmENCyfxtz7cGwZ58OY0X96heSJmvUQs6W+aDG7ESbR5B/QXaOuRsk2KLFFuk2NJF"
    "seVM2Qw1aFg8ocW/l1NkWSibmeIT7BNY0tHnZmWZRMeEbPIglYgEiPw+Q/aUedKeMiFGCO"
    "wPUaoO7g/VtHj3p39ua5dPITHOjXGhaIyOSjbtlWSSHs61ee/wRmABhWk6uITe55Fi0oUY"
    "XhUrm6OaZad42TzdTKKbQNcLJ07ie4qwYuxSox19qni0i5fU2DKUs6JdXGXW348InKfjq+"
    "HkD36/+FOO8nv6x+1oGMfeUJYc4DOiez0CaXM4wOaQkTI6wvaaQR8uT1Jv+mhCjg+4LgB+"
    "73wy/HA7AIx2is/IjBpPLkfnA0DAXyJjDVVydXh1Nrq4YFe9QrBTPBl9+HxDrxlwaZtu2u"
    "qTJ6HKJK/KpdSnrJPUrBC8suNJnRrCRaycUcoO6gIttXK6szFTNfB4J2bljFJ1UYAtyZcT"
    "TkxbILXQ8opSyqyHJmvaHq/EllOUqnuSQKd8BqkOgxzeAn1jCvgIWJatYWsQEGGYuu11zN"
    "oBOOmqfaepHcHcdCrAkWmsa49QfQmGFliTic0G0wBP7w5N2Y1LypW8ZIqf00f23ae8GIA7"
    "msg8e4A7Fpkw7f3MXonUXwY/O2Po39Oe30mCjgo/tQ8IlpDxImfAwp+BGmTSVgrI2vXIkD"
    "/9AATn9l9CXhNZzo7eq6Oc3QMSC8L0xndQGCm/0FpTsuSfWIOKZr68yZP58iY98+VNCsqi"
    "MzlG1j1xoHzDy9PGoOWxjwmaxhqjtvhHJxfdHKbIEH2Tt+be2WR8Oz4bXgwAuWqhhaJN8e"
    "Xwf64nA7BW/q0TkeZyfMX+hTD91+/DydX46tcBDQDFlENF2FW+E6pNNmN9A7Goyfj60+hq"
    "ACjlFA/Pfru6/v1idP4rtQQT4Z5oZRpU7x0D8c31xRfHQuxIkIVMxHlO3qP0k/cocfJ6Yr"
    "DIbhWmKeU0aFDQ7FEuI/FRhpH4iBPKYK/XiiGEcYikydtUUQkyF8pvMlB+k0T5UdFsznaT"
    "7hn0CWTln+KOQUcVL2BGjBDWY6SXFQmKWRFpXsaMgleAzXHaDrpjusTqsNRSrK1TnFw6CF"
    "rDbzEvAYe0e7aBCjRYRB6+IJDZ2EKa6AJLUstaPg1eXj67xJZWjEwuq/3LylOri0iiUVJ5"
    "YDV5RfnMEltRMTK5ovavqIVu80KcU/2N/vj6miocVQVtybFs1LksFiAYouhSo5uqeihSuJ"
    "LoCrdPZCETE/dZLUP4b28K7WmfGJpZop0TQxWJHiHmNV05dek+/DaBmmLxy6WGwR49wlbO"
    "5zS0/6481MdBLC3ex8czR9DPDPqD94b+3K4gWCHT0o0dLSKiYMAeMXBDcfoRd0cfeAJsH9"
    "g4+DsInjEgdZnwWktW9aIpvsO6hZZewA+5qpJXTnusFYACFisF37M6dICNQ7SbAFGxNNbb"
    "kkYa6bYF3bCfKflmDAktIZ32MPv70LolMrznKcN7Cpi6pOG68coC2dK4tb6zjFoph1YX3G"
    "7lB7oQuHShPHifoHOViqsI0bcUnoUwI9fRp5AuzeIuTUdOEJnVAUV90SpU6qhpZpcbFuTI"
    "nqLiTpiqSxpxDXJPht7sB/+XoTi3kAl5lebw7BPVmivXCJnBIk0h9KwZefRBz4qSp7wly5"
    "cgmhGVqAdgSwt6IwtsFWuxgiZ4fkfDhe/6YKlBaL0ir3hFCcyXm92LPk3p2K7QYuWmY9Dh"
    "oSDju35CKaz2dUQ1NHQNEvI7ypE7B2VWsRJT+i2yVuRtJtgoBkHYgoZJFE83kDTaQs5VHc"
    "0qlMHvRROsrEIW+6/Iqe6Ol5VB94qqMjum+uwYmbdRfcEMnedGyPAquuO7h235s7jWnJhG"
    "YyuzYlxwWSKLoA7bhcQYJkcKFc4OKOqvYtX7eWljZhYFcxtpFsLmS/raX6qyPtRt74GYws"
    "OzR2S1LgxR1di70BMaW9u6kPrZsKuC5p39YZpmzH/6vs7Mf/dXCc7/EJXs3SmyAGRdq++w"
    "rpXs2dA1rnMc0C3v2dAqR6lA9aWYu6OMsLUWLrMniVj7CBXNWtG2pmx5J1wUkfv9fV6KFR"
    "vNWp66w3M4Khwz2DMTONRgie5tssKBTlReViyKPm5Aq0SRj18TNXgB2I9jFn+iQ/aJWvmN"
    "/B+koWhYBSzMmdf6tLoXcVtwRMrf0Ecn+m/8GbosQ84aF3LW3KJHT2gbK7/qEVsDgjKXR9"
    "NBaau90lVSqHZ3WBFTQohE1oM/wGawhqZJjnwO9qmnR5ikSxE85ea0PE0cyRWLW1goLgQJ"
    "OS1yf6+chuOjc6UX6LY1178NmKjkzhUad0//6RoAwXP6DybEu/H6fcCC91VE5pVF8wXWNG"
    "SDn1VQ8vNlqH9L5S6W9UIkKKFzI0IkbdClnyfOChM0QQdE0gItYIHOqMvHx/kJavG56Vk1"
    "WaRKDnC2LLje8OxM6dHNIZL6ZKPXDRaMIgH58ButIbUrYD2PkcpiKQ1W56Rn7LtgM23SWY"
    "DHITJZoaXJ/GUV/6BhiCUGRqm6F/RXSclTV28VKy0SJZKWmP1ZUi5iSYyF86TCdpSz4Kkt"
    "gztv1lR0pjUpb4rHhz1mrxC78lu/ZqGps98K9jtLI3Kc1OBeHwAFmGR6QRVs4Xyl6w/UGg"
    "V/WCtIc7yKN5e3n0L5SfoWAzqNgIbWyGJOREdFThrEqn2VzHySmU9NgTbqXnybx734Nt29"
    "+FZmPtVlRrEUg2wfIkbagEL69g7p9QyJPs0BPsNA6FN0T3CvpG3wGuHZoUk78WfUGCgYTq"
    "X5vlJ3KJSzDTRm/LCS9HqOcbr69K7jtph5ZR6OTENoxP7fzoB0kTQEGZDejID0sK3gwLj0"
    "eIhOyxbdk4SnfyIri5YMPWPBPj2OBSg2or/P+LNxx88WAUGuvspu/VFa8jSIJPeeRivf0M"
    "qkrLwNMOBCN1RIA8cHrHrpUiMfRXslUzOMWzw1afKp7C15eh9H4pbJyfEX7XxM/yuDpBoZ"
    "JCWD02sJTm922dmmWDmaJGXlcoHqWEOYY3HNVGQCohr1mKdhaIl6DJHVTbESvwFF94xV5Z"
    "TtaUhQ+i3U4Bpaxi49fzA+ZK98ZnkEhbIIAS34RCQm/ym85D6qPVIxqVj+YLmv2J856JWw"
    "khmEUkiTQhpXSKu1KlyzwS2/LJxMz+ysFCzTM2V6ZteCAp9GEqbW39051BARBblycHRAph"
    "Rs0KE0Ei8YK5yeybLh4kmUEKsbnYBPpVEVAoSZMZFwCJoWFWgNBZtOe5X9+ZllvIAr+3rP"
    "cOUf9w30X0nZNzaWZkHZpjMhQyIUJaXGzOA2yznxbJy0UdRMGjqlDN3wzbJiGTq00ARwjl"
    "J1EOi3eVyPb9Ndj28TkUUbZafpCgflrOKyPokUug6Jm8PKxlzp1sxcKccn70QmOoe0e8bJ"
    "8oNvgzO3SABdQF1jSEOxxObep9HVOQuF8/pW4vPRxfjLaDI6HwBXmIMqvTpkF5zlLMqhn3"
    "Iw6KdU/vwkE6HrSIQumAQtHYctMJksNAWtRQ4On6B7x0X5tkYZ8/hdLCKWSuweJAV4zSGX"
    "CeeN53eaKJgqacSoCgkbDWNq2eKGzOSvLZPfMxMK7lUhMrlHNXmPitmSc+5RMSrpltlfq8"
    "GDLImycLEG5lQZhZ7XMqTzlmmIzbIm1WmIsiDN8RXm0T7HV3h+5K3IwCih6nilvHIJXp2E"
    "z5MLp0iopW/QgjabVbBOHU7g8p+3t2Bu6A/QCFVOMGhQV8IBVtWLptiElkVeYrLIMHrdc/"
    "0BVtYPPKff8Yq9+eVa7YNpz4PTIfGGT3uV1D39XtxcsrZD+8zL6bUd9huX21Dnoff76PTj"
    "9fVvA2+PmWK6lQzA+qtlFbEfZ81kjwM/pjLgxzj+tsGpuZSRpugMbzLiBaf2SS6V4yRD5T"
    "hJqhzsGBHB1yeo0V2C9MUr5zR89V8qTvz96r+O8538Qd//t6AjpSADKikCYZvQEN29wzTd"
    "U62PjvPATEal93Q+5njETXOrizUfDtN0D+ZKZvNCmW0gx3dxC7+lFSL0KboAcZa1YvSv24"
    "ihIhFt4BsrLq6vfvWGx0MQnrhKT7OPyErm9MYgZ41umzNxsDmkXZjldYJuYwtxBMBsi2iS"
    "WhpGm20YlUV/akuWVZHJcJuJZ81ySLu3n1Xj2vGQK+DeiZLKnazJOxnlgG5bM44T+oOmKy"
    "lCcIQqxuAlJatqMzt6/bKqsLcMrp5ffz69GIFPk9HZ+GbsBuH6bGQ3o5vYZDS8SKT80/zt"
    "uWJCQazjhHXCfdJutOk2WQRsn65OrN+8e93ayU0BKxA3Gyerz1V8dFLV0VxyNMs9jZVg5c"
    "oFcI0S1Vi0syWgLhWk2QaczW2VW6w5FdgkYZ0VUdsS8O2htCU/h0gjYjswj7jObfj9u7ft"
    "3ocRni01dL8SmdcJuvqm9Zu2bBp+ttNWQaLyModWSs15JjR9G1zYFnqEM3dnEBEw0shlkk"
    "6isnIIKSo+FATZI5UA8w5F8r6ZidzACxGTSoJYGlWabFRxovTtxQKaZtFcjii55Hfj+e0J"
    "rgX5HSWX/G48v2WKSS3NImX2Yyr63e/4IM71KKXkelO4ztlX3a+XfT6a2ufDTaJAPJVbpM"
    "lHos5by5ZcWkpS1OOk21YpQE3og7qEUuWpVg5iaXlWPp77kqwMf2CODCu0WAUJT7TWn4L9"
    "Un8DABVymxagAsgE056Cd0BfTsmzqatrRy9iHRCkVMSvLFjB82UGlMyAagq0FWdAyei8Gq"
    "PznAcnoM7od+sR1F+2r/fz0sas1iqY20izEDZf0vf9UpUoV3cxv81KMcW4EVBIdpTOjgUB"
    "7F7nC9DpLIlSSbaUzhYqdgpxxCeQzCidGW5VYpp5LMSTOJ1kTemssZR7sZPdHS9ZUdEqKb"
    "BAJEMq6lUR62OfV42L03XPDXT0Lk82dNzMHEqGfid9QF33Bkgf0PfIdekDelIfkKzsJyv7"
    "NdFB1G9PZb8bN467x3E2+ff6+11NZnjsXm/TNYYArWlPKcXrt2pvaPMTqPYB7WgPVaCTqQ"
    "PmO1Yr7+bj8Ifjk3ecInneN5peXbyI16nC9xzgfSrQl+SwdiTfg7Mk3S8133Hd2Klngj9e"
    "ngYp3hGRqeuNr7NYGV3xr/69gaLtXYqGCZbeIaG53dCecKMov6EwXED0WEghi5HWo5HViX"
    "17FTBH7xYID6tSvDpbIU0lSxazXTghYYVvZwpZCzpwtghG7hWxhoDRPDPBHBnWqk+bUVkr"
    "WrnYeQrQl2AFFY1cYwWI+0AxWSPPpQahBcinaAjSSsVJqarcR+8XpP7sbRQD+uKzg4Xzt+"
    "zomX7kP3FHzwjP8p5hEaIOlscr/xALr4a8KIdpJMg5QBYXEDprqW27YBAJm1jxGJu+brzx"
    "HVwz5fu4VGgpvLqRWQqMR9E9H2I5OmKTpNpzpm6mSrXu7RxSrRqM3CfVpoPP7TLPFxvjHe"
    "al/Cjlx7Zs01J+bCXI6R1M+AAf1LXkOzgHI2VItiLIOqO7h2v5OScrIVxXHcW1qtLqJuR5"
    "0DPTeUJUxdJ5GgZ0Pdk8zAIp5Gv1CLo3mcvffBlYxSpAxUhlfZgmW0pYpRfHpp/kc3rEdo"
    "zsoKjt9nC3kvDsEJRFCzJFqOV6a/x6Y961oswOE0teN57XzIValNdhYsnrlvBavPcLl1hK"
    "qTlMBMig9SchxAVWWIJYOvWav8QK8jpOK1ndaFbDjb7g6CPp2R7eeFnMOWEm4Vb6ynB28W"
    "tstBfJWrxdYby/iuL9tV68fzhqPeANcZcPTRNyE2ycG/0sF7niD8kR8bnRlAVkkZYLZO3A"
    "A4QbM8h8UawBS3JZIZr5suuDjaHfG8ra7ANFgwa5o2AVGGSTpH8vdU3TtwAlGtBX9Z4pVh"
    "aGbtIHmVtlQ4NI6Rvchy6RRaY3LRuXO2xUyK+fLnWX6eZsUt5NSU7OdAd+utNzhO11IkWw"
    "PAdoTSJX79P1xWgANroGp/hseDq+Gt0OwEKZIwzJbL75NBr+NprMLoc35LK5gcoDNGZrIm"
    "FOMdmeRpOb0dnt+PqKLBZsQcOErLjEFF/ffhxNBkBns7oAY4/yqE9H6erTUUJ9etrCfrlS"
    "fnq1rJmj4zzOQDIqA9yEM5CeLyLoeuNry/BpbUo40SSIssGRa9PBDZF0bvZW4sqmBYAtW+"
    "XsDxnNo8JEBbtGNcyClQFsGU2jNB3fF4A5TCVxzoGzYpHXz/llr9O9nFGqZpSmoq/tTGmq"
    "J0qHjc/9DkrvsiRVd4sTyZJU3yPXOYZzWZKqPv2jISbHD8iynJ+eMDp6t/p7zY6zZWhorp"
    "o+zpn7zAR0zQMij+jkInsWITP0dciMZ8C1/kj+fE6/HGxXSIMAse4P1PABU4r5lP2CPMnn"
    "Dhae8GG5m55MO29m2lCUWzm1/hCNLJyyX1aU5WnqQDnYawRFswhhByWz9kpiSQHcPaUKlS"
    "AKU8qwv2ZzWTTW78AAvyYL2uXH94npMVJ/ab7+MoQGWqx6vJgJ50629hKMKbWiwCEBBt+L"
    "+F9Ze7lHaJhIbBMNkTQ5kKCoP+/kJI8/7+Qk3Z9H78U8IGRRCSDsDu8guke5vKVHGd7SI0"
    "7vbx1b3MTfjN5ZAUn9nqWW58896WH29/8D2gulUg=="
)
