"""A WS-Discovery responder on loopback for the children tests: answers each Probe (UDP) with a
ProbeMatch naming a camera, the way an ONVIF camera answers on a LAN; a garbage datagram first
when asked, as a broken device on the LAN might send."""

import socket
import threading
from xml.etree import ElementTree

NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
      "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery"}

MATCH = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
 xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"
 xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"
 xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<s:Header><a:MessageID>urn:uuid:5f0e2b7c-0000-4000-8000-000000000001</a:MessageID>
<a:RelatesTo>{relates}</a:RelatesTo>
<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action></s:Header>
<s:Body><d:ProbeMatches><d:ProbeMatch>
<a:EndpointReference><a:Address>{address}</a:Address></a:EndpointReference>
<d:Types>dn:NetworkVideoTransmitter</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/TestCam</d:Scopes>
<d:XAddrs>http://{host}:{port}/onvif/device_service</d:XAddrs>
<d:MetadataVersion>1</d:MetadataVersion>
</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"""


class WsdResponder:
    def __init__(self, *, address: str, device_host: str, device_port: int, garbage_first: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self.address = address
        self.device_host = device_host
        self.device_port = device_port
        self.garbage_first = garbage_first
        self.probes: list[str] = []  # the Types of each Probe received
        self._thread = threading.Thread(target=self._serve, daemon=True, name="wsd-responder")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except OSError:
                return
            root = ElementTree.fromstring(data)
            if root.find(".//d:Probe", NS) is None:
                continue
            self.probes.append((root.findtext(".//d:Types", "", NS) or "").strip())
            message_id = root.findtext(".//a:MessageID", "", NS)
            if self.garbage_first:
                self.sock.sendto(b"<not-soap", sender)
            self.sock.sendto(MATCH.format(relates=message_id, address=self.address, host=self.device_host,
                                          port=self.device_port).encode(), sender)
