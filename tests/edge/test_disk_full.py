"""A full disk in the agent's state folder (issue 9 §2), with the agent as a real process.

The state folder is a 16 MiB tmpfs, filled to the last byte by a filler file while the agent runs
(the `sim` role stamps a message every 5 ms, health every second), against a private Mosquitto with
a persistent observer. Every stamp the agent takes is written to a tap file on another file system
(tests/edge/stamp_tap.py), so the test knows exactly what must have arrived, what is still in the
queue file and what must be counted in `dropped`.

- broker up: the agent keeps sending from memory, reports `disk_full` in health and as an event,
  answers a command and a desired-state document, logs one line per change, recovers by itself
  when the filler is removed; nothing is lost, nothing counted as dropped.
- broker down when the disk fills: the agent keeps running, holds what it can in memory (a 16 KiB
  bound here), drops the oldest not yet sent and counts them; it stops cleanly, starts again with
  0 bytes free, and recovers when space returns; `dropped` is exactly what never arrived.

The broker is stopped with SIGTERM, not killed: the observer's persistent session must survive the
broker's restart, or the test could not tell the agent's losses from the broker's.

EDGE_CODE_ROOT=<a checkout> runs the same scenario against that code (e.g. `git archive` of an
older commit); the measurements go to test-artifacts/edge-disk-full-*.json either way, before the
assertions, which is how the issue's before/after figures were taken.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import make_command
from tests.edge.small_disk import fill, small_disk, unfill
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_probe import Probe
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
CODE_ROOT = Path(os.environ.get("EDGE_CODE_ROOT", str(REPO))).resolve()
# The code under test knows the full-disk state (an older checkout does not know its setting).
KNOWS_DISK_FULL = "ram_max_bytes" in (CODE_ROOT / "edge" / "config.py").read_text()
LABEL = "this" if CODE_ROOT == REPO else CODE_ROOT.name
TAP = Path(__file__).with_name("stamp_tap.py")

Stamp = tuple[int, int]


# -- the agent as a process ----------------------------------------------------------------------


def write_agent_config(path: Path, device_id: str, state: Path, broker_url: str, *, ram_max_bytes: int) -> Path:
    lines = [
        f'device_id = "{device_id}"',
        f'state_dir = "{state}"',
        "health_period_s = 1",
        "shutdown_drain_s = 5",
        "[broker]",
        f'url = "{broker_url}"',
        "backoff_min_s = 0.05",
        "backoff_max_s = 0.5",
        "timeout_s = 5",
    ]
    if KNOWS_DISK_FULL:
        lines += ["[queue]", f"ram_max_bytes = {ram_max_bytes}"]
    lines += ["[roles.sim]", "period_s = 0.005", "seed = 7"]
    path.write_text("\n".join(lines) + "\n")
    return path


class AgentProcess:
    """`edge-agent` of the code under test, with the stamp tap, logging to `log`."""

    def __init__(self, config: Path, tap: Path, log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(CODE_ROOT)}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(TAP), str(tap), "--config", str(config), "--log-level", "info"],
                stdout=out,
                stderr=out,
                env=env,
                cwd=CODE_ROOT,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def state_disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "state") as folder:
        yield folder


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.alive():
            agent.process.kill()
            agent.process.wait(timeout=10)


@pytest.fixture
def observer(mosquitto: Mosquitto, device_id: str) -> Iterator[Probe]:
    probe = Probe(mosquitto.port, f"ioc/v1/d/{device_id}/#", persistent=True)
    yield probe
    probe.close()


# -- what was stamped, received, kept --------------------------------------------------------------


def taken(tap: Path, suffix: str | None = None) -> list[Stamp]:
    """The stamps the agent took, in order (complete lines only)."""
    if not tap.exists():
        return []
    stamps = []
    for line in tap.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and (suffix is None or parts[2] == suffix):
            stamps.append((int(parts[0]), int(parts[1])))
    return stamps


def bodies(probe: Probe, suffix: str | None = None, *, since: int = 0) -> list[dict[str, Any]]:
    """Payloads on `suffix` (all when None), from the `since`-th message received on."""
    found = []
    for topic, payload, _retained in list(probe.messages)[since:]:
        if payload and (suffix is None or topic.endswith("/" + suffix)):
            found.append(json.loads(payload))
    return found


def received(probe: Probe) -> set[Stamp]:
    return {(b["ses"], b["seq"]) for b in bodies(probe) if "seq" in b}


def queue_file(state: Path) -> tuple[set[Stamp], int]:
    """The stamps of the messages in the queue file, and its persistent `dropped` counter."""
    conn = sqlite3.connect(state / "outbox.sqlite3")
    try:
        stamps = set()
        for (payload,) in conn.execute("SELECT payload FROM outbox"):
            body = json.loads(payload)
            stamps.add((body["ses"], body["seq"]))
        row = conn.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
    finally:
        conn.close()
    return stamps, int(row[0]) if row else 0


def settle(condition: Callable[[], Any], within: float) -> bool:
    """Wait for `condition` without failing: the scenario runs to its end on the old code too."""
    try:
        wait_for(condition, timeout=within, what="a step of the scenario")
    except TimeoutError:
        return False
    return True


def claimed_queued(log_text: str) -> int | None:
    """N in the agent's last `stopped (N queued for next time...)` line."""
    marker = "stopped ("
    lines = [line for line in log_text.splitlines() if marker in line and "queued for next time" in line]
    if not lines:
        return None
    return int(lines[-1].split(marker, 1)[1].split()[0])


def accounting(tap: Path, probe: Probe, state: Path) -> dict[str, Any]:
    """Every stamp taken must have arrived, be in the queue file, or be counted in `dropped`."""
    stamped = set(taken(tap))
    got = received(probe) & stamped
    kept, dropped = queue_file(state)
    lost = stamped - got - kept
    highest: dict[int, int] = {}
    for ses, seq in got:
        highest[ses] = max(seq, highest.get(ses, -1))
    no_gap = {(ses, seq) for ses, seq in lost if seq > highest.get(ses, -1)}
    return {
        "stamped": len(stamped),
        "received": len(got),
        "in_queue_file": len(kept - got),
        "lost": len(lost),
        "dropped_counter": dropped,
        "lost_silently": max(0, len(lost) - dropped),
        "lost_with_no_gap_shown": len(no_gap),
    }


def log_figures(*texts: str) -> dict[str, int]:
    text = "".join(texts)
    return {
        "log_lines": len(text.splitlines()),
        "traceback_lines": sum(1 for line in text.splitlines() if line.startswith("Traceback")),
        "disk_full_lines": text.count("cannot be written"),
        "disk_writable_lines": text.count("can be written again"),
    }


def disk_events(probe: Probe) -> list[tuple[str, str]]:
    return [(b["id"], b["phase"]) for b in bodies(probe, "event") if b.get("type") == "disk_full"]


def save(artifacts_dir: Path, name: str, figures: dict[str, Any]) -> None:
    figures = {"code": str(CODE_ROOT), **figures}
    (artifacts_dir / f"edge-disk-full-{name}-{LABEL}.json").write_text(json.dumps(figures, indent=1))
    print(f"\n{name} ({LABEL}): {json.dumps(figures)}")


# -- the tests --------------------------------------------------------------------------------------


def test_broker_up_the_agent_sends_from_memory_and_recovers(
    state_disk: Path,
    mosquitto: Mosquitto,
    observer: Probe,
    agents: list[AgentProcess],
    device_id: str,
    tmp_path: Path,
    artifacts_dir: Path,
) -> None:
    tap = tmp_path / "stamps.tap"
    config = write_agent_config(tmp_path / "agent.toml", device_id, state_disk, mosquitto.url, ram_max_bytes=1 << 20)
    agent = AgentProcess(config, tap, tmp_path / "agent.log")
    agents.append(agent)
    wait_for(lambda: bodies(observer, "birth"), what="the birth")
    wait_for(lambda: bodies(observer, "telemetry"), what="telemetry")

    # Filled while SQLite's write-ahead log still grows (it is reused once it reaches 4 MB, a few
    # seconds in, and then a full disk would go unnoticed for as long as no write needs a block).
    free_after_fill = fill(state_disk)
    filled_at = len(taken(tap))
    made_while_full = settle(lambda: len(taken(tap)) >= filled_at + 2000, within=40)
    alive_while_full = agent.alive()
    # a command and a desired-state document while the disk is full: commands.json, desired.json
    command_id = f"c-{uuid.uuid4().hex[:8]}"
    observer.publish(*make_command(device_id, command_id, "ping", {}, int((time.time() + 60) * 1000)))
    observer.publish(
        f"ioc/v1/d/{device_id}/state/desired", json.dumps({"v": 1, "version": 1, "doc": {"health_period_s": 1}})
    )
    answered = settle(
        lambda: any(r.get("id") == command_id for r in bodies(observer, "cmd/result"))
        and bodies(observer, "state/reported"),
        within=15,
    )
    full_until = len(taken(tap))
    health_while_full = [h for h in bodies(observer, "health") if h.get("disk_full") is True]
    health_made_while_full = set(taken(tap)[filled_at:full_until]) & set(taken(tap, "health"))

    unfill(state_disk)
    unfilled_at = len(observer.messages)
    recovered = settle(
        lambda: any(h.get("disk_full") is False for h in bodies(observer, "health", since=unfilled_at)), within=20
    )
    after = len(taken(tap))
    settle(lambda: len(taken(tap)) >= after + 500, within=20)
    exit_code = agent.stop()
    stamped = set(taken(tap))
    settle(lambda: stamped - received(observer) - queue_file(state_disk)[0] == set(), within=15)

    figures = {
        **accounting(tap, observer, state_disk),
        **log_figures(agent.text()),
        "free_bytes_after_fill": free_after_fill,
        "made_while_full": full_until - filled_at,
        "alive_while_full": alive_while_full,
        "health_received_with_disk_full": len(health_while_full),
        "disk_pct_while_full": max((h["disk_pct"] for h in health_while_full), default=None),
        "health_made_while_full": len(health_made_while_full),
        "health_made_while_full_received": len(health_made_while_full & received(observer)),
        "command_and_desired_answered_while_full": answered,
        "disk_full_events": disk_events(observer),
        "claimed_queued_at_stop": claimed_queued(agent.text()),
        "exit_code": exit_code,
    }
    kept, _ = queue_file(state_disk)
    figures["not_received_in_queue_file"] = len(kept - received(observer))
    save(artifacts_dir, "broker-up", figures)

    assert made_while_full, "the role went on making messages on a full disk"
    assert figures["traceback_lines"] == 0
    assert (figures["disk_full_lines"], figures["disk_writable_lines"]) == (1, 1), "one line per change"
    assert alive_while_full and exit_code == 0
    assert figures["health_received_with_disk_full"] >= 3
    assert figures["disk_pct_while_full"] >= 70, "disk_pct is the state folder's file system (the tmpfs)"
    assert figures["health_made_while_full_received"] == figures["health_made_while_full"] > 0
    assert answered
    assert recovered
    (start_id, start), (end_id, end) = figures["disk_full_events"]
    assert (start, end) == ("start", "end") and start_id == end_id
    assert figures["lost"] == figures["dropped_counter"] == 0, "sent from memory: nothing lost"
    assert figures["claimed_queued_at_stop"] == figures["not_received_in_queue_file"]


def test_broker_down_the_agent_survives_starts_full_and_counts_what_it_drops(
    state_disk: Path,
    mosquitto: Mosquitto,
    observer: Probe,
    agents: list[AgentProcess],
    device_id: str,
    tmp_path: Path,
    artifacts_dir: Path,
) -> None:
    tap = tmp_path / "stamps.tap"
    config = write_agent_config(tmp_path / "agent.toml", device_id, state_disk, mosquitto.url, ram_max_bytes=16_384)
    first = AgentProcess(config, tap, tmp_path / "agent-1.log")
    agents.append(first)
    wait_for(lambda: bodies(observer, "birth"), what="the birth")
    wait_for(lambda: len(taken(tap)) >= 200, what="200 messages")

    mosquitto.stop()
    down_at = len(taken(tap))
    settle(lambda: len(taken(tap)) >= down_at + 100, within=20)
    fill(state_disk)
    filled_at = len(taken(tap))
    made_while_full = settle(lambda: len(taken(tap)) >= filled_at + 1500, within=40)
    made_while_full_and_down = len(taken(tap)) - filled_at
    alive_while_full_and_down = first.alive()

    mosquitto.start()
    reported_full = settle(lambda: any(h.get("disk_full") is True for h in bodies(observer, "health")), within=20)
    drained = settle(
        lambda: (h := bodies(observer, "health")) and h[-1].get("disk_full") is True and h[-1]["queue"] < 50,
        within=20,
    )
    first_exit = first.stop()

    free_at_second_start = fill(state_disk, "filler-2")
    second_start = len(observer.messages)
    second = AgentProcess(config, tap, tmp_path / "agent-2.log")
    agents.append(second)
    started_full = settle(lambda: bodies(observer, "birth", since=second_start) and second.alive(), within=20)

    def second_run_health(since: int) -> list[dict[str, Any]]:
        """Health of the second run's own streams (its queue file also replays the first run's)."""
        births = bodies(observer, "birth", since=second_start)
        first_ses = min((b["ses"] for b in births), default=1 << 62) - 1  # its boot stream, or after
        return [h for h in bodies(observer, "health", since=since) if h["ses"] >= first_ses]

    health_after_start = settle(
        lambda: any(h.get("disk_full") is True for h in second_run_health(second_start)), within=20
    )
    second_exit_early = None if second.alive() else second.process.returncode

    unfill(state_disk)
    unfilled_at = len(observer.messages)
    recovered = settle(
        lambda: any(h.get("disk_full") is False for h in second_run_health(unfilled_at)), within=20
    )
    after = len(taken(tap))
    settle(lambda: len(taken(tap)) >= after + 300, within=20)
    second_exit = second.stop()
    stamped = set(taken(tap))
    settle(lambda: stamped - received(observer) - queue_file(state_disk)[0] == set(), within=15)

    figures = {
        **accounting(tap, observer, state_disk),
        **log_figures(first.text(), second.text()),
        "made_while_full_and_down": made_while_full_and_down,
        "alive_while_full_and_down": alive_while_full_and_down,
        "first_exit_code": first_exit,
        "health_with_disk_full_after_broker_restart": reported_full,
        "memory_drained_to_broker": bool(drained),
        "free_bytes_at_second_start": free_at_second_start,
        "started_with_full_disk": bool(started_full),
        "health_from_second_start_with_disk_full": health_after_start,
        "second_exit_code_while_full": second_exit_early,
        "recovered": bool(recovered),
        "second_exit_code": second_exit,
        "disk_full_events": disk_events(observer),
        "claimed_queued_at_stop": claimed_queued(second.text()),
        "first_log_tail": first.text().splitlines()[-3:],
        "second_log_tail": second.text().splitlines()[-3:],
    }
    kept, _ = queue_file(state_disk)
    figures["not_received_in_queue_file"] = len(kept - received(observer))
    save(artifacts_dir, "broker-down", figures)

    assert made_while_full
    assert figures["traceback_lines"] == 0
    assert alive_while_full_and_down and first_exit == 0
    assert reported_full and drained
    assert free_at_second_start == 0 and started_full and health_after_start
    assert recovered and second_exit == 0
    # one line per change: full in the first run; full at the start of the second, then writable
    assert (figures["disk_full_lines"], figures["disk_writable_lines"]) == (2, 1)
    # The second run's episode, start and end. The first run's `start` went into memory with the
    # broker down and, like any message there, may be among the dropped (health said disk_full).
    events = figures["disk_full_events"]
    assert [phase for _, phase in events[-2:]] == ["start", "end"] and events[-1][0] == events[-2][0]
    assert len(events) in (2, 3)
    assert figures["dropped_counter"] > 0, "the 16 KiB memory bound was reached while the broker was down"
    assert figures["lost"] == figures["dropped_counter"], "dropped counts exactly what never arrived"
    assert figures["claimed_queued_at_stop"] == figures["not_received_in_queue_file"]
