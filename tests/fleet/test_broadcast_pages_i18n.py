"""The pages' message catalogue (fleet/web/i18n.py): both languages hold the same keys with the same
placeholders, every key the templates and the page modules use exists, the language is chosen
as documented, and the broadcast form writes the RRULE the API then checks."""

import re
import string
from pathlib import Path

import pytest

from fleet.assets.models import AssetKind
from fleet.broadcast.conflicts import Conflict
from fleet.broadcast.emergency import ACKED, CANCELLED, FALLBACK, SENT, WAITING_CLIP
from fleet.broadcast.models import BroadcastStatus, Level, ReceiptState
from fleet.relay.message import SEVERITIES
from fleet.web import audio_pages, broadcast_pages, relay_pages
from fleet.web.broadcast_form import RECURRENCES, WEEKDAYS, BroadcastForm, recurrence_of
from fleet.web.i18n import LANGUAGES, catalogue, choose, translate

WEB = Path(broadcast_pages.__file__).parent
TEMPLATE_KEY = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["'](?!\s*~)""")  # not a family: t("level." ~ x)
PYTHON_KEY = re.compile(r"""\btr\(\s*["']([a-z0-9_.]+)["']""")
# keys the templates and modules build from a value: each family with every value it can take
FAMILIES = {
    "level.": [level.value for level in Level],
    "status.": [status.value for status in BroadcastStatus],
    "done.": sorted(broadcast_pages.DONE | audio_pages.DONE),
    "rec.": list(RECURRENCES),
    "weekday.": list(WEEKDAYS),
    "day.short.": [str(i) for i in range(7)],
    "day.long.": [str(i) for i in range(7)],
    "dispatch.": [WAITING_CLIP, SENT, ACKED, FALLBACK, CANCELLED],
    "audio.voice_": ["vi", "en"],
    "targets.": ["wards", "tags", "devices"],
    "reason.": ["level", "order", "older"],
    "review.wins.": ["this", "other"],
    "receipt.": [state.value for state in ReceiptState],
    # the relay pages (fleet/web/relay_pages.py)
    "relay.status.": ["pending", "delivered", "dead"],
    "relay.done.": list(relay_pages.DONE),
    "relay.keep.": [str(s) for s in relay_pages.ROTATE_CHOICES],
    "relay.new_": ["webhook", "mqtt"],
    "relay.url_help_": ["webhook", "mqtt"],
    "relay.f.": [*relay_pages.NUMBERS, *relay_pages.LISTS, *relay_pages.CHOICES, "name", "kind", "url", "topic",
                 "username", "password", "ca_pem", "min_severity"],
    "relay.error.": ["no_endpoint", "no_route"],
    # the live feed's page (fleet/web/live_pages.py)
    "live.category.": ["security", "traffic_safety", "other"],
    "live.phase.": ["start", "update", "end", "once"],
    "live.severity.": list(SEVERITIES),
    "assets.kind.": [kind.value for kind in AssetKind],  # the asset pages (fleet/web/asset_pages.py)
    "field.": ["title", "clip_id", "level", "targets", "start", "rrule", "until", "count", "exceptions", "order",
               "version", "text", "voice", "confirm", "dry_run"],
}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogues_hold_the_same_keys_and_placeholders() -> None:
    vi, en = catalogue("vi"), catalogue("en")
    assert LANGUAGES[0] == "vi"
    assert set(vi) == set(en)
    for key in vi:
        assert vi[key].strip() and en[key].strip(), key
        assert placeholders(vi[key]) == placeholders(en[key]), key
    # written in Vietnamese (with its diacritics), not English left in place
    words = [key for key in vi if re.search(r"[a-z]{3}", vi[key]) and not key.startswith("fmt.")]
    same = [key for key in words if vi[key] == en[key]]
    assert len(same) <= 4, same
    accented = [key for key in words if re.search(r"[^\x00-\x7f]", vi[key])]
    assert len(accented) >= 0.9 * len(words)
    assert vi["nav.broadcasts"] == "Lịch phát thanh" and vi["level.emergency"] == "Khẩn cấp"


def test_every_key_the_pages_use_exists() -> None:
    used: set[str] = set()
    for template in (WEB / "templates").glob("*.html"):
        used.update(TEMPLATE_KEY.findall(template.read_text(encoding="utf-8")))
    for module in ("broadcast_pages.py", "broadcast_kit.py", "audio_pages.py", "emergency_pages.py", "relay_pages.py"):
        used.update(PYTHON_KEY.findall((WEB / module).read_text(encoding="utf-8")))
    for family, values in FAMILIES.items():
        used.update(family + value for value in values)
    assert len(used) > 150
    missing = sorted(key for key in used if key not in catalogue("vi"))
    assert missing == []
    # the templates' dynamic keys are among the families above
    for template in (WEB / "templates").glob("*.html"):
        for family in re.findall(r"""t\(\s*["']([a-z0-9_.]+)["']\s*~""", template.read_text(encoding="utf-8")):
            assert family in FAMILIES, (template.name, family)
    assert set(Conflict.__dataclass_fields__) >= {"winner", "reason"}


def test_a_missing_key_shows_itself_and_placeholders_are_filled() -> None:
    assert translate("vi", "no.such.key") == "no.such.key"
    assert translate("vi", "review.speakers", n=3) == "Số loa sẽ phát: 3"
    assert translate("en", "fmt.datetime", dow="Mon", year=2026, month=12, day=1, hour=6, minute=5) == \
        "Mon 2026-12-01 06:05"
    assert translate("vi", "fmt.datetime", dow="T2", year=2026, month=12, day=1, hour=6, minute=5) == \
        "T2 01/12/2026 06:05"
    with pytest.raises(ValueError):
        catalogue("fr")


@pytest.mark.parametrize(("query", "cookie", "accept", "chosen"), [
    (None, None, None, "vi"),
    (None, None, "en-US,en;q=0.9", "en"),
    (None, None, "fr-FR, de;q=0.9", "vi"),
    (None, None, "fr;q=1, en;q=0.5, vi;q=0.8", "vi"),
    (None, None, "en;q=0, vi;q=0.1", "vi"),
    (None, None, "en;q=abc, en-GB", "en"),
    (None, "en", "vi", "en"),
    ("vi", "en", "en", "vi"),
    ("xx", "en", None, "en"),
    ("xx", "zz", None, "vi"),
])
def test_the_language_of_a_request(query: str | None, cookie: str | None, accept: str | None, chosen: str) -> None:
    assert choose(query, cookie, accept) == chosen


@pytest.mark.parametrize(("fields", "rule"), [
    ({"recurrence": ["none"]}, ""),
    ({"recurrence": ["daily"]}, "FREQ=DAILY"),
    ({"recurrence": ["weekly"], "days": ["WE", "MO", "XX"]}, "FREQ=WEEKLY;BYDAY=MO,WE"),
    ({"recurrence": ["weekly"]}, "FREQ=WEEKLY;BYDAY=MO"),
    ({"recurrence": ["monthly"]}, "FREQ=MONTHLY"),
    ({"recurrence": ["rrule"], "rrule": ["FREQ=YEARLY;BYMONTH=9;BYMONTHDAY=2"]}, "FREQ=YEARLY;BYMONTH=9;BYMONTHDAY=2"),
    ({"recurrence": ["bogus"], "rrule": ["FREQ=DAILY"]}, ""),
])
def test_the_form_writes_the_rule(fields: dict[str, list[str]], rule: str) -> None:
    form = BroadcastForm.parse(fields)
    assert form.rule() == rule
    assert recurrence_of(rule)[0] == (form.recurrence if form.recurrence != "rrule" or rule else "none")


def test_the_form_body_is_the_apis_request() -> None:
    form = BroadcastForm.parse({"title": [" Tin sáng "], "clip_id": ["4"], "wards": ["Tân Phú", ""],
                                "tags": ["chợ, trường"], "devices": ["spk-1"], "start": ["2027-01-01T06:30"],
                                "recurrence": ["none"], "until": ["2027-02-01"], "count": ["3"],
                                "exceptions": ["2027-01-02, 2027-01-03\n2027-01-04"], "order": ["5"]})
    body = form.body()
    assert body == {"title": "Tin sáng", "clip_id": "4", "level": "normal",
                    "targets": {"wards": ["Tân Phú"], "tags": ["chợ", "trường"], "devices": ["spk-1"]},
                    "start": "2027-01-01T06:30", "rrule": "", "until": None, "count": None,  # once: none
                    "exceptions": ["2027-01-02", "2027-01-03", "2027-01-04"], "order": "5"}
    assert recurrence_of("FREQ=WEEKLY;BYDAY=FR,MO") == ("weekly", ["MO", "FR"], "")
    assert recurrence_of("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO") == ("rrule", [], "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO")
