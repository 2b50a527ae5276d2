"""The camera pipeline without a broker: gate, masks, recalibration, events, snapshots, limits.

Scenes are real frames of `bikes.mp4` (its background plate) with known objects composited on.
"""

import hashlib
from pathlib import Path
from typing import Any

import pytest

from contract import device_topic, parse_upstream
from edge.errors import ConfigError
from edge.roles import ROLES
from edge.roles.camera.pipeline import CameraPipeline, MotionMessage
from edge.roles.camera.settings import CameraSettings
from edge.roles.camera.snapshots import SnapshotStore
from edge.roles.camera.source import Frame
from edge.uplink import encode
from edge.vision.gate import GateConfig, MotionGate
from tests.edge.roles.camera_fixtures import SIZE, crossing, quiet_scene, street_fixture  # noqa: F401
from tests.edge.roles.camera_scenes import Image, Scene

Street = tuple[Image, list[Image]]


def camera(**overrides: Any) -> CameraSettings:
    return CameraSettings.model_validate({"id": "cam1", "url": "scene", "category": "traffic_safety", **overrides})


def run(
    scene: Scene, settings: CameraSettings, store: SnapshotStore | None
) -> tuple[CameraPipeline, list[MotionMessage]]:
    pipeline = CameraPipeline(settings, store=store)
    out: list[MotionMessage] = []
    t = 0.0
    for t, image in scene:
        out.extend(pipeline.process(Frame(t, image)))
    out.extend(pipeline.close(t))
    return pipeline, out


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snaps", ref_prefix="snap/pi-test", max_bytes=10**8, max_files=1000)


def as_contract_event(m: MotionMessage, seq: int) -> None:
    fields = {"v": 1, "ses": 7, "seq": seq, "ts": None, "id": m.event_id, "type": m.event_type, "phase": m.phase,
              "category": m.category, "data": m.data}
    if m.snapshot:
        fields["snapshot"] = m.snapshot
    payload = encode(fields)
    assert len(payload) < 8192
    parse_upstream(device_topic("pi-test", "event"), payload)


def test_a_crossing_object_is_one_event_with_one_snapshot(street: Street, store: SnapshotStore) -> None:
    obj = crossing(street)
    _, messages = run(quiet_scene(street, 7.0, objects=[obj], noise_sigma=4.0), camera(), store)

    assert messages[0].phase == "start" and messages[-1].phase == "end"
    assert {m.event_id for m in messages} == {messages[0].event_id}, "one stable id"
    assert {m.category for m in messages} == {"traffic_safety"}
    for seq, m in enumerate(messages):
        as_contract_event(m, seq)
    start, end = messages[0], messages[-1]
    assert start.snapshot is None and end.snapshot is not None
    assert obj.t0 <= end.data["duration_ms"] / 1000 <= obj.t1 - obj.t0 + 3
    x, y, w, h = end.data["bbox"]
    x0, y0, x1, y1 = obj.path_box()
    assert x < x1 and x0 < x + w and y < y1 and y0 < y + h, "the event is where the object went"
    assert end.data["frame"] == list(SIZE)

    assert len(store) == 1, "one snapshot per event"
    ref = end.snapshot
    file = store.folder / Path(ref["ref"]).name
    assert ref["ref"] == f"snap/pi-test/{start.event_id}.jpg"
    assert file.read_bytes()[:2] == b"\xff\xd8" and ref["bytes"] == file.stat().st_size
    assert ref["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()


def test_an_ignored_region_gives_no_event(street: Street) -> None:
    obj = crossing(street, y=20)  # crosses the top band only
    band = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.4), (0.0, 0.4)]
    _, watched = run(quiet_scene(street, 6.0, objects=[obj]), camera(), None)
    _, ignored = run(quiet_scene(street, 6.0, objects=[obj]), camera(ignore=[band]), None)
    assert watched, "the same object outside a mask is an event"
    assert ignored == []


def test_sudden_global_changes_make_no_events(street: Street) -> None:
    scene = quiet_scene(street, 30.0, noise_sigma=4.0, flashes=[3.0, 12.0], ir_switches=[(18.0, 6.0)],
                        clouds=[(5.0, 8.0)])
    scene.ramp = (0.3, 20.0)  # and a strong lighting ramp
    pipeline, messages = run(scene, camera(), None)
    assert messages == []
    # these changes are uniform: the brightness and contrast matching explains them, so the gate
    # goes on judging through them (a non-uniform one resets: test_camera_gate_night.py)
    assert pipeline.gate.recalibrations == 0


def test_zones_set_the_purpose_category(street: Street) -> None:
    crossing_zone = {"name": "crossing", "category": "security",
                     "polygon": [(0.0, 0.3), (1.0, 0.3), (1.0, 0.7), (0.0, 0.7)]}
    _, messages = run(quiet_scene(street, 7.0, objects=[crossing(street, y=150)]),
                      camera(zones=[crossing_zone]), None)
    assert messages and {m.category for m in messages} == {"security"}
    assert {m.data["zone"] for m in messages} == {"crossing"}


def test_the_rate_limit_refuses_extra_events_per_camera(street: Street) -> None:
    objects = [crossing(street, t0=1.0 + 4 * i, t1=2.5 + 4 * i) for i in range(4)]
    pipeline, messages = run(quiet_scene(street, 18.0, objects=objects),
                             camera(rate_per_min=1, burst=1, end_after_s=1.0), None)
    assert len({m.event_id for m in messages}) == 1
    assert pipeline.tracker.rate_limited == 3


@pytest.mark.parametrize("accept", [True, False])
def test_a_detector_stage_confirms_and_labels_events(street: Street, accept: bool) -> None:
    settings = camera(detector="tests.edge.roles.camera_detector:make", detector_options={"accept": accept})
    pipeline = CameraPipeline(settings, store=None, detector=_load(settings))
    messages = [m for t, image in quiet_scene(street, 7.0, objects=[crossing(street)])
                for m in pipeline.process(Frame(t, image))]
    if accept:
        assert messages[0].phase == "start" and messages[0].data["labels"][0]["label"] == "vehicle"
    else:
        assert messages == [] and pipeline.tracker.rejected == 1


def _load(settings: CameraSettings) -> Any:
    from edge.vision.detector import load_detector

    assert settings.detector is not None
    return load_detector(settings.detector, settings.detector_options)


def test_the_gate_finds_the_box_on_a_real_frame(street: Street) -> None:
    plate, _ = street
    gate = MotionGate(GateConfig(settle_frames=0))
    gate.process(plate)
    frame = plate.copy()
    frame[100:160, 200:280] = 255 - frame[100:160, 200:280]
    boxes = gate.process(frame).boxes
    assert len(boxes) == 1
    b = boxes[0]
    sx, sy = SIZE[0] / 160, SIZE[1] / 90
    assert abs(b.x * sx - 200) <= 2 * sx and abs(b.y * sy - 100) <= 2 * sy
    assert abs(b.w * sx - 80) <= 3 * sx and abs(b.h * sy - 60) <= 3 * sy


def test_the_snapshot_store_deletes_the_oldest_at_its_bound(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, ref_prefix="snap/x", max_bytes=2500, max_files=10)
    for i in range(5):
        store.put(f"e{i}.jpg", bytes(1000))
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["e3.jpg", "e4.jpg"]
    assert store.deleted == 3 and store.total_bytes == 2000
    reopened = SnapshotStore(tmp_path, ref_prefix="snap/x", max_bytes=2500, max_files=1)
    assert [p.name for p in tmp_path.glob("*.jpg")] == ["e4.jpg"] and len(reopened) == 1


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"cameras": []}, "cameras"),
        ({"cameras": [{"id": "a", "url": "x", "ignore": [[(0, 0), (2, 0), (0, 1)]]}]}, "cameras"),
        ({"cameras": [{"id": "a", "url": "x", "category": "fun"}]}, "cameras"),
        ({"cameras": [{"id": "a", "url": "x"}, {"id": "a", "url": "y"}]}, "cameras"),
        ({"cameras": [{"id": "a", "url": "x", "colour": 1}]}, "cameras"),
    ],
)
def test_bad_camera_settings_are_refused_at_start(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"roles\.camera\.{field}"):
        ROLES["camera"].check("camera", section)
