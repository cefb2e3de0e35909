"""Registry probes stay on their host, inside their networks, their time and their size.

Real servers on loopback play the hostile ends (:mod:`moorage.testing.hostile`): a registry
naming a realm that only wants to capture the password, a server dripping one byte at a
time, a token service answering 100 MB. The real token registry (127.0.0.1:P naming
http://127.0.0.1:Q) keeps working, which the rest of this package's tests prove.
"""

from __future__ import annotations

import gzip
import ipaddress
import secrets
import socket
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from moorage.registry import (
    AccessStatus,
    ProbePolicy,
    RegistryClient,
    RegistryLogin,
    check_access,
    check_login,
    parse_networks,
)
from moorage.registry.policy import DEFAULT_BLOCKED_NETWORKS
from moorage.testing.hostile import StubServer
from moorage.testing.registry import RegistryServer

LOGIN = RegistryLogin("probe-user", "probe-secret-" + secrets.token_hex(8))
LOOPBACK_NETWORKS = parse_networks("127.0.0.0/8, ::1/128")


@pytest.fixture
def registry_stub() -> Iterator[StubServer]:
    with StubServer() as stub:
        yield stub


@pytest.fixture
def realm() -> Iterator[StubServer]:
    """The token service a registry stub names: it records what reaches it."""
    with StubServer() as stub:
        stub.answer("/token", body=b'{"token": "captured", "expires_in": 300}')
        yield stub


def _nothing_sent(stub: StubServer) -> None:
    assert stub.requests == []


# ----- the realm rule of I4


def test_realm_on_another_host_name_never_gets_the_credential(
    realm: StubServer,
) -> None:
    # The registry is named "localhost:P"; its realm is http://127.0.0.1:Q, another name.
    with StubServer() as registry:
        registry.challenge(f"http://127.0.0.1:{realm.port}/capture")
        port = registry.port
        result = check_login(LOGIN, f"localhost:{port}")
        assert registry.requests, "the registry itself was asked"
    assert result.status is AccessStatus.REALM_REFUSED
    assert result.message == (
        f"The registry localhost:{port} asked to send the credential to 127.0.0.1 "
        "over plain HTTP; refused: a token service must use HTTPS, or be on the registry's "
        "own host name."
    )
    _nothing_sent(realm)
    assert LOGIN.password not in result.message


def test_realm_on_the_registry_host_name_is_asked(
    registry_stub: StubServer, realm: StubServer
) -> None:
    # 127.0.0.1:P naming http://127.0.0.1:Q: a loopback registry and its own token service.
    registry_stub.challenge(f"http://127.0.0.1:{realm.port}/token")
    result = check_login(LOGIN, registry_stub.host)
    seen = realm.requests
    assert len(seen) == 1 and seen[0].headers["authorization"].startswith("Basic ")
    # The stub registry refuses the (fake) token afterwards: the login check says so.
    assert result.status is AccessStatus.UNAUTHORIZED


def test_plain_http_realm_is_refused_for_anonymous_requests_too(
    registry_stub: StubServer, realm: StubServer
) -> None:
    registry_stub.challenge(f"http://localhost:{realm.port}/token")
    result = check_access(None, f"{registry_stub.host}/team/app:1")
    assert result.status is AccessStatus.REALM_REFUSED
    assert "a token request" in result.message
    _nothing_sent(realm)


def test_a_realm_with_a_user_name_is_refused(
    registry_stub: StubServer, realm: StubServer
) -> None:
    registry_stub.challenge(f"http://someone@127.0.0.1:{realm.port}/token")
    result = check_login(LOGIN, registry_stub.host)
    assert result.status is AccessStatus.REALM_REFUSED
    _nothing_sent(realm)


# ----- blocked networks


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.169.254:80", "[fe80::1]:5000"])
def test_link_local_registries_are_refused_by_default(host: str) -> None:
    started = time.monotonic()
    result = check_login(LOGIN, host)
    assert result.status is AccessStatus.NETWORK_BLOCKED
    assert "in a network Moorage never connects to" in result.message
    assert time.monotonic() - started < 1  # refused before any connection attempt


def test_a_realm_in_a_blocked_network_is_refused(registry_stub: StubServer) -> None:
    registry_stub.challenge("https://169.254.169.254/latest/meta-data/")
    result = check_login(LOGIN, registry_stub.host)
    assert result.status is AccessStatus.NETWORK_BLOCKED
    assert result.message.startswith("169.254.169.254 (asked while talking to the registry")


def test_a_name_resolving_into_a_blocked_network_is_refused(
    registry_stub: StubServer,
) -> None:
    registry_stub.answer("/v2/", 200)
    policy = ProbePolicy(blocked_networks=LOOPBACK_NETWORKS)
    result = check_login(LOGIN, f"localhost:{registry_stub.port}", policy=policy)
    assert result.status is AccessStatus.NETWORK_BLOCKED
    assert "localhost (asked while talking to the registry" in result.message
    _nothing_sent(registry_stub)
    # ... and the same registry answers once its network is not blocked.
    assert check_login(LOGIN, f"localhost:{registry_stub.port}").ok


def test_a_realm_name_resolving_into_a_blocked_network_gets_nothing(
    registry_token: RegistryServer,
) -> None:
    # The real token registry's realm is on 127.0.0.1: blocking loopback blocks the realm
    # (and the registry), and the issuer sees no request at all.
    assert registry_token.issuer is not None
    registry_token.issuer.clear_requests()
    policy = ProbePolicy(blocked_networks=parse_networks("127.0.0.0/8"))
    result = check_login(LOGIN, registry_token.host, policy=policy)
    assert result.status is AccessStatus.NETWORK_BLOCKED
    assert registry_token.issuer.requests == []


def test_ipv4_mapped_ipv6_addresses_are_checked_as_ipv4() -> None:
    policy = ProbePolicy()
    assert policy.blocking(ipaddress.ip_address("::ffff:169.254.169.254")) is not None
    assert policy.blocking(ipaddress.ip_address("169.254.1.1")) is not None
    assert policy.blocking(ipaddress.ip_address("fe80::abcd")) is not None
    assert policy.blocking(ipaddress.ip_address("127.0.0.1")) is None
    assert [str(n) for n in policy.blocked_networks] == list(DEFAULT_BLOCKED_NETWORKS)


def test_connection_goes_to_the_address_that_was_checked(
    registry_stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that answers "loopback" to the check and "metadata" to the
    connect must not get through. A fake resolver (no DNS server runs here) answers the
    first lookup with 127.0.0.1 and any later one with 169.254.169.254."""
    registry_stub.answer("/v2/", 200)
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # rebind.test is not loopback, so the library would speak HTTPS to it: ask over the
    # client's own request method with an explicit http URL instead.
    with RegistryClient() as client:
        response = client.request(
            "GET", f"http://rebind.test:{registry_stub.port}/v2/", host="rebind.test"
        )
    assert response.status_code == 200
    assert lookups == ["rebind.test"]  # one lookup: the connection used the checked address
    assert len(registry_stub.requests) == 1
    with RegistryClient() as client, pytest.raises(Exception) as refused:
        client.request("GET", f"http://rebind.test:{registry_stub.port}/v2/", host="rebind.test")
    assert type(refused.value).__name__ == "NetworkBlocked"
    assert len(registry_stub.requests) == 1


def test_networks_parse_and_refuse_nonsense() -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.0/8 ,fd00::/8,192.0.2.1")] == [
        "10.0.0.0/8",
        "fd00::/8",
        "192.0.2.1/32",
    ]
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="'metadata' is not an IP network"):
        parse_networks("metadata")


# ----- one deadline


def test_a_dripping_registry_is_cut_at_the_deadline(registry_stub: StubServer) -> None:
    # One byte every 0.3 s never trips a per-read timeout; only the deadline ends it.
    registry_stub.drip("/v2/", interval=0.3)
    policy = ProbePolicy(deadline=1.5)
    started = time.monotonic()
    result = check_login(LOGIN, registry_stub.host, policy=policy)
    elapsed = time.monotonic() - started
    assert result.status is AccessStatus.TIMEOUT
    assert result.message.startswith(f"The registry {registry_stub.host} did not answer within")
    assert 1.4 <= elapsed < 2.5


def test_the_deadline_covers_the_whole_flow(
    registry_stub: StubServer, realm: StubServer
) -> None:
    # The registry answers at once; its token service drips. The check as a whole stops at
    # the deadline, not at a fresh deadline per request.
    registry_stub.challenge(f"http://127.0.0.1:{realm.port}/token")
    realm.drip("/token", interval=0.3)
    started = time.monotonic()
    image = f"{registry_stub.host}/team/app:1"
    result = check_access(LOGIN, image, policy=ProbePolicy(deadline=1.5))
    assert result.status is AccessStatus.TIMEOUT
    assert time.monotonic() - started < 2.5
    assert len(realm.requests) == 1


def test_a_server_that_never_answers_is_cut_at_the_deadline() -> None:
    # A listening socket that accepts (the kernel does) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = check_login(LOGIN, f"127.0.0.1:{port}", policy=ProbePolicy(deadline=1.0))
    assert result.status is AccessStatus.TIMEOUT
    assert time.monotonic() - started < 2.0


# ----- a size cap


def _huge_token_service(registry: StubServer, realm: StubServer, **flood: Any) -> None:
    registry.challenge(f"http://127.0.0.1:{realm.port}/token")
    realm.flood("/token", **flood)


def test_a_100_mb_token_answer_is_cut_at_the_cap(
    registry_stub: StubServer, realm: StubServer
) -> None:
    size = 100 * 1024 * 1024
    _huge_token_service(registry_stub, realm, size=size)
    tracemalloc.start()
    try:
        result = check_login(LOGIN, registry_stub.host)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status is AccessStatus.RESPONSE_TOO_LARGE
    assert result.message == (
        f"The registry {registry_stub.host} (or its token service) sent an answer larger than "
        "1048576 bytes; it was cut off there."
    )
    assert peak < 8 * 1024 * 1024, f"reading the answer took {peak} bytes of memory"
    # The server could write only what socket buffers hold past the cap, not 100 MB.
    time.sleep(0.2)
    assert realm.bytes_sent < 32 * 1024 * 1024


def test_a_declared_huge_answer_is_not_read_at_all(
    registry_stub: StubServer, realm: StubServer
) -> None:
    _huge_token_service(registry_stub, realm, size=100 * 1024 * 1024, declare_length=True)
    result = check_login(LOGIN, registry_stub.host, policy=ProbePolicy(max_response_bytes=4096))
    assert result.status is AccessStatus.RESPONSE_TOO_LARGE
    assert "larger than 4096 bytes" in result.message


def test_a_compressed_answer_is_cut_at_the_cap_once_decompressed(
    registry_stub: StubServer, realm: StubServer
) -> None:
    # 64 MiB of JSON-ish text in a ~64 KiB gzip body: small on the wire, huge in memory.
    body = gzip.compress(b'{"token":"' + b"a" * (64 * 1024 * 1024) + b'"}', compresslevel=1)
    assert len(body) < 1024 * 1024
    registry_stub.challenge(f"http://127.0.0.1:{realm.port}/token")
    realm.answer("/token", headers={"Content-Encoding": "gzip"}, body=body)
    tracemalloc.start()
    try:
        result = check_login(LOGIN, registry_stub.host)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status is AccessStatus.RESPONSE_TOO_LARGE
    assert peak < 8 * 1024 * 1024


def test_a_small_compressed_token_answer_is_read(
    registry_stub: StubServer, realm: StubServer
) -> None:
    registry_stub.challenge(f"http://127.0.0.1:{realm.port}/token")
    realm.answer(
        "/token",
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        body=gzip.compress(b'{"token": "t0k", "expires_in": 300}'),
    )
    with RegistryClient() as client:
        challenge = client.challenge(registry_stub.host)
        assert challenge is not None
        token = client.fetch_token(registry_stub.host, challenge, LOGIN, ["repository:a:pull"])
    assert token.value == "t0k"
    assert realm.requests[0].headers["accept-encoding"] == "identity"


def test_the_policy_refuses_limits_that_disable_themselves() -> None:
    with pytest.raises(ValueError, match="deadline"):
        ProbePolicy(deadline=0)
    with pytest.raises(ValueError, match="cap"):
        ProbePolicy(max_response_bytes=0)
