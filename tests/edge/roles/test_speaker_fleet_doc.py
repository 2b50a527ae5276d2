"""The Pi speaker role with the document the fleet's delivery sends (docs/broadcasts.md, Delivery):
entry ids `b<broadcast id>.<unix s>`, a `volume` per entry, the `clips` list fetched in the
background; then the fleet's `speaker.clip_fetch` for a clip the background fetch already holds is
answered `ok` from the cache (no second download writing the same `.part` file), and the `done`
map keeps only the ids of the schedule applied last."""

import sys
from pathlib import Path
from typing import Any

from contract import make_command, make_desired
from edge.agent import Agent
from edge.roles.speaker import SpeakerRole
from edge.statefile import read_json
from tests.edge.helpers import ConfigFactory, results_for, until
from tests.edge.roles.test_speaker import (  # noqa: F401 (clip_server, observer: fixtures)
    FAR,
    T0,
    ManualClock,
    clip_list,
    clip_server,
    observer,
    playback,
    roles_with,
)
from tests.support.mqtt_probe import Probe

# notes the file and volume it was given, then plays nothing (exit 0: completed)
PLAYER = """\
import sys
with open(sys.argv[1], "a") as f:
    f.write(sys.argv[2] + " " + sys.argv[3] + "\\n")
"""


async def test_the_fleets_document_plays_at_each_entrys_volume_and_a_held_clip_is_not_fetched_twice(
    edge_config: ConfigFactory,
    observer: Probe,  # noqa: F811
    device_id: str,
    tmp_path: Path,
    clip_server: tuple[str, dict[str, dict[str, Any]]],  # noqa: F811
) -> None:
    base, clips = clip_server
    clock = ManualClock(T0)
    log = tmp_path / "played.log"
    script = tmp_path / "player.py"
    script.write_text(PLAYER)
    settings = {"player": [sys.executable, str(script), str(log), "{file}", "{volume}"]}
    first, second = f"b41.{(T0 + 1000) // 1000}", f"b42.{(T0 + 2000) // 1000}"
    schedule = [{"id": first, "clip": "chime", "at": T0 + 1000, "volume": 35},
                {"id": second, "clip": "chime", "at": T0 + 2000}]
    doc = {"speaker": {"tz_min": 420, "volume": 80, "clips": clip_list(base, {"chime": clips["chime"]}),
                       "schedule": schedule}}
    async with Agent(edge_config(roles={"speaker": settings}), roles=roles_with(clock)) as agent:
        role = agent.roles["speaker"]
        assert isinstance(role, SpeakerRole)
        observer.publish(*make_desired(device_id, 1, doc), retain=True)
        await until(lambda: role.cache.has("chime", clips["chime"]["sha256"]), "the background fetch")

        # the served file changes: a second download would fail its checksum; the cache answers
        (tmp_path / "www" / "chime.wav").write_bytes(b"RIFF not the clip any more")
        args = {"name": "chime", "url": f"{base}/chime.wav", **clips["chime"]}
        observer.publish(*make_command(device_id, "f-1", "speaker.clip_fetch", args, FAR))
        answer = await until(lambda: results_for(observer, "f-1"), "the clip_fetch answer")
        assert answer[0]["status"] == "ok", answer
        assert answer[0]["detail"] == {"name": "chime", "bytes": clips["chime"]["bytes"],
                                       "sha256": clips["chime"]["sha256"]}

        clock.set(T0 + 2500)
        await until(lambda: len(playback(observer, second)) == 2 and len(playback(observer, first)) == 2,
                    "both entries played")
        assert playback(observer, first) == [("start", "started", None), ("end", "completed", None)]
        volumes = [line.split()[-1] for line in log.read_text().splitlines()]
        assert volumes == ["35", "80"]  # the entry's own, then the document's
        state = tmp_path / "state" / "speaker" / "speaker.json"
        assert set(read_json(state, {})["done"]) == {first, second}

        # the next document: the played entries gone, a new one ahead; done keeps only its ids
        later = {"speaker": {"tz_min": 420, "schedule": [{"id": "b43.1767300000", "clip": "chime",
                                                           "at": T0 + 3_600_000}]}}
        observer.publish(*make_desired(device_id, 2, later), retain=True)
        await until(lambda: role.schedule and role.schedule[0]["id"] == "b43.1767300000", "the new document")
        assert role._done == {}
