"""The pages call the API's route functions with the arguments FastAPI would give them, by name
(fleet/web/broadcast_kit.py `route_arguments`): every route function a page calls takes only what
the pages provide, so a route that grows a dependency the pages lack fails here, not as a 500."""

import inspect
from typing import Any

import pytest

from fleet.api.routes import audio, broadcasts, emergency, receipts
from fleet.web import broadcast_kit

CALLED = {  # route function: what the page passes itself
    broadcasts.create_broadcast: {"body"}, broadcasts.edit_broadcast: {"broadcast_id", "body"},
    broadcasts.cancel_broadcast: {"broadcast_id"}, broadcasts.repeat_broadcast: {"broadcast_id", "body"},
    broadcasts.get_broadcast: {"broadcast_id", "next_"}, broadcasts.broadcast_versions: {"broadcast_id"},
    receipts.receipts_summary: {"broadcast_id"},
    receipts.list_receipts: {"broadcast_id", "response", "occurrence", "state", "device", "limit", "offset"},
    emergency.emergency: {"body"}, audio.upload_clip: set(), audio.speak_clip: {"body"},
    audio.delete_clip: {"clip_id"}, audio.list_clips: {"response", "limit", "offset"}, audio.library_usage: set(),
}
PROVIDED = {"request", "runtime", "calendar", "library", "audit", "_"}


@pytest.mark.parametrize("route", list(CALLED), ids=lambda r: r.__name__)
def test_the_pages_provide_every_argument_of_the_routes_they_call(route: Any) -> None:
    required = {name for name, p in inspect.signature(route).parameters.items()
                if p.default is inspect.Parameter.empty}
    assert required <= CALLED[route] | PROVIDED, required - CALLED[route] - PROVIDED


def test_a_route_wanting_more_is_refused_by_name() -> None:
    async def wants_more(body: object, something_new: object) -> None:
        return None

    with pytest.raises(TypeError, match="wants_more: the pages do not provide something_new"):
        broadcast_kit.route_arguments(wants_more, None, None, body=1)  # type: ignore[arg-type]
