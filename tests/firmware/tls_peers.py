"""TLS peers for the firmware's TLS tests: certificates made to order, a TLS server that records
what it decrypts (an impostor broker or fleet), and a TLS front for a real plaintext service."""

import datetime
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.tls import TlsFiles


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def server_cert(folder: Path, ca: TlsFiles | None, names: list[str]) -> TlsFiles:
    """A server certificate for `names` (IPs or DNS names; the first is also the CN), signed by
    `ca`'s key, or self-signed when `ca` is None. Returns files with `ca` = the issuer's cert."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window()
    builder = (x509.CertificateBuilder().subject_name(_name(names[0])).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(_san(names), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if ca is None:
        cert = builder.issuer_name(_name(names[0])).sign(key, hashes.SHA256())
        issuer_pem = cert.public_bytes(serialization.Encoding.PEM)
    else:
        ca_cert = x509.load_pem_x509_certificate(ca.ca.read_bytes())
        ca_key = serialization.load_pem_private_key((ca.ca.parent / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        cert = builder.issuer_name(ca_cert.subject).sign(ca_key, hashes.SHA256())
        issuer_pem = ca.ca.read_bytes()
    files = TlsFiles(folder / "issuer.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(issuer_pem)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def make_ca(folder: Path, common_name: str = "IOC test CA") -> TlsFiles:
    """A CA whose key is kept (ca.key) so server_cert() can sign with it; cert/key: unused."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window()
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return TlsFiles(folder / "ca.pem", folder / "ca.pem", folder / "ca.key")


def der(pem_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text())


@dataclass
class TlsServer:
    """A TLS server on 127.0.0.1:<free port>. Every accepted connection is counted; a completed
    handshake is counted and everything decrypted from it recorded; `serve(conn)` (optional)
    then talks to the client instead of just reading until it closes."""

    cert: TlsFiles
    serve: Callable[[ssl.SSLSocket, bytearray], None] | None = None
    connections: int = 0
    handshakes: int = 0
    failures: list[str] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)  # decrypted, from completed handshakes
    wire: bytearray = field(default_factory=bytearray)  # the first bytes of each connection, as sent

    def __post_init__(self) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.cert.cert, self.cert.key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-server", daemon=True)

    def __enter__(self) -> "TlsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener], [], [], 0.1)
            if not readable:
                continue
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            raw.settimeout(10)
            try:
                self.wire += raw.recv(4096, socket.MSG_PEEK)  # what anyone on the path could read
            except OSError:
                pass
            try:
                conn = self._context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError) as err:
                self.failures.append(str(err))
                raw.close()
                continue
            self.handshakes += 1
            try:
                if self.serve is not None:
                    self.serve(conn, self.received)
                else:
                    _read_until_closed(conn, self.received)
            except OSError:
                pass
            finally:
                conn.close()


def _read_until_closed(conn: ssl.SSLSocket, into: bytearray) -> None:
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        into += chunk


def front_for(port: int) -> Callable[[ssl.SSLSocket, bytearray], None]:
    """serve= for a TlsServer that relays each connection to the plaintext service on `port`."""

    def relay(conn: ssl.SSLSocket, received: bytearray) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as back:
            ends = {conn: back, back: conn}
            while True:
                readable, _, _ = select.select([conn, back], [], [], 0 if conn.pending() else 10)
                if conn.pending() and conn not in readable:
                    readable.append(conn)  # decrypted bytes waiting in the TLS layer
                if not readable:
                    return
                for sock in readable:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    if sock is conn:
                        received += chunk
                    ends[sock].sendall(chunk)

    return relay
