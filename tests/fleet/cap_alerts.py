"""CAP 1.2 test alerts, written here element by element (no outside sample files)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

NS = "urn:oasis:names:tc:emergency:cap:1.2"
SENDER = "ioc@dongxoai.binhphuoc.gov.vn"


def cap_time(value: datetime) -> str:
    """CAP's form: seconds and an offset, UTC written -00:00."""
    text = value.replace(microsecond=0).isoformat()
    return text.replace("+00:00", "-00:00")


def soon(minutes: float = 0) -> str:
    return cap_time(datetime.now(UTC) + timedelta(minutes=minutes))


def _el(name: str, value: object | None) -> str:
    return "" if value is None else f"<{name}>{escape(str(value))}</{name}>"


def area(desc: str = "Phường Tân Phú", polygons: Sequence[str] = (), circles: Sequence[str] = (),
         geocodes: Sequence[tuple[str, str]] = ()) -> str:
    return ("<area>" + _el("areaDesc", desc) + "".join(_el("polygon", p) for p in polygons)
            + "".join(_el("circle", c) for c in circles)
            + "".join(f"<geocode>{_el('valueName', n)}{_el('value', v)}</geocode>" for n, v in geocodes) + "</area>")


def resource(desc: str = "bản tin", mime: str = "audio/x-wav", *, deref: str | None = None, uri: str | None = None,
             digest: str | None = None, size: int | None = None) -> str:
    return ("<resource>" + _el("resourceDesc", desc) + _el("mimeType", mime) + _el("size", size) + _el("uri", uri)
            + _el("derefUri", deref) + _el("digest", digest) + "</resource>")


def info(*, language: str | None = "vi-VN", category: str = "Met", event: str = "Bão số 9",
         urgency: str = "Expected", severity: str = "Severe", certainty: str = "Likely",
         effective: str | None = None, onset: str | None = None, expires: str | None = None,
         headline: str | None = "Cảnh báo bão số 9",
         description: str | None = "Bão số 9 đổ bộ vào Bình Phước chiều nay, gió giật cấp 10.",
         instruction: str | None = "Người dân ở trong nhà, tránh xa cây lớn và cột điện.",
         resources: Sequence[str] = (), areas: Sequence[str] = (area(),), extra: str = "") -> str:
    return ("<info>" + _el("language", language) + _el("category", category) + _el("event", event)
            + _el("urgency", urgency) + _el("severity", severity) + _el("certainty", certainty)
            + _el("effective", effective) + _el("onset", onset) + _el("expires", expires)
            + _el("senderName", "IOC Đồng Xoài") + _el("headline", headline) + _el("description", description)
            + _el("instruction", instruction) + extra + "".join(resources) + "".join(areas) + "</info>")


def alert(identifier: str = "DX-2026-0001", *, sender: str = SENDER, sent: str | None = None,
          status: str = "Actual", msg_type: str = "Alert", scope: str = "Public", references: str | None = None,
          infos: Sequence[str] | None = None, head: str = "", namespace: str = NS, note: str | None = None) -> bytes:
    body = (_el("identifier", identifier) + _el("sender", sender) + _el("sent", sent or soon())
            + _el("status", status) + _el("msgType", msg_type) + _el("scope", scope) + _el("note", note)
            + _el("references", references) + (info() if infos is None else "".join(infos)))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<alert xmlns="{namespace}">{body}</alert>'.encode()


def reference(identifier: str, sent: str, sender: str = SENDER) -> str:
    return f"{sender},{identifier},{sent}"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE alert [
 <!ENTITY a "aaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
 <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&i;</identifier></alert>"""


def external_entity(target: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x SYSTEM "{target}">]>\n'
            f'<alert xmlns="{NS}"><identifier>&x;</identifier></alert>').encode()
