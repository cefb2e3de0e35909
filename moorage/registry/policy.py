"""How far a registry conversation may go: which networks, for how long, how much it may read.

"Test connection" and the agent's registry logins talk to addresses a *tenant* chose: the
registry host, and the token ``realm`` that registry names. Without limits that is an open
probe into the machine's own networks (a realm of ``http://169.254.169.254/`` reaches a cloud
metadata service), a way to hold a worker for ever (a server dripping one byte every few
seconds) and a way to fill its memory (a 100 MB "token"). A :class:`ProbePolicy` bounds all
three, and :class:`GuardedTransport` enforces it below httpx, where it cannot be talked round:

* **Blocked networks.** Every host name is resolved here, each address is checked, and the
  connection goes to the address that was checked (never a second lookup that DNS could answer
  differently). IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
* **One deadline.** Every connect, TLS handshake, write and read is given at most the time left
  until the conversation's overall deadline; a server that answers slowly but steadily is cut
  when the deadline passes, whatever the per-operation timeouts say.
* **A size cap** is applied by :class:`moorage.registry.auth.RegistryClient`, which streams
  every answer and stops reading at :attr:`ProbePolicy.max_response_bytes`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

__all__ = [
    "DEFAULT_BLOCKED_NETWORKS",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AddressBlocked",
    "GuardedTransport",
    "ProbePolicy",
    "parse_networks",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Link-local: where cloud metadata services answer (169.254.169.254 on AWS, GCP and Azure).
DEFAULT_BLOCKED_NETWORKS: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
#: Seconds a whole conversation (challenge, token, check) may take.
DEFAULT_DEADLINE = 30.0
#: The most any one answer may hold. Token answers are a few KiB (a JWT with its certificate
#: chain); manifests are checked with HEAD and have no body.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024


def parse_networks(values: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from ``"169.254.0.0/16, fe80::/10"`` (or a list); a bare address is a /32 or /128.

    Raises ``ValueError`` naming the entry that is not a network.
    """
    items = values.split(",") if isinstance(values, str) else list(values)
    networks: list[IPNetwork] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network such as 169.254.0.0/16") from None
    return tuple(networks)


@dataclasses.dataclass(frozen=True)
class ProbePolicy:
    """Limits of one registry conversation; the defaults suit a control plane on any cloud."""

    blocked_networks: tuple[IPNetwork, ...] = dataclasses.field(
        default_factory=lambda: parse_networks(DEFAULT_BLOCKED_NETWORKS)
    )
    deadline: float = DEFAULT_DEADLINE
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        """Refuse limits that would disable themselves."""
        if not self.deadline > 0:
            raise ValueError("the deadline must be a positive number of seconds")
        if self.max_response_bytes < 1:
            raise ValueError("the response size cap must be at least one byte")

    def blocking(self, address: IPAddress) -> IPNetwork | None:
        """The blocked network holding ``address``, or None when it may be reached."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        for candidate in candidates:
            for network in self.blocked_networks:
                if candidate.version == network.version and candidate in network:
                    return network
        return None


class AddressBlocked(Exception):
    """A host resolved to (or is) an address in a blocked network; nothing was sent to it."""

    def __init__(self, name: str, address: IPAddress, network: IPNetwork) -> None:
        """Keep what was asked, what it resolved to and the network that refused it."""
        super().__init__(f"{name} is {address}, in the blocked network {network}")
        self.name = name
        self.address = address
        self.network = network


# --------------------------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------------------------

#: Name lookups run here so that a hanging resolver cannot outlast the deadline.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="mrg-dns")

Remaining = Callable[[], float | None]


def _clamp(timeout: float | None, remaining: Remaining, kind: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before the deadline; ``kind`` when none is left."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise kind("the deadline of the registry conversation passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, remaining: Remaining) -> None:
        self._inner = inner
        self._remaining = remaining

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, self._remaining, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, self._remaining, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = _clamp(timeout, self._remaining, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, limit), self._remaining
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks each address against the policy, then connects to a checked address."""

    def __init__(self, policy: ProbePolicy, remaining: Remaining) -> None:
        self._policy = policy
        self._remaining = remaining
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._resolve(host, port, timeout)
        for address in addresses:
            network = self._policy.blocking(address)
            if network is not None:
                # One blocked answer refuses the name: a name that points into a metadata
                # network is not a registry, whatever else it resolves to.
                raise AddressBlocked(host, address, network)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._plain.connect_tcp(
                    str(address),
                    port,
                    timeout=_clamp(timeout, self._remaining, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._remaining)
        raise error or httpcore.ConnectError(f"{host} has no address")

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        limit = _clamp(timeout, self._remaining, httpcore.ConnectTimeout)
        lookup = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = lookup.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            raise httpcore.ConnectTimeout(f"looking up {host} took too long") from None
        except OSError as exc:
            # The same words the stock backend would surface ("Name or service not known").
            raise httpcore.ConnectError(str(exc)) from None
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        return addresses

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("registry conversations never use unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, with :class:`_GuardedBackend` under its connection pool.

    ``remaining`` returns the seconds left before the current conversation's deadline (None:
    no deadline). Never reads the environment (no proxies, no netrc, no ``SSL_CERT_FILE``).
    """

    def __init__(
        self,
        policy: ProbePolicy,
        remaining: Remaining,
        *,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        """Build the pool the way ``httpx.HTTPTransport`` does, with our network backend.

        ``HTTPTransport.__init__`` is not called: all it does is make a pool, and this one
        replaces it (httpx has no public hook for the network backend; it is pinned < 1 and
        the tests prove the guard is in force).
        """
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy, remaining),
        )
