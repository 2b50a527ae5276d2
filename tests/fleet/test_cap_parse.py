"""CAP 1.2 documents, pure (fleet/broadcast/cap.py): valid alerts read as they are written, every kind of
invalid one refused with the element's path, XML bombs and external entities refused before expansion,
and the mapping rules (level, voice, text, areas over wards and coordinates)."""

import base64
import hashlib
import itertools
import random
import time
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fleet.broadcast import cap
from fleet.broadcast.cap import Area, Circle, Info, Place
from fleet.broadcast.models import Level
from tests.fleet.cap_alerts import BILLION_LAUGHS, alert, area, external_entity, info, reference, resource

TAN_PHU_SQUARE = "11.52,106.88 11.52,106.90 11.54,106.90 11.54,106.88 11.52,106.88"


def problems(document: bytes) -> list[tuple[str, str]]:
    with pytest.raises(cap.CapInvalid) as refused:
        cap.parse(document)
    return [(p.path, p.message) for p in refused.value.problems]


def test_a_vietnamese_alert_with_a_polygon_and_audio() -> None:
    wav = b"RIFF....WAVEfmt "  # parse does not judge the audio: the library does
    document = alert(sent="2026-12-01T06:30:00+07:00", infos=[info(
        effective="2026-12-01T07:00:00+07:00", expires="2026-12-01T19:00:00+07:00",
        resources=[resource(deref=base64.encodebytes(wav).decode(), digest=hashlib.sha1(wav).hexdigest(),
                            size=len(wav))],
        areas=[area("Phường Tân Phú, Phường Tân Bình", polygons=[TAN_PHU_SQUARE], circles=["11.53,106.89 0.5"],
                    geocodes=[("ward", "25216")])])])
    parsed = cap.parse(document)
    assert (parsed.identifier, parsed.status, parsed.msg_type, parsed.scope) == ("DX-2026-0001", "Actual", "Alert",
                                                                                 "Public")
    assert parsed.sent == datetime(2026, 12, 1, 6, 30, tzinfo=timezone(timedelta(hours=7)))
    (one,) = parsed.infos
    assert (one.language, one.event, one.urgency, one.severity, one.certainty) == (
        "vi-VN", "Bão số 9", "Expected", "Severe", "Likely")
    assert one.description is not None and "gió giật cấp 10" in one.description
    assert one.expires == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    (res,) = one.resources
    assert res.is_audio and res.content == wav
    (where,) = one.areas
    assert where.polygons[0][0] == (11.52, 106.88) and len(where.polygons[0]) == 5
    assert where.circles == (Circle(11.53, 106.89, 0.5),)
    assert cap.level_of(one) == Level.PRIORITY and cap.voice_of(one.language) == "vi"
    assert cap.title_of(one) == "CAP: Cảnh báo bão số 9"


def test_utc_as_minus_zero_and_an_xml_signature_at_the_end() -> None:
    signature = '<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>'
    document = alert(sent="2026-12-01T00:00:00-00:00").replace(b"</alert>", signature.encode() + b"</alert>")
    assert cap.parse(document).sent == datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("document", "expected"), [
    # required elements missing
    (alert(identifier=""), ("/alert/identifier", "empty")),
    (alert().replace(b"<scope>Public</scope>", b""), ("/alert/scope", "required, missing")),
    (alert(infos=[info(event=None)]), ("/alert/info[1]/event", "required, missing")),  # type: ignore[arg-type]
    (alert(infos=[info().replace("<category>Met</category>", "")]), ("/alert/info[1]/category", "required, missing")),
    (alert(infos=[info().replace("<certainty>Likely</certainty>", "")]),
     ("/alert/info[1]/certainty", "required, missing")),
    (alert(infos=[info(areas=[area().replace("<areaDesc>Phường Tân Phú</areaDesc>", "")])]),
     ("/alert/info[1]/area[1]/areaDesc", "required, missing")),
    (alert(infos=[info(resources=[resource().replace("<mimeType>audio/x-wav</mimeType>", "")])]),
     ("/alert/info[1]/resource[1]/mimeType", "required, missing")),
    # enumerations
    (alert(status="Real"), ("/alert/status", "one of Actual, Exercise, System, Test, Draft")),
    (alert(msg_type="Notice"), ("/alert/msgType", "one of Alert, Update, Cancel, Ack, Error")),
    (alert(scope="Everyone"), ("/alert/scope", "one of Public, Restricted, Private")),
    (alert(infos=[info(category="Weather")]), ("/alert/info[1]/category[1]", "one of Geo, Met, Safety, Security, "
                                                "Rescue, Fire, Health, Env, Transport, Infra, CBRNE, Other")),
    (alert(infos=[info(urgency="Now")]), ("/alert/info[1]/urgency", "one of Immediate, Expected, Future, Past, "
                                                                     "Unknown")),
    (alert(infos=[info(severity="High")]), ("/alert/info[1]/severity", "one of Extreme, Severe, Moderate, Minor, "
                                                                       "Unknown")),
    (alert(infos=[info(certainty="Very Likely")]), ("/alert/info[1]/certainty", "one of Observed, Likely, Possible, "
                                                                                "Unlikely, Unknown")),
    # date-times: an offset, no letter, no fraction, a real date
    (alert(sent="2026-12-01T06:30:00Z"), ("/alert/sent", "a time zone letter is not allowed: write UTC as -00:00 "
                                                         "(2026-12-01T06:30:00-00:00)")),
    (alert(sent="2026-12-01T06:30:00"), ("/alert/sent", "a date-time as YYYY-MM-DDThh:mm:ss with an offset, e.g. "
                                                        "2026-12-01T06:30:00+07:00")),
    (alert(sent="2026-12-01T06:30:00.5+07:00"), ("/alert/sent", "a date-time as YYYY-MM-DDThh:mm:ss with an offset, "
                                                                "e.g. 2026-12-01T06:30:00+07:00")),
    (alert(infos=[info(expires="2026-02-30T06:30:00+07:00")]), ("/alert/info[1]/expires", "not a real date and time")),
    # identifiers, references
    (alert(identifier="DX 2026"), ("/alert/identifier", "an identifier must not hold spaces, commas, < or &")),
    (alert(sender="ioc,dx"), ("/alert/sender", "a sender must not hold spaces, commas, < or &")),
    (alert(identifier="A&amp;B"), ("/alert/identifier", "an identifier must not hold spaces, commas, < or &")),
    (alert(msg_type="Cancel", references="ioc@dx,DX-1"),
     ("/alert/references", "each reference is sender,identifier,sent; several are separated by whitespace")),
    (alert(msg_type="Cancel", references="ioc@dx,DX-1,yesterday"),
     ("/alert/references", "a date-time as YYYY-MM-DDThh:mm:ss with an offset, e.g. 2026-12-01T06:30:00+07:00")),
    # scope's companions
    (alert(scope="Restricted"), ("/alert/restriction", "required when scope is Restricted")),
    (alert(scope="Private"), ("/alert/addresses", "required when scope is Private")),
    # areas
    (alert(infos=[info(areas=[area(polygons=["11.5,106.8 11.6,106.8 11.5,106.8"])])]),
     ("/alert/info[1]/area[1]/polygon[1]", "a polygon needs at least 4 coordinate pairs, 3 given")),
    (alert(infos=[info(areas=[area(polygons=["11.5,106.8 11.6,106.8 11.6,106.9 11.5,106.9"])])]),
     ("/alert/info[1]/area[1]/polygon[1]", "a polygon must be closed: its first and last pairs the same")),
    (alert(infos=[info(areas=[area(polygons=["11.5;106.8 11.6,106.8 11.6,106.9 11.5;106.8"])])]),
     ("/alert/info[1]/area[1]/polygon[1]", "coordinates are lat,lon pairs of WGS 84 decimal degrees, separated by "
                                          "spaces")),
    (alert(infos=[info(areas=[area(polygons=["95,106.8 11.6,106.8 11.6,106.9 95,106.8"])])]),
     ("/alert/info[1]/area[1]/polygon[1]", "a latitude is within ±90 and a longitude within ±180")),
    (alert(infos=[info(areas=[area(circles=["11.53,106.89"])])]),
     ("/alert/info[1]/area[1]/circle[1]", "a circle is 'lat,lon radius' (radius in km)")),
    (alert(infos=[info(areas=[area(circles=["11.53,106.89 -2"])])]),
     ("/alert/info[1]/area[1]/circle[1]", "the radius is a number of kilometres, 0 or more")),
    # resources
    (alert(infos=[info(resources=[resource(deref="not base64!")])]),
     ("/alert/info[1]/resource[1]/derefUri", "not base64")),
    (alert(infos=[info(resources=[resource(deref="AAAA", digest="0" * 40)])]),
     ("/alert/info[1]/resource[1]/digest", "does not match the SHA-1 of the derefUri content")),
    (alert(infos=[info(resources=[resource(mime="audio")])]),
     ("/alert/info[1]/resource[1]/mimeType", "a MIME type as type/subtype (audio/wav)")),
    (alert(infos=[info(resources=[resource(size=-5)])]),  # type: ignore[arg-type]
     ("/alert/info[1]/resource[1]/size", "a whole number of bytes")),
    # structure
    (alert().replace(b"<sender>", b"<status>Actual</status><sender>", 1),
     ("/alert/status", "at most 1 allowed, 2 found")),
    (alert(infos=[info().replace("<event>Bão số 9</event>", "").replace("</certainty>",
                                                                         "</certainty><event>B</event>")]),
     ("/alert/info[1]/event", "out of order: <event> comes before <certainty> in CAP 1.2")),
    (alert(infos=[info(extra="<priority>high</priority>")]),
     ("/alert/info[1]/priority", "no such element in CAP 1.2 here")),
    (alert(infos=[info(extra='<x:priority xmlns:x="urn:example">1</x:priority>')]),
     ("/alert/info[1]/priority", "an element of another namespace (urn:example) is not allowed here; CAP 1.2's is "
                                 "urn:oasis:names:tc:emergency:cap:1.2")),
])
def test_each_kind_of_invalid_alert_names_its_element(document: bytes, expected: tuple[str, str]) -> None:
    assert expected in problems(document)


def test_markup_inside_a_text_is_refused_not_read_as_text() -> None:
    raw = alert().replace(b"<event>B\xc3\xa3o s\xe1\xbb\x91 9</event>", b"<event><b>x</b></event>")
    assert ("/alert/info[1]/event", "holds elements; a text is expected") in problems(raw)


def test_not_cap_1_2() -> None:
    assert problems(alert(namespace="urn:oasis:names:tc:emergency:cap:1.1")) == [
        ("/alert", "the root element must be <alert> in urn:oasis:names:tc:emergency:cap:1.2 (this one is <alert> in "
                   "urn:oasis:names:tc:emergency:cap:1.1)")]
    assert problems(b"<feed/>")[0][0] == "/feed"


def test_a_problem_never_repeats_a_long_name_back() -> None:
    long_name = "x" * 100_000
    document = alert(infos=[info(extra=f"<{long_name}/>")])
    (path, message), *_ = problems(document)
    assert path == "/alert/info[1]/" + "x" * 39 + "…" and message == "no such element in CAP 1.2 here"
    (root,) = problems(f'<{long_name} xmlns="urn:{long_name}"/>'.encode())
    assert len(root[0]) + len(root[1]) < 300


def test_malformed_xml() -> None:
    assert problems(b"<alert><identifier>x</alert>") == [
        ("/", "not well-formed XML: mismatched tag (line 1, column 23)")]
    assert problems(b"")[0][1].startswith("not well-formed XML: no element found")


def test_xml_bombs_and_external_entities_are_refused_before_expansion() -> None:
    started = time.monotonic()
    assert problems(BILLION_LAUGHS) == [("/", "a DTD, an entity or an external reference is not allowed "
                                              "(DTDForbidden)")]
    assert time.monotonic() - started < 5  # nothing was expanded (10^10 characters would not be this quick)
    for target in ("file:///etc/passwd", "http://127.0.0.1:9/secret"):
        assert problems(external_entity(target)) == [("/", "a DTD, an entity or an external reference is not "
                                                           "allowed (DTDForbidden)")]


def test_oversize_and_the_problem_list_is_bounded() -> None:
    big = alert(note="x" * cap.DOCUMENT_MAX)
    assert problems(big) == [("/", f"the document is over {cap.DOCUMENT_MAX} bytes")]
    many = alert(infos=[info(urgency="Now", severity="High", certainty="?")] * 10)
    assert len(problems(many)) == cap.PROBLEMS_MAX


def test_polygon_matching_agrees_with_the_point_by_point_rule_and_is_bounded() -> None:
    rng = random.Random(12)
    for _ in range(50):
        ring = [(rng.uniform(11.4, 11.6), rng.uniform(106.8, 107.0)) for _ in range(rng.randint(3, 12))]
        ring.append(ring[0])  # any closed ring, self-crossing ones included
        points = [(rng.uniform(11.35, 11.65), rng.uniform(106.75, 107.05)) for _ in range(40)]
        points += ring[:2]  # a vertex's own latitude
        expected = []
        for lat, lon in points:  # the even-odd rule, point by point
            inside = False
            for (lat1, lon1), (lat2, lon2) in itertools.pairwise(ring):
                if (lat1 > lat) != (lat2 > lat) and lon < lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1):
                    inside = not inside
            expected.append(inside)
        assert cap.inside_polygon(points, ring) == expected
    # a zigzag across every speaker's latitude, 20,000 times: refused, not minutes of work
    zigzag = [(11.4 if i % 2 else 11.6, 106.9 + 1e-5 * i) for i in range(20_000)]
    many = [Place(f"s{i}", "W", 11.5 + 0.001 * (i % 50), 106.9 + 0.001 * (i // 50)) for i in range(300)]
    with pytest.raises(cap.CapRefused, match="too large to match"):
        cap.match_area([Area("x", polygons=((*zigzag, zigzag[0]),))], many)


def test_references_are_triples() -> None:
    refs = " ".join((reference("DX-1", "2026-12-01T06:30:00+07:00"), reference("DX-2", "2026-12-01T07:00:00+07:00")))
    parsed = cap.parse(alert(msg_type="Update", references=refs))
    assert [(r.identifier, r.sent.hour) for r in parsed.references] == [("DX-1", 6), ("DX-2", 7)]
    flood = " ".join(reference(f"DX-{i}", "2026-12-01T06:30:00+07:00") for i in range(101))
    assert ("/alert/references", "more than 100 references (the fleet's bound)") in problems(
        alert(msg_type="Cancel", references=flood))


def test_level_voice_info_and_text() -> None:
    def make(**fields: str) -> Info:
        base = {"language": "vi-VN", "categories": ("Met",), "event": "Bão", "urgency": "Expected",
                "severity": "Moderate", "certainty": "Likely"}
        return Info(**{**base, **fields})  # type: ignore[arg-type]

    assert cap.level_of(make(severity="Extreme")) == Level.EMERGENCY
    assert cap.level_of(make(urgency="Immediate", severity="Minor")) == Level.EMERGENCY
    assert cap.level_of(make(severity="Severe")) == Level.PRIORITY
    assert cap.level_of(make()) == Level.NORMAL
    assert [cap.voice_of(c) for c in ("vi", "vi-VN", "VI-vn", "en", "en-US", "en-GB", "fr-FR", "vie")] == [
        "vi", "vi", "vi", "en", "en", "en", None, None]
    two = cap.parse(alert(infos=[info(language="en-US", event="Storm"), info(language="vi-VN", event="Bão")]))
    chosen = cap.chosen_info(two)
    assert chosen is not None and chosen.event == "Bão"
    no_language = cap.parse(alert(infos=[info(language=None)]))
    assert no_language.infos[0].language == "en-US"  # CAP's default
    assert cap.speech_text(make(description="Mưa lớn.", instruction="Ở trong nhà.")) == ("Mưa lớn.\n\nỞ trong nhà.",
                                                                                           False)
    assert cap.speech_text(make(headline="Cảnh báo")) == ("Cảnh báo", False)
    assert cap.speech_text(make()) == ("Bão", False)
    long_text, cut = cap.speech_text(make(description="mưa " * 1000))
    assert cut and len(long_text) <= cap.TEXT_MAX and long_text.endswith("mưa")


PLACES = [Place("spk-a1", "Tân Phú", 11.53, 106.89), Place("spk-a2", "Tân Phú", 11.60, 106.95),
          Place("spk-b1", "Tân Bình", 11.531, 106.891), Place("spk-c1", "Tân Xuân", None, None),
          Place("spk-d1", "Tiến Thành", 11.45, 106.80)]


def test_wards_by_name() -> None:
    assert cap.names_ward("Phường Tân Phú và phường TÂN BÌNH", "Tân Bình")
    assert cap.names_ward("Phuong Tan Phu", "Tân Phú") is False  # diacritics distinguish names
    assert cap.names_ward("Phường Tân Phúc", "Tân Phú") is False  # whole words only
    # the same name in another Unicode form (decomposed) is the same name
    assert cap.names_ward(unicodedata.normalize("NFD", "Phường Tân Phú"), "Tân Phú")
    found = cap.match_area([Area("Phường Tân Phú; Phường Tân Xuân")], PLACES)
    assert found.wards == ("Tân Phú", "Tân Xuân") and found.devices == ()
    assert found.speakers == ("spk-a1", "spk-a2", "spk-c1")


def test_shapes_over_the_speakers_coordinates() -> None:
    square = ((11.52, 106.88), (11.52, 106.90), (11.54, 106.90), (11.54, 106.88), (11.52, 106.88))
    assert cap.in_polygon((11.53, 106.89), square) and not cap.in_polygon((11.60, 106.95), square)
    assert cap.distance_km((11.53, 106.89), (11.53, 106.89)) == 0
    assert 11.0 < cap.distance_km((11.0, 106.0), (11.1, 106.0)) < 11.2  # 0.1° of latitude ≈ 11.1 km
    # the square holds spk-a1 (Tân Phú, not all of its speakers) and spk-b1 (all of Tân Bình's): a ward and a speaker
    found = cap.match_area([Area("vùng trũng", polygons=(square,))], PLACES)
    assert (found.wards, found.devices, found.in_shapes) == (("Tân Bình",), ("spk-a1",), ("spk-a1", "spk-b1"))
    # a circle of 2 km around spk-d1
    ring = cap.match_area([Area("quanh chợ", circles=(Circle(11.45, 106.80, 2.0),))], PLACES)
    assert ring.speakers == ("spk-d1",) and ring.wards == ("Tiến Thành",)
    # no speaker has coordinates: said so, and only names match
    blind = cap.match_area([Area("Phường Tân Xuân", polygons=(square,))], [Place("spk-c1", "Tân Xuân")])
    assert blind.speakers == ("spk-c1",) and "no speaker has coordinates" in blind.notes[0]
