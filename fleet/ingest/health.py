"""What /healthz says about the ingest: is the fleet really receiving and storing?

A socket flag is not enough: a broker can keep the socket and drop the subscription, a loop can
die or hang. The report combines the link (connected, subscription granted, the last probe
round trip), the supervisor (loop alive, restarts) and the loop itself (its last turn, the
queue), and lists every problem in one line each.
"""

import time
from typing import Any

from fleet.ingest.link import MqttLink
from fleet.ingest.stats import IngestStats
from fleet.ingest.supervisor import Supervisor

# probes that may fail to come back before the link counts as not delivering; generous, because a
# probe queues behind the backlog the broker holds for the fleet
PROBE_MISSES = 6
STALL_S = 60.0  # a loop that has not turned for this long is stuck (a database that does not answer)


def ingest_health(link: MqttLink, supervisor: Supervisor, stats: IngestStats) -> dict[str, Any]:
    state = link.state()
    probe_window = round(PROBE_MISSES * link.probe_s, 1)
    problems: list[str] = []
    if not state.connected:
        problems.append("not connected to the MQTT broker" + (f": {state.refused}" if state.refused else ""))
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
        "ingest_running": supervisor.running,
        "ingest_restarts": supervisor.restarts,
        "ingest_loop_age_s": loop_age,
        "last_message_at": stats.last_message_at,
        "queue_depth": link.depth(),
        "queue_max": link.queue_max,
    }
