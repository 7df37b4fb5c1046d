"""Where webhooks may go (services/addresses.py): every way of writing an internal address is refused, a
name is refused when any of its addresses is, the operator's allowed networks let an internal receiver
through, and a delivery connects to the address that was checked while keeping the URL's name for the
Host header, the TLS server name and the certificate check.

No test here looks a name up in the DNS: names resolve through a lookup the test gives, and only
loopback addresses are ever connected to.
"""

import asyncio
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from core.settings import Settings
from services.addresses import AddressRefused, CheckedTransport, HostUnresolved, ReceiverAddresses, receiver_host

# Public addresses, only ever handed out by fake lookups: nothing connects to them.
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def no_lookup(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} was looked up; an address written as numbers is never looked up")


def lookup_of(answers: dict[str, list[str]]):
    calls: list[str] = []

    def lookup(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in answers:
            raise HostUnresolved(host)
        return answers[host]

    lookup.calls = calls  # type: ignore[attr-defined]
    return lookup


# --- the check ---------------------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("::1", "loopback"),
    ("localhost", "loopback"),
    ("LOCALHOST.", "loopback"),
    ("api.localhost", "loopback"),
    ("0x7f000001", "loopback"),
    ("0X7F.0.0.1", "loopback"),
    ("2130706433", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("127.0.1", "loopback"),
    ("127.0.0.1.", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("2002:7f00:1::", "loopback"),  # 6to4, carrying 127.0.0.1
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%25eth0", "link-local"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("0xa.0.0.1", "private"),
    ("fd00::1", "private"),
    ("fec0::1", "private"),  # site-local, the unique local addresses' deprecated forerunner
    ("64:ff9b::a00:1", "private"),  # NAT64, carrying 10.0.0.1
    ("100.64.0.1", "non-public"),  # shared address space (carrier-grade NAT)
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
]


@pytest.mark.parametrize(("host", "kind"), REFUSED, ids=[h for h, _ in REFUSED])
def test_internal_addresses_are_refused_however_written(host, kind):
    with pytest.raises(AddressRefused) as refused:
        ReceiverAddresses([], lookup=no_lookup).check(host, 80)
    assert refused.value.kind == kind
    message = str(refused.value)
    assert host in message and kind in message and "HPCINFRA_WEBHOOK_ALLOWED_NETWORKS" in message, message


@pytest.mark.parametrize("host", [PUBLIC_V4, PUBLIC_V6, f"::ffff:{PUBLIC_V4}"])
def test_public_addresses_are_allowed(host):
    [address] = ReceiverAddresses([], lookup=no_lookup).check(host, 443)
    assert address == ipaddress.ip_address(PUBLIC_V4 if "ffff" in host else host)


def test_a_name_is_refused_if_any_of_its_addresses_is():
    lookup = lookup_of({"hooks.test": [PUBLIC_V4, "10.0.0.7"], "public.test": [PUBLIC_V4, PUBLIC_V6]})
    receivers = ReceiverAddresses([], lookup=lookup)
    with pytest.raises(AddressRefused) as refused:
        receivers.check("hooks.test", 443)
    # The message names the host and the kind, not the internal address it resolved to.
    assert refused.value.kind == "private" and "hooks.test" in str(refused.value)
    assert "10.0.0.7" not in str(refused.value)
    assert [str(a) for a in receivers.check("public.test", 443)] == [PUBLIC_V4, PUBLIC_V6]


def test_the_allowed_networks_let_an_internal_receiver_through():
    receivers = ReceiverAddresses(["10.1.0.0/16", "fd00:1::/64"], lookup=no_lookup)
    assert [str(a) for a in receivers.check("10.1.2.3", 80)] == ["10.1.2.3"]
    assert [str(a) for a in receivers.check("::ffff:10.1.2.3", 80)] == ["10.1.2.3"]
    assert [str(a) for a in receivers.check("fd00:1::5", 80)] == ["fd00:1::5"]
    for elsewhere in ("10.2.0.1", "127.0.0.1", "fd00:2::5"):
        with pytest.raises(AddressRefused):
            receivers.check(elsewhere, 80)


def test_the_host_checked_is_the_one_httpx_connects_to():
    assert receiver_host("https://Hooks.Example.com:8443/x") == ("hooks.example.com", 8443)
    assert receiver_host("http://[::1]/x") == ("::1", 80)
    assert receiver_host("https://bücher.test/x") == ("xn--bcher-kva.test", 443)
    assert receiver_host("http://0x7f000001/") == ("0x7f000001", 80)


@pytest.mark.parametrize("entry", ["10.1.2.3/16", "10.0.0.0/33", "not-a-network", "fd00::/129"])
def test_allowed_networks_must_be_networks(entry, monkeypatch):
    with pytest.raises(ValidationError) as invalid:
        Settings(webhook_allowed_networks=[entry])
    assert "HPCINFRA_WEBHOOK_ALLOWED_NETWORKS" in str(invalid.value) and entry in str(invalid.value)
    monkeypatch.setenv("HPCINFRA_WEBHOOK_ALLOWED_NETWORKS", f'["{entry}"]')
    with pytest.raises(ValidationError):
        Settings()


def test_allowed_networks_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("HPCINFRA_WEBHOOK_ALLOWED_NETWORKS", '["10.1.0.0/16", "FD00:1::/64", "192.0.2.7"]')
    assert Settings().webhook_allowed_networks == ["10.1.0.0/16", "fd00:1::/64", "192.0.2.7/32"]


# --- the delivery's connection -----------------------------------------------------------------------


@dataclass
class Listener:
    """An HTTP(S) server on 127.0.0.1 that answers 204 and keeps the Host header and TLS server name of
    each request."""

    tls: ssl.SSLContext | None = None
    hosts: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                listener.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a refused handshake is the test's point
        if self.tls is not None:
            self.tls.sni_callback = lambda connection, name, context: self.server_names.append(name)
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def post(transport: CheckedTransport, url: str) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            return await client.post(url, content=b"{}")

    return asyncio.run(send())


def test_a_delivery_connects_to_the_address_it_checked_under_the_urls_name():
    listener = Listener()
    try:
        lookup = lookup_of({"receiver.test": ["127.0.0.1"]})
        transport = CheckedTransport(ReceiverAddresses(["127.0.0.0/8"], lookup=lookup))
        response = post(transport, f"http://receiver.test:{listener.port}/hooks")
        assert response.status_code == 204
        assert listener.hosts == [f"receiver.test:{listener.port}"]
        # Looked up once, by the check: the connection went to the address checked, not to a second answer.
        assert lookup.calls == ["receiver.test"]
    finally:
        listener.stop()


def test_a_name_that_now_resolves_to_a_refused_address_is_not_connected_to():
    """DNS rebinding: the name was public when the webhook was registered; at delivery it resolves to a
    loopback address, and nothing is sent there."""
    listener = Listener()
    try:
        answers = {"receiver.test": [PUBLIC_V4]}
        receivers = ReceiverAddresses([], lookup=lookup_of(answers))
        assert [str(a) for a in receivers.check("receiver.test", listener.port)] == [PUBLIC_V4]  # registration
        answers["receiver.test"] = ["127.0.0.1"]
        with pytest.raises(AddressRefused):
            post(CheckedTransport(receivers), f"http://receiver.test:{listener.port}/hooks")
        with pytest.raises(AddressRefused):
            post(CheckedTransport(receivers), f"http://127.0.0.1:{listener.port}/hooks")
        assert listener.hosts == []
    finally:
        listener.stop()


def _certificates(directory: Path, *, name: str | None = None, address: str | None = None) -> tuple[Path, Path]:
    """A CA (its certificate file) and a server certificate it signed (a file with the key and the
    certificate), for `name` or for `address`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def certificate(subject: str, key, issuer: str, signer, *, ca: bool, san=None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    san = [x509.DNSName(name)] if name else [x509.IPAddress(ipaddress.ip_address(address))]
    server = certificate(name or address, server_key, "test CA", ca_key, ca=False, san=san)
    ca_file, server_file = directory / "ca.pem", directory / "server.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    server_file.write_bytes(key_pem + server.public_bytes(serialization.Encoding.PEM))
    return ca_file, server_file


def _tls_listener(server_file: Path) -> Listener:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_file)
    return Listener(tls=context)


@pytest.fixture
def https_receiver(tmp_path) -> Iterator[tuple[Listener, ssl.SSLContext]]:
    """A TLS receiver on 127.0.0.1 whose certificate is for receiver.test, and a client context that
    trusts its CA."""
    ca_file, server_file = _certificates(tmp_path, name="receiver.test")
    listener = _tls_listener(server_file)
    yield listener, ssl.create_default_context(cafile=str(ca_file))
    listener.stop()


def test_https_deliveries_send_the_urls_name_and_verify_the_certificate_against_it(https_receiver):
    listener, trusted = https_receiver
    lookup = lookup_of({"receiver.test": ["127.0.0.1"]})
    transport = CheckedTransport(ReceiverAddresses(["127.0.0.0/8"], lookup=lookup), verify=trusted)
    response = post(transport, f"https://receiver.test:{listener.port}/hooks")
    assert response.status_code == 204
    assert listener.server_names == ["receiver.test"]
    assert listener.hosts == [f"receiver.test:{listener.port}"]


def test_a_certificate_for_the_address_is_not_one_for_the_name(tmp_path):
    """The connection goes to 127.0.0.1, yet a certificate valid for 127.0.0.1 (and not for the URL's
    name) is refused: the check is against the name, as if no address had been pinned."""
    ca_file, server_file = _certificates(tmp_path, address="127.0.0.1")
    listener = _tls_listener(server_file)
    try:
        trusted = ssl.create_default_context(cafile=str(ca_file))
        lookup = lookup_of({"receiver.test": ["127.0.0.1"]})
        transport = CheckedTransport(ReceiverAddresses(["127.0.0.0/8"], lookup=lookup), verify=trusted)
        with pytest.raises(httpx.ConnectError) as refused:
            post(transport, f"https://receiver.test:{listener.port}/hooks")
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
        assert listener.hosts == []
        # The same certificate is fine for the URL that names the address.
        assert post(transport, f"https://127.0.0.1:{listener.port}/hooks").status_code == 204
    finally:
        listener.stop()
