"""Downloads a URL a client put in a request, without letting it reach into our network.

A client's URL is fetched from inside the deployment, so left alone it could read cloud
metadata (169.254.169.254), loopback services or private hosts, and telling connection
errors apart would make it a port scanner. So:

- only http and https, no user:password@, a host required;
- every address a host resolves to must be public (`ipaddress` `is_global`, not multicast,
  and so must any IPv4 address embedded in an IPv6 one: mapped, 6to4, NAT64, compatible),
  unless the operator's allow-list (`STRATUS_FETCH_ALLOW`) names the host or the address;
- the check runs after DNS, inside the connection itself: the socket connects to the very
  address that was checked, so a name cannot rebind between the check and the connect;
- redirects are followed here, at most MAX_REDIRECTS, each hop checked the same way;
- the body is capped while it streams, and one deadline bounds the whole fetch;
- no proxies from the environment, no cookies;
- every failure answers the client one message, whatever the reason; the reason goes to the
  log ("stratus.fetch") for operators.

httpx and httpcore are imported when a fetch runs, not at import: parsing the policy at
startup needs neither.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidRequest, PayloadTooLarge

log = logging.getLogger("stratus.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 10.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Not global, though Python 3.11's is_global says they are: deprecated site-local addresses
# (routed by some stacks still) and local-use NAT64 (RFC 8215).
_NOT_GLOBAL_V6 = (ipaddress.IPv6Network("fec0::/10"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def unfetchable_message(param: str) -> str:
    """The one answer for every failure: the reason would tell the client about our network."""
    return (
        f"The URL in '{param}' could not be fetched: "
        "it must be a public http(s) address that answers 200."
    )


def is_public(address: IPAddress) -> bool:
    """Whether anyone on the internet could reach this address (so may we, for a client)."""
    if address.is_multicast or not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv6Address) and any(
        address in network for network in _NOT_GLOBAL_V6
    ):
        return False
    return all(is_public(inner) for inner in _embedded_ipv4(address))


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    # An IPv6 address can carry an IPv4 one that the OS or a gateway on the way connects to;
    # Python's is_global judges some of these forms (6to4, NAT64) by the IPv6 prefix alone.
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _normal_host(host: str) -> str:
    return host.lower().rstrip(".")


@dataclass(frozen=True)
class FetchPolicy:
    """Which non-public hosts and networks the operator lets client URLs reach."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, text: str) -> FetchPolicy:
        """Parses "10.0.0.0/8,internal.example,127.0.0.1"; a wrong entry fails startup."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                # strict: "10.0.0.1/8" is more likely a typo than a wish for all of 10/8.
                networks.append(ipaddress.ip_network(entry, strict=True))
                continue
            except ValueError:
                pass
            name = _normal_host(entry)
            # A numeric last label is a mistyped address ("10.0.0.256"), never a name.
            numeric = name.rsplit(".", 1)[-1].isdigit()
            if numeric or not _HOST_NAME.fullmatch(name) or len(name) > 253:
                raise ValueError(
                    f"STRATUS_FETCH_ALLOW: {entry!r} is not a host name, an IP address or a "
                    "network in CIDR form (such as 10.0.0.0/8)."
                )
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        """Whether a connection to `address`, found for `host`, may be made."""
        if _normal_host(host) in self.hosts:
            return True
        forms = [address, *_embedded_ipv4(address)]
        if any(form in network for form in forms for network in self.networks):
            return True
        return is_public(address)


class _Unfetchable(Exception):
    """A reason for the log; the client only ever sees unfetchable_message."""


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    policy: FetchPolicy,
    param: str = "file",
    timeout: float = 30.0,
) -> bytes:
    """The body of a 200 answer at `url`, following redirects; blocking (run it in a thread).

    Raises InvalidRequest (400) for any failure, with one message whatever the reason (a
    malformed URL or a scheme other than http(s) has its own message: it says nothing about
    the network), and PayloadTooLarge (413) when the body is over `max_bytes`.
    """
    import httpcore
    import httpx

    current = _parse(url, param)
    deadline = time.monotonic() + timeout
    backend = _PinnedBackend(policy, deadline, httpcore.SyncBackend())
    failures: tuple[type[BaseException], ...] = (
        _Unfetchable,
        httpx.InvalidURL,
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
    )
    hop = current
    try:
        # No proxies: httpcore, unlike httpx, reads nothing from the environment.
        with httpcore.ConnectionPool(network_backend=backend, retries=0) as pool:
            for _ in range(MAX_REDIRECTS + 1):
                with _get(pool, hop) as response:
                    if response.status in _REDIRECTS:
                        hop = _redirect_target(hop, response)
                        continue
                    if response.status != 200:
                        raise _Unfetchable(f"status {response.status}")
                    return _read_capped(response, max_bytes, param)
            raise _Unfetchable(f"more than {MAX_REDIRECTS} redirects")
    except failures as exc:
        log.info(
            "fetch of %s failed at %s: %s: %s",
            _origin(current),
            _origin(hop),
            type(exc).__name__,
            exc,
        )
        raise InvalidRequest(unfetchable_message(param), param=param) from None


def _parse(url: str, param: str) -> Any:
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InvalidRequest(f"The URL in '{param}' is not a valid URL.", param=param) from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest(f"The URL in '{param}' must use http or https.", param=param)
    if parsed.userinfo:
        raise InvalidRequest(
            f"The URL in '{param}' must not carry a user name or password.", param=param
        )
    if not parsed.raw_host:
        raise InvalidRequest(f"The URL in '{param}' has no host.", param=param)
    return parsed


def _redirect_target(current: Any, response: Any) -> Any:
    locations = [value for key, value in response.headers if key.lower() == b"location"]
    if not locations:
        raise _Unfetchable(f"status {response.status} without a Location")
    target = current.join(locations[0].decode("latin-1"))
    if target.scheme not in ("http", "https") or target.userinfo or not target.raw_host:
        raise _Unfetchable(f"redirect to a refused URL form ({target.scheme}://)")
    return target.copy_with(fragment=None)


@contextmanager
def _get(pool: Any, url: Any) -> Iterator[Any]:
    import httpcore

    target = httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )
    headers = [
        # httpcore would write an IPv6 host without its brackets; httpx's netloc has them.
        (b"Host", url.netloc),
        (b"User-Agent", b"stratus-fetch"),
        (b"Accept", b"*/*"),
        # The cap counts the bytes we keep: a compressed body would be decoded past it.
        (b"Accept-Encoding", b"identity"),
    ]
    timeouts = {"connect": CONNECT_TIMEOUT, "read": READ_TIMEOUT, "write": READ_TIMEOUT}
    with pool.stream("GET", target, headers=headers, extensions={"timeout": timeouts}) as r:
        yield r


def _read_capped(response: Any, max_bytes: int, param: str) -> bytes:
    too_large = PayloadTooLarge(
        f"The file at the URL in '{param}' is over the limit of {max_bytes} bytes.", param=param
    )
    headers = {key.lower(): value for key, value in response.headers}
    encoding = headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding != b"identity":
        raise _Unfetchable(f"Content-Encoding {encoding!r} despite identity")
    declared = headers.get(b"content-length", b"").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    data = bytearray()
    for part in response.iter_stream():
        data += part
        if len(data) > max_bytes:
            # Leaving the pool's context closes the connection unread: the rest never comes.
            raise too_large
    return bytes(data)


def _origin(url: Any) -> str:
    # Scheme, host and port only: a signed URL's query is a credential, not for the log.
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


class _PinnedBackend:
    """httpcore's network backend, resolving and checking each host, then connecting to the
    checked address itself; TLS still verifies the host name (httpcore hands start_tls the
    origin's name, not the address).

    Duck-typed (httpcore.NetworkBackend's methods) rather than subclassed, so that importing
    this module does not import httpcore.
    """

    def __init__(self, policy: FetchPolicy, deadline: float, inner: Any) -> None:
        self.policy = policy
        self.deadline = deadline
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        import httpcore

        addresses = resolve(host, port)
        for text, address in addresses:
            if not self.policy.allows(host, address):
                raise _Unfetchable(f"{host} resolves to {text}, which is not public or allowed")
        failure: Exception = _Unfetchable(f"{host} resolves to no address")
        for text, _ in addresses:
            try:
                # A numeric address: the inner backend's own lookup of it does no DNS.
                stream = self.inner.connect_tcp(
                    text,
                    port,
                    timeout=_clamp(timeout, self.deadline),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise failure

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise _Unfetchable("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def resolve(host: str, port: int) -> list[tuple[str, IPAddress]]:
    """Every address `host` has, once: the list the check and the connect both use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _Unfetchable(f"{host} does not resolve: {exc}") from None
    found: dict[str, IPAddress] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            text = str(sockaddr[0])  # an IPv6 link-local one keeps its %scope
            found.setdefault(text, ipaddress.ip_address(text))
    return list(found.items())


def _clamp(timeout: float | None, deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Unfetchable("the fetch's deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream:
    """A network stream whose every wait ends by the fetch's deadline, so a server dripping a
    byte at a time cannot hold a worker longer than `timeout`."""

    def __init__(self, inner: Any, deadline: float) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _clamp(timeout, self.deadline))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _clamp(timeout, self.deadline))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        stream = self.inner.start_tls(
            ssl_context, server_hostname=server_hostname, timeout=_clamp(timeout, self.deadline)
        )
        return _DeadlineStream(stream, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)
