"""WS-Discovery (ONVIF) Probe, stdlib sockets and defusedxml: what answers is a proposal.

One Probe (SOAP over UDP) to the target (the WS-Discovery multicast group 239.255.255.250:3702,
or a host:port for a test or a routed segment); the ProbeMatch answers that arrive within `wait_s`
are read, at most `max_found` of them, each at most MAX_DATAGRAM bytes. An answer that does not
parse, or names no endpoint address, is counted and ignored. XML is parsed with defusedxml (no
entities, no external references: the answers come from anyone on the LAN).
"""

import socket
import time
import uuid
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

MAX_DATAGRAM = 16_384
MAX_XADDRS = 4
MAX_SCOPES = 8
TEXT_MAX = 200

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
}

PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
 xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
 xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<s:Header><a:MessageID>urn:uuid:{message_id}</a:MessageID>
<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>
<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action></s:Header>
<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"""


@dataclass(frozen=True, slots=True)
class Found:
    address: str  # the endpoint reference (urn:uuid:... for ONVIF devices)
    xaddrs: list[str]  # its service URLs (http://<ip>/onvif/device_service)
    types: str
    scopes: list[str]
    sender: str  # the IP the answer came from

    @property
    def host(self) -> str:
        """The host of its first service URL, else the sender's address."""
        for url in self.xaddrs:
            rest = url.split("://", 1)[-1]
            host = rest.split("/", 1)[0].rsplit(":", 1)[0] if not rest.startswith("[") else rest[1:].split("]")[0]
            if host:
                return host[:TEXT_MAX]
        return self.sender


@dataclass(slots=True)
class ProbeResult:
    found: list[Found]
    unreadable: int


def _text(element: Element | None) -> str:
    return (element.text or "").strip()[:2000] if element is not None else ""


def parse_matches(data: bytes, sender: str) -> list[Found]:
    """The ProbeMatch entries of one answer; ValueError when it is not a WS-Discovery answer."""
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, DefusedXmlException) as err:
        raise ValueError(f"not XML: {type(err).__name__}") from err
    found = []
    for match in root.iterfind(".//d:ProbeMatch", NS):
        address = _text(match.find("a:EndpointReference/a:Address", NS))
        if not address:
            continue
        found.append(Found(address=address[:TEXT_MAX],
                           xaddrs=[x[:TEXT_MAX] for x in _text(match.find("d:XAddrs", NS)).split()][:MAX_XADDRS],
                           types=_text(match.find("d:Types", NS))[:TEXT_MAX],
                           scopes=[x[:TEXT_MAX] for x in _text(match.find("d:Scopes", NS)).split()][:MAX_SCOPES],
                           sender=sender))
    if not found:
        raise ValueError("no ProbeMatch with an endpoint address")
    return found


def probe(target: tuple[str, int], *, wait_s: float, max_found: int, types: str) -> ProbeResult:
    """Send one Probe and read the answers for `wait_s`. Blocking: the role runs it in a thread."""
    message = PROBE.format(message_id=uuid.uuid4(), types=types).encode()
    result = ProbeResult([], 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # the LAN only
        sock.bind(("", 0))
        sock.sendto(message, target)
        deadline = time.monotonic() + wait_s
        answers = 0
        while answers < max_found and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (sender, _) = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                break
            answers += 1
            try:
                result.found.extend(parse_matches(data, sender))
            except ValueError:
                result.unreadable += 1
    return result
