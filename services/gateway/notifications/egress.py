"""Where a webhook may be sent: the guard against server-side request forgery.

A tenant's admin or a clinician chooses a webhook's URL, and the gateway posts to it from inside the
clinic's network. Unguarded, that URL could name the EHR's internal API, the database's admin page
or the cloud's metadata service (169.254.169.254, which hands out the machine's credentials), and
the attempts list would tell the caller what answered. So a webhook goes only to a public address,
over https, unless the operator allows otherwise (`RAPPORT_WEBHOOK_ALLOW_HOSTS`,
`RAPPORT_WEBHOOK_ALLOW_HTTP`).

The check runs twice: when the URL is given (the API answers 422, naming the field and why) and on
every try, on the very addresses the connection goes to. A name can resolve differently between
the two (DNS rebinding), so the sender's transport resolves the name itself, checks every address
it got (one refused address refuses them all: a rebinding answer often mixes a public and a private
one) and connects to a checked address, never resolving again. TLS still checks the certificate
against the URL's name.

`EgressPolicy` is plain data and functions; `GuardedTransport` is the httpx transport that applies it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the name resolves to
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]

_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))

# why an address is refused, in the order it is asked (the first that applies is said)
_CLASSES: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local (169.254.0.0/16, fe80::/10: the cloud metadata service lives there)", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("private (RFC 1918, fc00::/7)", lambda a: any(a in n for n in _PRIVATE if n.version == a.version)),
    ("not a public address", lambda a: not a.is_global),
)


class AddressRefused(Exception):
    """A webhook's URL or the address it resolved to is not one the gateway may send to. The message
    names the class of address, never the URL (a URL can carry a token in its path)."""


def _address(text: str) -> IPAddress | None:
    try:
        found = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return found


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses over https, plus what the operator allowed: host names (exactly, any case),
    addresses and networks that may be reached although they are not public, and plain http."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False

    @classmethod
    def from_setting(cls, allow_hosts: str, allow_http: bool = False) -> EgressPolicy:
        """`hooks.clinic.internal,10.20.0.0/16,127.0.0.1` -> the names and the networks (an address
        is a network of one). Raises ValueError for an entry that is neither."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in allow_hosts.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not all(part and len(part) <= 63 and part.replace("-", "").isalnum()
                       for part in entry.rstrip(".").split(".")):
                raise ValueError(f"RAPPORT_WEBHOOK_ALLOW_HOSTS: {entry!r} is neither a host name nor an address "
                                 "or network (CIDR)")
            names.add(entry.rstrip(".").lower())
        return cls(frozenset(names), tuple(networks), allow_http)

    def host_allowed(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.allow_hosts

    def address_problem(self, host: str, address: str) -> str | None:
        """Why `host` may not be reached at `address`, or None when it may."""
        if self.host_allowed(host):
            return None
        found = _address(address)
        if found is None:
            return "not an IP address"
        if any(found in network for network in self.allow_networks if network.version == found.version):
            return None
        for reason, applies in _CLASSES:
            if applies(found):
                return reason
        return None

    def url_problem(self, url: str) -> str | None:
        """What the URL alone says against it (its scheme, a host that is an address), or None."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "an absolute http:// or https:// URL is needed"
        if parts.scheme == "http" and not self.allow_http:
            return "https is needed (notifications carry clinical words; RAPPORT_WEBHOOK_ALLOW_HTTP allows http)"
        if _address(parts.hostname) is not None:
            problem = self.address_problem(parts.hostname, parts.hostname)
            return None if problem is None else f"the address is {problem}"
        return None

    def addresses_problem(self, host: str, addresses: Iterable[str]) -> str | None:
        """Every address a name resolved to must pass: the first refused one says why."""
        for address in addresses:
            problem = self.address_problem(host, address)
            if problem is not None:
                return f"the host resolves to an address that is {problem}"
        return None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses a name resolves to for a TCP connection, as the system resolver gives them."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


async def check_url(policy: EgressPolicy, url: str, *, resolver: Resolve = resolve,
                    resolve_seconds: float = 2.0) -> str | None:
    """When a URL is given: what is wrong with it, or None. A name is resolved now and its addresses
    checked; a name that does not resolve (yet) is taken, since every try checks again."""
    problem = policy.url_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _address(host) is not None or policy.host_allowed(host):
        return None
    try:
        async with asyncio.timeout(resolve_seconds):
            addresses = await resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, TimeoutError):
        return None
    return policy.addresses_problem(host, addresses)


@dataclass
class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking before it connects to the checked address."""

    policy: EgressPolicy
    resolver: Resolve
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        if _address(host) is not None:
            addresses: Sequence[str] = [host.strip("[]")]
        else:
            try:
                addresses = await self.resolver(host, port)
            except OSError as error:
                raise httpcore.ConnectError(f"could not resolve the host ({type(error).__name__})") from None
        problem = self.policy.addresses_problem(host, addresses)
        if problem is not None or not addresses:
            raise AddressRefused(problem or "the host resolves to no address")
        last: Exception | None = None
        for address in addresses:  # each checked above; the first that answers
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("a unix socket is not a webhook address")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a network backend that applies the policy on each connection.

    Proxies from the environment (HTTPS_PROXY) are not used: the guard checks the address the
    gateway itself connects to. httpx takes a network backend only through httpcore's pool, so the
    pool httpx builds is replaced by one with the guarded backend (the integration tests prove the
    guard holds under this httpx; an httpx that changes `_pool` fails them)."""

    def __init__(self, policy: EgressPolicy, *, resolver: Resolve = resolve,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(trust_env=False)
        self._policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            network_backend=_GuardedBackend(policy, resolver), max_connections=100, max_keepalive_connections=20,
            keepalive_expiry=5.0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        problem = self._policy.url_problem(str(request.url))
        if problem is not None:
            raise AddressRefused(problem)
        return await super().handle_async_request(request)
