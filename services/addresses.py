"""Where webhooks may be sent: to public addresses only, unless the operator allows a network
(HPCINFRA_WEBHOOK_ALLOWED_NETWORKS). Otherwise anyone who may register a webhook could have the platform
post to its own services (Temporal, the database, a cloud's metadata endpoint) and read in the deliveries
whether something answered there.

`ReceiverAddresses.check` turns a URL's host into the addresses it stands for and refuses the host if any
of them is loopback, private, link-local, multicast, reserved, unspecified or otherwise not public. An
address is read the way the C library reads one, so every spelling of it is judged: 0x7f000001,
2130706433, 0177.0.0.1 and 127.1 are all 127.0.0.1, and an IPv6 address that carries an IPv4 one
(::ffff:127.0.0.1, 6to4, NAT64) is judged by the IPv4 address it carries. Names are looked up, except
the special-use ones (RFC 6761): localhost names are loopback, .invalid names never resolve.

The API checks a URL when the webhook is registered (a name that does not resolve yet is accepted); each
delivery checks again through `CheckedTransport`, which connects to the very address it checked, so a
name that resolves elsewhere by then (DNS rebinding) reaches nothing it should not.
"""

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A name's addresses, as text: the C library's answer, or a test's.
Lookup = Callable[[str, int], list[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# One part of an IPv4 address as inet_aton reads it: hexadecimal, octal or decimal.
_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_ADVICE = (
    "webhooks are sent to public addresses only; use the receiver's public address or name, or ask the "
    "operator to allow its network in HPCINFRA_WEBHOOK_ALLOWED_NETWORKS"
)


class AddressRefused(Exception):
    """The host is, or resolves to, an address webhooks may not be sent to."""

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        self.host, self.address, self.kind = host, address, kind
        written = _numeric(host)
        article = "an" if kind[0] in "aeiou" else "a"
        if written is None:
            # Not the address itself: which internal address a name stands for is not the caller's business.
            what = f"the host {host} resolves to {article} {kind} address"
        elif str(written) != host:
            what = f"the host {host} is the {kind} address {written}"
        else:
            what = f"the host {host} is {article} {kind} address"
        super().__init__(f"{what}; {_ADVICE}")


class HostUnresolved(Exception):
    """The host is a name with no address."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"the host {host} does not resolve to any address")


def system_lookup(host: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise HostUnresolved(host) from None
    return list(dict.fromkeys(sockaddr[0] for *_, sockaddr in answers))


def receiver_host(url: str | httpx.URL) -> tuple[str, int]:
    """The host and port a request to `url` connects to, as httpx reads them (a name in its IDNA form,
    an IPv6 address without brackets)."""
    parsed = httpx.URL(url)
    return parsed.raw_host.decode("ascii"), parsed.port or (443 if parsed.scheme == "https" else 80)


def kind_of(address: IPAddress) -> str | None:
    """What makes `address` internal ("loopback", "private", ...), or None for a public address."""
    address = _carried(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    # Before private: Python counts 240.0.0.0/4 and the broadcast address as private too.
    if address.is_reserved:
        return "reserved"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "private"
    if not address.is_global:
        return "non-public"  # shared address space (100.64.0.0/10) and other special-purpose blocks
    return None


class ReceiverAddresses:
    """The rule for receivers' addresses: public ones, and those in the operator's allowed networks."""

    def __init__(self, allowed_networks: Iterable[str] = (), *, lookup: Lookup = system_lookup) -> None:
        self.allowed = [ipaddress.ip_network(n) for n in allowed_networks]
        self.lookup = lookup

    def check(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses, every one of them allowed; raises AddressRefused if any is not, and
        HostUnresolved for a name with no address."""
        return self._judge(host, self._resolve(host, port))

    async def check_async(self, host: str, port: int, timeout: float | None = None) -> list[IPAddress]:
        """`check` in a thread, so that looking a name up blocks no event loop; a lookup that takes longer
        than `timeout` seconds counts as no answer."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.check, host, port), timeout)
        except TimeoutError:
            raise HostUnresolved(host) from None

    def _judge(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        for address in addresses:
            kind = kind_of(address)
            if kind is not None and not any(address in network for network in self.allowed):
                raise AddressRefused(host, address, kind)
        return addresses

    def _resolve(self, host: str, port: int) -> list[IPAddress]:
        numeric = _numeric(host)
        if numeric is not None:
            return [numeric]
        name = host.rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
        if name == "invalid" or name.endswith(".invalid"):
            raise HostUnresolved(host)
        addresses = [_plain(ipaddress.ip_address(a.split("%")[0])) for a in self.lookup(host, port)]
        if not addresses:
            raise HostUnresolved(host)
        return list(dict.fromkeys(addresses))


class CheckedTransport(httpx.AsyncBaseTransport):
    """Sends each request to an address of its URL's host that `receivers` allows, checked right before
    connecting, and to that address only: the URL's host stays in the Host header, in the TLS server name
    and in the certificate check, as if the connection had been made by name."""

    def __init__(self, receivers: ReceiverAddresses, verify: ssl.SSLContext | bool = True) -> None:
        self.receivers = receivers
        # No proxy, ever: a proxy would connect to the receiver itself, to an address nobody checked.
        self.transport = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host, port = receiver_host(request.url)
        addresses = await self.receivers.check_async(host, port, request.extensions.get("timeout", {}).get("connect"))
        extensions = dict(request.extensions)
        if _numeric(host) is None:
            extensions["sni_hostname"] = host
        for address in addresses[:-1]:
            try:
                return await self._send(request, address, extensions)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                continue  # the name's next address
        return await self._send(request, addresses[-1], extensions)

    async def _send(self, request: httpx.Request, address: IPAddress, extensions: dict) -> httpx.Response:
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,  # its Host header names the URL's host
            stream=request.stream,
            extensions=extensions,
        )
        return await self.transport.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _numeric(host: str) -> IPAddress | None:
    """The address `host` writes in numbers, in any form the C library reads (so never looked up in the
    DNS), or None for a name."""
    try:
        return _plain(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10) for p in parts]
    # The last part fills the bytes the others leave: 127.1 is 127.0.0.1, 2130706433 is too.
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = last
    for i, value in enumerate(leading):
        number += value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (the socket connects to that)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _carried(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries through a translator (6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address
