"""What /healthz says about the ingest: is the fleet really receiving and storing?

A socket flag is not enough: a broker can keep the socket and drop the subscription, a loop can
die or hang. The report combines the link (connected, subscription granted, the last probe
round trip), the supervisor (loop alive, restarts) and the loop itself (its last turn, the
queue), and lists every problem in one line each.
"""

import time
from typing import Any

from fleet.ingest.link import RECONNECT_MAX_S, LinkState, MqttLink
from fleet.ingest.stats import IngestStats
from fleet.ingest.supervisor import Supervisor

STALL_S = 60.0  # a loop that has not turned for this long is stuck (a database that does not answer)


def _not_connected(link: MqttLink, state: LinkState) -> str:
    why = f"not connected to the MQTT broker at {link.target!r}"
    if state.refused:
        return f"{why}: {state.refused}"
    if state.unreachable_for_s is not None:
        failures = state.connect_failures
        last = f", the last: {state.connect_error}" if state.connect_error else ""
        return (f"{why}: unreachable for {state.unreachable_for_s:.0f} s ({failures} failed attempt"
                f"{'' if failures == 1 else 's'}{last}; retrying at least every {RECONNECT_MAX_S} s)")
    return why


def ingest_health(link: MqttLink, supervisor: Supervisor, stats: IngestStats) -> dict[str, Any]:
    state = link.state()
    probe_window = link.probe_window_s
    problems: list[str] = []
    if not state.connected:
        problems.append(_not_connected(link, state))
    elif not state.subscribed:
        problems.append(state.refused or "the broker has not granted the fleet's subscription")
    else:
        quiet = state.probe_age_s if state.probe_age_s is not None else state.connected_for_s or 0.0
        if quiet > probe_window:
            problems.append(f"no probe has come back through the broker for {quiet:.0f} s: "
                            "the subscription does not deliver (or the ingest is that far behind)")
    loop_age = round(time.monotonic() - supervisor.ingest.turned_at, 1)
    if not supervisor.running:
        restart_in = (max(0.0, supervisor.restart_at - time.monotonic())
                      if supervisor.restart_at is not None else None)
        problems.append("the ingest loop is down" + (f", restart in {restart_in:.0f} s" if restart_in is not None
                                                       else "") + f" (last: {supervisor.last_death})")
    elif loop_age > STALL_S:
        problems.append(f"the ingest loop has not turned for {loop_age:.0f} s (is the database answering?)")
    return {
        "ok": not problems,
        "problems": problems,
        "mqtt_connected": state.connected,
        "subscribed": state.subscribed,
        "probe_age_s": state.probe_age_s,
        "probe_window_s": probe_window,
        "listening_for_s": state.listening_for_s,
        "ingest_running": supervisor.running,
        "ingest_restarts": supervisor.restarts,
        "ingest_loop_age_s": loop_age,
        "last_message_at": stats.last_message_at,
        "queue_depth": link.depth(),
        "queue_max": link.queue_max,
    }
