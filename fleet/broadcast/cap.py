"""CAP 1.2 alerts (OASIS Common Alerting Protocol, version 1.2): parse, validate, map to a broadcast.

Pure: no database, no HTTP, no files (docs/broadcasts.md, "CAP 1.2"). The checks follow the
standard's data dictionary: which elements an <alert>, <info>, <resource> and <area> hold, in
which order and how many times, the enumerations, the date-time form with its offset, identifiers
without spaces, commas or < and &, references as `sender,identifier,sent` triples, polygons of at
least four closed coordinate pairs, circles as `lat,lon radius`, derefUri as base64.

The document is parsed by defusedxml with no DTD at all: a DOCTYPE (hence every entity, internal
or external: billion laughs, XXE) is refused before anything is expanded or fetched.
"""

import base64
import binascii
import bisect
import hashlib
import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from fleet.broadcast.models import Level

NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"  # an XML signature may close an <alert>; it is not checked
DOCUMENT_MAX = 1_048_576  # bytes of XML
PROBLEMS_MAX = 20  # problems listed in one answer
NAME_MAX = 200  # the fleet's bound on identifier and sender (CAP sets none)
REFERENCES_MAX = 100  # the fleet's bound on the messages one alert references (each is looked up)
TEXT_MAX = 2000  # the library's text-to-speech bound (library.TEXT_MAX)
TARGETS_MAX = 200  # calendar.TARGETS_MAX
MATCH_STEPS_MAX = 2_000_000  # edge and circle tests when matching shapes to speakers (about a second)
EARTH_RADIUS_KM = 6371.0088

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
              "CBRNE", "Other")
RESPONSE_TYPES = ("Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

# CAP's date-time: seconds, and an offset; no fraction, no 'Z' (UTC is written -00:00)
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_SHA1_HEX = re.compile(r"[0-9A-Fa-f]{40}")


# -- errors ---------------------------------------------------------------------------------------


SHOWN_NAME_MAX = 40  # an unknown element's name or namespace, as a problem shows it (never the whole input)


def _shown(name: str) -> str:
    return name if len(name) <= SHOWN_NAME_MAX else name[: SHOWN_NAME_MAX - 1] + "…"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # the element's path, XPath-like: /alert/info[1]/area[2]/polygon[1]
    message: str


class CapError(Exception):
    status = 422


class CapInvalid(CapError):
    """The document is not XML we read, or not a valid CAP 1.2 alert: every problem found (at most PROBLEMS_MAX)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        shown = list(problems)[:PROBLEMS_MAX]
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in shown))
        self.problems = shown


class CapRefused(CapError):
    """A valid alert the fleet does not broadcast (not Actual, an Ack, expired, no speaker in its area, …)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# -- what an alert holds ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    sender: str
    identifier: str
    sent: datetime


@dataclass(frozen=True, slots=True)
class Resource:
    description: str
    mime_type: str
    size: int | None = None
    uri: str | None = None
    content: bytes | None = None  # derefUri, decoded
    digest: str | None = None

    @property
    def is_audio(self) -> bool:
        return self.mime_type.lower().startswith("audio/")


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


Point = tuple[float, float]  # (lat, lon), WGS 84


@dataclass(frozen=True, slots=True)
class Area:
    description: str
    polygons: tuple[tuple[Point, ...], ...] = ()
    circles: tuple[Circle, ...] = ()


@dataclass(frozen=True, slots=True)
class Info:
    language: str
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    references: tuple[Reference, ...] = ()
    note: str | None = None
    infos: tuple[Info, ...] = ()


# -- parsing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    least: int = 0
    most: int | None = 1  # None: any number


_ALERT = (_Slot("identifier", 1), _Slot("sender", 1), _Slot("sent", 1), _Slot("status", 1), _Slot("msgType", 1),
          _Slot("source"), _Slot("scope", 1), _Slot("restriction"), _Slot("addresses"), _Slot("code", most=None),
          _Slot("note"), _Slot("references"), _Slot("incidents"), _Slot("info", most=None))
_INFO = (_Slot("language"), _Slot("category", 1, None), _Slot("event", 1), _Slot("responseType", most=None),
         _Slot("urgency", 1), _Slot("severity", 1), _Slot("certainty", 1), _Slot("audience"),
         _Slot("eventCode", most=None), _Slot("effective"), _Slot("onset"), _Slot("expires"), _Slot("senderName"),
         _Slot("headline"), _Slot("description"), _Slot("instruction"), _Slot("web"), _Slot("contact"),
         _Slot("parameter", most=None), _Slot("resource", most=None), _Slot("area", most=None))
_RESOURCE = (_Slot("resourceDesc", 1), _Slot("mimeType", 1), _Slot("size"), _Slot("uri"), _Slot("derefUri"),
             _Slot("digest"))
_AREA = (_Slot("areaDesc", 1), _Slot("polygon", most=None), _Slot("circle", most=None), _Slot("geocode", most=None),
         _Slot("altitude"), _Slot("ceiling"))
_PAIR = (_Slot("valueName", 1), _Slot("value", 1))  # eventCode, parameter, geocode


class _Reader:
    """Walks the document once, collecting every problem rather than stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: str, message: str) -> None:
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(Problem(path, message))

    def children(self, element: Element, path: str, slots: Sequence[_Slot], *,
                 signature_at_end: bool = False) -> dict[str, list[tuple[str, Element]]]:
        """The element's children by name, each with its path; problems for unknown, misplaced, missing
        or repeated ones."""
        order = {slot.name: i for i, slot in enumerate(slots)}
        found: dict[str, list[tuple[str, Element]]] = {slot.name: [] for slot in slots}
        if (element.text or "").strip():
            self.bad(path, "text outside the child elements")
        reached = -1
        last_name = ""
        foreign = False
        for child in element:
            if (child.tail or "").strip():
                self.bad(path, "text outside the child elements")
            namespace, _, name = str(child.tag).rpartition("}")
            namespace = namespace.lstrip("{")
            if namespace != NS:
                if signature_at_end and namespace == DSIG_NS:
                    foreign = True
                    continue
                self.bad(f"{path}/{_shown(name)}", f"an element of another namespace ({_shown(namespace) or 'none'}) "
                                                   f"is not allowed here; CAP 1.2's is {NS}")
                continue
            if foreign:
                self.bad(f"{path}/{_shown(name)}", "nothing may follow the signature")
            if name not in order:
                self.bad(f"{path}/{_shown(name)}", "no such element in CAP 1.2 here")
                continue
            items = found[name]
            child_path = f"{path}/{name}" if slots[order[name]].most == 1 else f"{path}/{name}[{len(items) + 1}]"
            if order[name] < reached:
                self.bad(child_path, f"out of order: <{name}> comes before <{last_name}> in CAP 1.2")
            else:
                reached, last_name = order[name], name
            items.append((child_path, child))
        for slot in slots:
            count = len(found[slot.name])
            if count < slot.least:
                self.bad(f"{path}/{slot.name}", "required, missing")
            elif slot.most is not None and count > slot.most:
                self.bad(f"{path}/{slot.name}", f"at most {slot.most} allowed, {count} found")
        return found

    def text(self, found: dict[str, list[tuple[str, Element]]], name: str, *, required: bool = False) -> str | None:
        """The first `name` child's text, stripped; None when absent or empty (a problem if required)."""
        items = found.get(name) or []
        if not items:
            return None
        path, element = items[0]
        return self.text_of(path, element, required=required)

    def text_of(self, path: str, element: Element, *, required: bool = False) -> str | None:
        if len(element):
            self.bad(path, "holds elements; a text is expected")
            return None
        value = (element.text or "").strip()
        if not value:
            if required:
                self.bad(path, "empty")
            return None
        return value

    def texts(self, found: dict[str, list[tuple[str, Element]]], name: str) -> list[tuple[str, str]]:
        out = []
        for path, element in found.get(name) or []:
            value = self.text_of(path, element, required=True)
            if value is not None:
                out.append((path, value))
        return out

    def choice(self, found: dict[str, list[tuple[str, Element]]], name: str, allowed: Sequence[str]) -> str:
        value = self.text(found, name, required=True)
        if value is not None and value not in allowed:
            self.bad(found[name][0][0], f"one of {', '.join(allowed)}")
        return value or ""

    def when(self, found: dict[str, list[tuple[str, Element]]], name: str, *, required: bool = False
             ) -> datetime | None:
        value = self.text(found, name, required=required)
        if value is None:
            return None
        return self.datetime_of(found[name][0][0], value)

    def datetime_of(self, path: str, value: str) -> datetime | None:
        if value.endswith("Z") or value.endswith("z"):
            self.bad(path, "a time zone letter is not allowed: write UTC as -00:00 (2026-12-01T06:30:00-00:00)")
            return None
        if not _DATETIME.fullmatch(value):
            self.bad(path, "a date-time as YYYY-MM-DDThh:mm:ss with an offset, e.g. 2026-12-01T06:30:00+07:00")
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.bad(path, "not a real date and time")
            return None

    def name(self, path: str, value: str | None, what: str) -> str:
        """An identifier or a sender: no whitespace, commas, < or &."""
        if value is None:
            return ""
        if any(c.isspace() for c in value) or any(c in value for c in ",<&"):
            self.bad(path, f"{what} must not hold spaces, commas, < or &")
        elif len(value) > NAME_MAX:
            self.bad(path, f"{what} longer than {NAME_MAX} characters (the fleet's bound)")
        return value

    def pairs(self, found: dict[str, list[tuple[str, Element]]], name: str) -> None:
        for path, element in found.get(name) or []:
            inner = self.children(element, path, _PAIR)
            self.text(inner, "valueName", required=True)
            self.text(inner, "value")


def parse(document: bytes) -> Alert:
    """The alert in a CAP 1.2 document; CapInvalid listing every problem found."""
    if len(document) > DOCUMENT_MAX:
        raise CapInvalid([Problem("/", f"the document is over {DOCUMENT_MAX} bytes")])
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise CapInvalid([Problem("/", "a DTD, an entity or an external reference is not allowed "
                                       f"({type(err).__name__})")]) from err
    except ParseError as err:
        line, column = getattr(err, "position", (0, 0))
        reason = str(err).split(":")[0]
        raise CapInvalid([Problem("/", f"not well-formed XML: {reason} (line {line}, column {column + 1})")]) from err
    reader = _Reader()
    namespace, _, name = str(root.tag).rpartition("}")
    if name != "alert" or namespace.lstrip("{") != NS:
        got = _shown(namespace.lstrip("{")) or "no namespace"
        raise CapInvalid([Problem(f"/{_shown(name)}", f"the root element must be <alert> in {NS} (this one is "
                                                      f"<{_shown(name)}> in {got})")])
    alert = _alert(reader, root)
    if reader.problems:
        raise CapInvalid(reader.problems)
    assert alert is not None
    return alert


def _alert(reader: _Reader, root: Element) -> Alert | None:
    path = "/alert"
    found = reader.children(root, path, _ALERT, signature_at_end=True)
    identifier = reader.name(f"{path}/identifier", reader.text(found, "identifier", required=True), "an identifier")
    sender = reader.name(f"{path}/sender", reader.text(found, "sender", required=True), "a sender")
    sent = reader.when(found, "sent", required=True)
    status = reader.choice(found, "status", STATUSES)
    msg_type = reader.choice(found, "msgType", MSG_TYPES)
    scope = reader.choice(found, "scope", SCOPES)
    if scope == "Restricted" and reader.text(found, "restriction") is None:
        reader.bad(f"{path}/restriction", "required when scope is Restricted")
    if scope == "Private" and reader.text(found, "addresses") is None:
        reader.bad(f"{path}/addresses", "required when scope is Private")
    reader.texts(found, "code")
    references = _references(reader, found)
    infos = [_info(reader, p, e) for p, e in found["info"]]
    if sent is None:
        return None
    return Alert(identifier, sender, sent, status, msg_type, scope, references, reader.text(found, "note"),
                 tuple(i for i in infos if i is not None))


def _references(reader: _Reader, found: dict[str, list[tuple[str, Element]]]) -> tuple[Reference, ...]:
    value = reader.text(found, "references")
    if value is None:
        return ()
    path = found["references"][0][0]
    out = []
    triples = value.split()
    if len(triples) > REFERENCES_MAX:
        reader.bad(path, f"more than {REFERENCES_MAX} references (the fleet's bound)")
        return ()
    for triple in triples:
        parts = triple.split(",")
        if len(parts) != 3:
            reader.bad(path, "each reference is sender,identifier,sent; several are separated by whitespace")
            continue
        sent = reader.datetime_of(path, parts[2])
        if not parts[0] or not parts[1]:
            reader.bad(path, "a reference needs its sender and its identifier")
        elif sent is not None:
            out.append(Reference(reader.name(path, parts[0], "a sender"), reader.name(path, parts[1], "an identifier"),
                                 sent))
    return tuple(out)


def _info(reader: _Reader, path: str, element: Element) -> Info | None:
    found = reader.children(element, path, _INFO)
    language = reader.text(found, "language") or "en-US"  # CAP's default
    if not _LANGUAGE.fullmatch(language):
        reader.bad(f"{path}/language", "a language code as RFC 3066 writes it (vi-VN, en-US)")
    categories = []
    for item_path, value in reader.texts(found, "category"):
        if value not in CATEGORIES:
            reader.bad(item_path, f"one of {', '.join(CATEGORIES)}")
        categories.append(value)
    for item_path, value in reader.texts(found, "responseType"):
        if value not in RESPONSE_TYPES:
            reader.bad(item_path, f"one of {', '.join(RESPONSE_TYPES)}")
    event = reader.text(found, "event", required=True) or ""
    urgency = reader.choice(found, "urgency", URGENCIES)
    severity = reader.choice(found, "severity", SEVERITIES)
    certainty = reader.choice(found, "certainty", CERTAINTIES)
    reader.pairs(found, "eventCode")
    reader.pairs(found, "parameter")
    effective, onset, expires = (reader.when(found, name) for name in ("effective", "onset", "expires"))
    resources = [_resource(reader, p, e) for p, e in found["resource"]]
    areas = [_area(reader, p, e) for p, e in found["area"]]
    for name in ("audience", "web", "contact"):
        reader.text(found, name)
    return Info(language, tuple(categories), event, urgency, severity, certainty, effective, onset, expires,
                reader.text(found, "senderName"), reader.text(found, "headline"), reader.text(found, "description"),
                reader.text(found, "instruction"), tuple(r for r in resources if r is not None),
                tuple(a for a in areas if a is not None))


def _resource(reader: _Reader, path: str, element: Element) -> Resource | None:
    found = reader.children(element, path, _RESOURCE)
    description = reader.text(found, "resourceDesc", required=True)
    mime_type = reader.text(found, "mimeType", required=True)
    if mime_type is not None and not _MIME.fullmatch(mime_type):
        reader.bad(f"{path}/mimeType", "a MIME type as type/subtype (audio/wav)")
    size_text = reader.text(found, "size")
    size = None
    if size_text is not None:
        if size_text.isascii() and size_text.isdigit():
            size = int(size_text)
        else:
            reader.bad(f"{path}/size", "a whole number of bytes")
    content = None
    encoded = reader.text(found, "derefUri")
    if encoded is not None:
        try:
            content = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            reader.bad(f"{path}/derefUri", "not base64")
    digest = reader.text(found, "digest")
    if content is not None and digest is not None and _SHA1_HEX.fullmatch(digest):
        if hashlib.sha1(content, usedforsecurity=False).hexdigest() != digest.lower():
            reader.bad(f"{path}/digest", "does not match the SHA-1 of the derefUri content")
    if description is None or mime_type is None:
        return None
    return Resource(description, mime_type, size, reader.text(found, "uri"), content, digest)


def _area(reader: _Reader, path: str, element: Element) -> Area | None:
    found = reader.children(element, path, _AREA)
    description = reader.text(found, "areaDesc", required=True)
    polygons = []
    for item_path, value in reader.texts(found, "polygon"):
        points = [_point(reader, item_path, pair) for pair in value.split()]
        if any(p is None for p in points):
            continue
        ring = tuple(p for p in points if p is not None)
        if len(ring) < 4:
            reader.bad(item_path, f"a polygon needs at least 4 coordinate pairs, {len(ring)} given")
        elif ring[0] != ring[-1]:
            reader.bad(item_path, "a polygon must be closed: its first and last pairs the same")
        else:
            polygons.append(ring)
    circles = []
    for item_path, value in reader.texts(found, "circle"):
        parts = value.split()
        centre = _point(reader, item_path, parts[0]) if len(parts) == 2 else None
        if len(parts) != 2:
            reader.bad(item_path, "a circle is 'lat,lon radius' (radius in km)")
        elif centre is not None:
            if not _NUMBER.fullmatch(parts[1]) or float(parts[1]) < 0:
                reader.bad(item_path, "the radius is a number of kilometres, 0 or more")
            else:
                circles.append(Circle(centre[0], centre[1], float(parts[1])))
    reader.pairs(found, "geocode")
    for name in ("altitude", "ceiling"):
        height = reader.text(found, name)
        if height is not None and not _NUMBER.fullmatch(height):
            reader.bad(f"{path}/{name}", "a number (feet)")
    if found["ceiling"] and not found["altitude"]:
        reader.bad(f"{path}/ceiling", "only with an altitude")
    if description is None:
        return None
    return Area(description, tuple(polygons), tuple(circles))


def _point(reader: _Reader, path: str, pair: str) -> Point | None:
    parts = pair.split(",")
    if len(parts) != 2 or not all(_NUMBER.fullmatch(p) for p in parts):
        reader.bad(path, "coordinates are lat,lon pairs of WGS 84 decimal degrees, separated by spaces")
        return None
    lat, lon = float(parts[0]), float(parts[1])
    if not -90 <= lat <= 90 or not -180 <= lon <= 180:
        reader.bad(path, "a latitude is within ±90 and a longitude within ±180")
        return None
    return lat, lon


# -- mapping to a broadcast -------------------------------------------------------------------------


def level_of(info: Info) -> Level:
    if info.severity == "Extreme" or info.urgency == "Immediate":
        return Level.EMERGENCY
    if info.severity == "Severe":
        return Level.PRIORITY
    return Level.NORMAL


def voice_of(language: str) -> str | None:
    """The text-to-speech voice for a CAP language code: vi, vi-VN → vi; en, en-* → en; else None."""
    primary = language.split("-")[0].lower()
    return primary if primary in ("vi", "en") else None


def chosen_info(alert: Alert) -> Info | None:
    """The <info> the broadcast is made from: the first in Vietnamese, else in English, else the first."""
    for voice in ("vi", "en"):
        for info in alert.infos:
            if voice_of(info.language) == voice:
                return info
    return alert.infos[0] if alert.infos else None


def speech_text(info: Info) -> tuple[str, bool]:
    """What text-to-speech reads: description and instruction (else the headline, else the event), and
    whether it had to be cut to the library's TEXT_MAX characters (at a word's end)."""
    parts = [p for p in (info.description, info.instruction) if p] or [info.headline or info.event]
    text = "\n\n".join(parts)
    if len(text) <= TEXT_MAX:
        return text, False
    cut = text[:TEXT_MAX]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > TEXT_MAX // 2 else cut).rstrip(), True


def title_of(info: Info) -> str:
    return f"CAP: {info.headline or info.event}"[:200]


@dataclass(frozen=True, slots=True)
class Place:
    """A speaker, where it is: its ward and, when recorded, its coordinates."""

    device_id: str
    ward: str
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class AreaMatch:
    wards: tuple[str, ...]  # the targets' wards: named in an areaDesc, or all of whose speakers are in a shape
    devices: tuple[str, ...]  # the targets' single speakers: in a shape, their ward not whole in it
    speakers: tuple[str, ...]  # every speaker matched
    named_wards: tuple[str, ...]  # wards an areaDesc names
    in_shapes: tuple[str, ...]  # speakers inside a polygon or circle
    notes: tuple[str, ...] = field(default=())


def _folded(text: str) -> str:
    # diacritics are kept: Tân Phú and Tấn Phú are different names; case and Unicode form are not
    return unicodedata.normalize("NFC", text).casefold()


def names_ward(description: str, ward: str) -> bool:
    """Whether an areaDesc names the ward: the ward's name as whole words (case and Unicode form aside)."""
    if not ward.strip():
        return False
    pattern = r"(?<!\w)" + re.escape(_folded(ward.strip())) + r"(?!\w)"
    return re.search(pattern, _folded(description)) is not None


class _Budget:
    """Bounds the work of matching shapes to speakers: a hostile polygon must not hold the fleet for minutes."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise CapRefused(f"the alert's polygons and circles are too large to match to the speakers (more than "
                             f"{MATCH_STEPS_MAX:,} point tests): simplify them")


def inside_polygon(points: Sequence[Point], ring: Sequence[Point], budget: _Budget | None = None) -> list[bool]:
    """For each point, whether the ring holds it: the even-odd rule on the lat/lon plane (a city's alert area
    is small enough to ignore the curvature). Points sorted by latitude, so an edge meets only the points
    whose horizontal ray it can cross."""
    order = sorted(range(len(points)), key=lambda i: points[i][0])
    lats = [points[i][0] for i in order]
    inside = [False] * len(points)
    for (lat1, lon1), (lat2, lon2) in itertools.pairwise(ring):
        if lat1 == lat2:
            continue
        low, high = (lat1, lat2) if lat1 < lat2 else (lat2, lat1)
        first, last = bisect.bisect_left(lats, low), bisect.bisect_left(lats, high)
        if budget is not None:
            budget.spend(1 + last - first)
        for k in range(first, last):  # low <= lat < high: the edge spans the point's latitude
            i = order[k]
            lat, lon = points[i]
            if lon < lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1):
                inside[i] = not inside[i]
    return inside


def in_polygon(point: Point, ring: Sequence[Point]) -> bool:
    return inside_polygon([point], ring)[0]


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance (haversine) on a sphere of the Earth's mean radius."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def match_area(areas: Iterable[Area], places: Sequence[Place]) -> AreaMatch:
    """The speakers an alert's areas cover: wards its areaDesc names, speakers inside its polygons and circles."""
    areas = list(areas)
    wards = sorted({p.ward for p in places if p.ward.strip()})
    named = [w for w in wards if any(names_ward(a.description, w) for a in areas)]
    shapes = any(a.polygons or a.circles for a in areas)
    located = [p for p in places if p.lat is not None and p.lon is not None]
    points = [(float(p.lat or 0), float(p.lon or 0)) for p in located]
    held = [False] * len(located)
    budget = _Budget(MATCH_STEPS_MAX)
    for ring in (ring for a in areas for ring in a.polygons):
        held = [h or now for h, now in zip(held, inside_polygon(points, ring, budget), strict=True)]
    for circle in (c for a in areas for c in a.circles):
        budget.spend(len(points))
        held = [h or distance_km(p, (circle.lat, circle.lon)) <= circle.radius_km
                for h, p in zip(held, points, strict=True)]
    inside = [place for place, h in zip(located, held, strict=True) if h]
    notes = []
    if shapes and not located:
        notes.append("no speaker has coordinates: the polygons and circles matched none; wards were matched "
                     "by name only")
    inside_ids = {p.device_id for p in inside}
    whole = [w for w in wards if w not in named
             and all(p.device_id in inside_ids for p in places if p.ward == w)
             and any(p.ward == w for p in inside)]
    by_ward = set(named) | set(whole)
    devices = sorted(p.device_id for p in inside if p.ward not in by_ward)
    speakers = sorted({p.device_id for p in places if p.ward in by_ward} | inside_ids)
    return AreaMatch(tuple(sorted(by_ward)), tuple(devices), tuple(speakers), tuple(named),
                     tuple(sorted(inside_ids)), tuple(notes))
