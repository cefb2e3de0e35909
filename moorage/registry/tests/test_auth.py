"""The auth flow: challenge parsing, logins, the token cache, against the real token registry.

What a real registry cannot be made to do here (answer 429, 500, malformed tokens) is played
by ``FakeRegistry``, an ``httpx.MockTransport`` named as the fake it is.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import httpx
import pytest

from moorage.registry import (
    AccessStatus,
    Challenge,
    LoginRejected,
    RegistryClient,
    RegistryLogin,
    TokenCache,
    check_access,
    check_login,
    parse_reference,
    parse_www_authenticate,
    pull_scope,
)
from moorage.registry.auth import MANIFEST_ACCEPT, scrub
from moorage.registry.tests.conftest import new_user, unique
from moorage.testing.registry import RegistryServer

# ----- RegistryLogin


def test_login_repr_hides_the_password() -> None:
    login = RegistryLogin("alice", "hunter2-" + secrets.token_hex(8))
    for text in (repr(login), str(login), f"{login}", repr([login]), repr({"l": login})):
        assert login.password not in text
        assert "alice" in text
    assert repr(login) == "RegistryLogin(username='alice', password='***')"
    assert login == RegistryLogin("alice", login.password)
    with pytest.raises(ValueError, match="cannot contain ':'"):
        RegistryLogin("a:b", "x")
    with pytest.raises(ValueError, match="needs a user name"):
        RegistryLogin("", "x")


def test_scrub_removes_password_and_its_basic_form() -> None:
    login = RegistryLogin("bob", "pa55-" + secrets.token_hex(4))
    basic = base64.b64encode(f"bob:{login.password}".encode()).decode()
    text = f"failed: {login.password} / Authorization: Basic {basic}"
    cleaned = scrub(text, login)
    assert login.password not in cleaned and basic not in cleaned


# ----- WWW-Authenticate


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
        ("Basic", [("basic", {})]),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:samalba/my-app:pull,push",
                    },
                )
            ],
        ),
        (
            'bearer  REALM = "http://127.0.0.1:5000/token" , Service=svc,'
            'scope="repository:127.0.0.1:5000/a:pull",error="insufficient_scope"',
            [
                (
                    "bearer",
                    {
                        "realm": "http://127.0.0.1:5000/token",
                        "service": "svc",
                        "scope": "repository:127.0.0.1:5000/a:pull",
                        "error": "insufficient_scope",
                    },
                )
            ],
        ),
        (
            'Bearer realm="a, b = c",service="x\\"y", Basic realm="z"',
            [("bearer", {"realm": "a, b = c", "service": 'x"y'}), ("basic", {"realm": "z"})],
        ),
        ('Bearer realm="unterminated', [("bearer", {})]),
        ("", []),
        ('realm="x"', []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    challenges = parse_www_authenticate(header)
    assert [(c.scheme, dict(c.params)) for c in challenges] == expected


def test_parse_several_header_lines() -> None:
    challenges = parse_www_authenticate(['Basic realm="r"', 'Bearer realm="t",service="s"'])
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].realm == "t" and challenges[1].service == "s"


# ----- token cache


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _issuer_requests(registry: RegistryServer, username: str | None) -> int:
    assert registry.issuer is not None
    return len([r for r in registry.issuer.requests if r.username == username])


def _challenge(client: RegistryClient, registry: RegistryServer) -> Challenge:
    challenge = client.challenge(registry.host)
    assert challenge is not None and challenge.scheme == "bearer"
    return challenge


def test_tokens_are_cached_until_they_expire(registry_token: RegistryServer) -> None:
    clock = FakeClock()
    login = new_user(registry_token, "cache/app")
    scopes = [pull_scope("cache/app")]
    with RegistryClient(clock=clock) as client:
        challenge = _challenge(client, registry_token)
        first = client.fetch_token(registry_token.host, challenge, login, scopes)
        assert _issuer_requests(registry_token, login.username) == 1
        assert first.expires_in == 300  # the issuer's lifetime

        clock.now += 250
        assert client.fetch_token(registry_token.host, challenge, login, scopes) is first
        assert _issuer_requests(registry_token, login.username) == 1

        clock.now += 50  # past expires_in minus the safety margin
        second = client.fetch_token(registry_token.host, challenge, login, scopes)
        assert second is not first
        assert _issuer_requests(registry_token, login.username) == 2

        # Another scope is another token.
        client.fetch_token(registry_token.host, challenge, login, [pull_scope("other/app")])
        assert _issuer_requests(registry_token, login.username) == 3


def test_a_shared_username_never_gets_another_tenants_token(
    registry_token: RegistryServer,
) -> None:
    # Two tenants, one user name on one registry (think "AWS" on ECR): the one with the
    # wrong password must not ride on the token the other one earned.
    login = new_user(registry_token, "tenant/app")
    impostor = RegistryLogin(login.username, "guess-" + secrets.token_hex(6))
    with RegistryClient() as client:
        challenge = _challenge(client, registry_token)
        client.fetch_token(registry_token.host, challenge, login, [pull_scope("tenant/app")])
        with pytest.raises(LoginRejected) as rejected:
            client.fetch_token(registry_token.host, challenge, impostor, [pull_scope("tenant/app")])
    assert impostor.password not in str(rejected.value)
    assert login.password not in str(rejected.value)
    assert _issuer_requests(registry_token, login.username) == 2


def test_clients_do_not_share_tokens_unless_told(registry_token: RegistryServer) -> None:
    login = new_user(registry_token, "iso/app")
    scopes = [pull_scope("iso/app")]
    shared = TokenCache()
    for _ in range(2):
        with RegistryClient() as client:
            client.fetch_token(
                registry_token.host, _challenge(client, registry_token), login, scopes
            )
    assert _issuer_requests(registry_token, login.username) == 2
    for _ in range(2):
        with RegistryClient(token_cache=shared) as client:
            client.fetch_token(
                registry_token.host, _challenge(client, registry_token), login, scopes
            )
    assert _issuer_requests(registry_token, login.username) == 3
    assert len(shared) == 1
    assert login.username not in repr(shared)


def test_check_access_caches_and_refetches_after_expiry(
    registry_token: RegistryServer, busybox_image: Callable[..., str]
) -> None:
    clock = FakeClock()
    repository = unique("expiry/app")
    image = parse_reference(busybox_image(registry_token, repository, "1"))
    login = new_user(registry_token, repository)
    with RegistryClient(clock=clock) as client:
        assert check_access(login, image, client=client).ok
        assert check_access(login, image, client=client).ok
        assert _issuer_requests(registry_token, login.username) == 1
        clock.now += 3600
        assert check_access(login, image, client=client).ok
        assert _issuer_requests(registry_token, login.username) == 2


def test_anonymous_tokens_are_cached_separately(registry_token: RegistryServer) -> None:
    with RegistryClient() as client:
        challenge = _challenge(client, registry_token)
        before = _issuer_requests(registry_token, None)
        anon = client.fetch_token(registry_token.host, challenge, None, ["repository:x/y:pull"])
        assert client.fetch_token(registry_token.host, challenge, None, ["repository:x/y:pull"])
        assert _issuer_requests(registry_token, None) == before + 1
        assert anon.value not in repr(anon)


def test_token_request_shape(registry_token: RegistryServer) -> None:
    issuer = registry_token.issuer
    assert issuer is not None
    login = new_user(registry_token)
    with RegistryClient() as client:
        challenge = _challenge(client, registry_token)
        client.fetch_token(
            registry_token.host,
            challenge,
            login,
            ["repository:a/b:pull", "repository:c/d:pull", "repository:a/b:pull"],
        )
    request = [r for r in issuer.requests if r.username == login.username][-1]
    assert request.service == issuer.service
    assert request.scopes == ("repository:a/b:pull", "repository:c/d:pull")  # repeated, deduped
    assert request.account == login.username
    assert request.authenticated


def test_proxies_from_the_environment_are_ignored(
    registry_token: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # The environment really would redirect an ordinary client...
    with httpx.Client() as ordinary, pytest.raises((httpx.ProxyError, httpx.ConnectError)):
        ordinary.get(f"{registry_token.url}/v2/")
    # ...but not ours.
    login = new_user(registry_token)
    assert check_login(login, registry_token.host).ok


# ----- what real registries cannot be made to do: a fake, named as such


class FakeRegistry:
    """An in-memory stand-in for a registry and its token service (httpx.MockTransport)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        self.transport = httpx.MockTransport(record)

    def client(self) -> RegistryClient:
        return RegistryClient(transport=self.transport)


HOST = "registry.example.com"
BEARER = 'Bearer realm="https://auth.example.com/token",service="example"'
SECRET_LOGIN = RegistryLogin("carol", "very-secret-" + secrets.token_hex(6))


def _bearer_registry(manifest: httpx.Response, token_body: object = None) -> FakeRegistry:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            body = token_body if token_body is not None else {"token": "t0k", "expires_in": 5}
            return httpx.Response(200, json=body)
        if request.url.path == "/v2/":
            return httpx.Response(401, headers={"WWW-Authenticate": BEARER})
        return manifest

    return FakeRegistry(handler)


def test_fake_rate_limited_with_retry_after() -> None:
    fake = _bearer_registry(httpx.Response(429, headers={"Retry-After": "120"}))
    with fake.client() as client:
        result = check_access(SECRET_LOGIN, f"{HOST}/team/app:1", client=client)
    assert result.status is AccessStatus.RATE_LIMITED
    assert result.retry_after == "120"
    assert result.message == (
        f"The registry {HOST} is rate limiting requests (HTTP 429); retry after 120 seconds."
    )
    head = fake.requests[-1]
    assert head.method == "HEAD" and head.url.path == "/v2/team/app/manifests/1"
    assert head.headers["Accept"] == MANIFEST_ACCEPT
    assert head.headers["Authorization"] == "Bearer t0k"
    assert head.url.scheme == "https"


def test_fake_server_error_is_a_protocol_error() -> None:
    fake = _bearer_registry(httpx.Response(500))
    with fake.client() as client:
        result = check_access(SECRET_LOGIN, f"{HOST}/team/app:1", client=client)
    assert result.status is AccessStatus.PROTOCOL_ERROR
    assert result.http_status == 500
    assert SECRET_LOGIN.password not in result.message


@pytest.mark.parametrize(
    ("token_body", "message"),
    [
        ({"nothing": "here"}, "answered without a token"),
        (["a", "list"], "did not answer with JSON"),
    ],
)
def test_fake_malformed_token_answers(token_body: object, message: str) -> None:
    fake = _bearer_registry(httpx.Response(200), token_body=token_body)
    with fake.client() as client:
        result = check_access(SECRET_LOGIN, f"{HOST}/team/app:1", client=client)
    assert result.status is AccessStatus.PROTOCOL_ERROR
    assert message in result.message


def test_fake_token_lifetime_rules() -> None:
    clock = FakeClock()
    bodies = iter(
        [
            {"access_token": "a1"},  # access_token only, no expires_in: 60 s
            {"token": "t2", "expires_in": 10, "issued_at": "2024-01-01T00:00:00Z"},  # min 60 s
            {"token": "t3", "expires_in": 3600},
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return httpx.Response(200, json=next(bodies))
        return httpx.Response(401, headers={"WWW-Authenticate": BEARER})

    with RegistryClient(transport=httpx.MockTransport(handler), clock=clock) as client:
        challenge = client.challenge(HOST)
        assert challenge is not None
        first = client.fetch_token(HOST, challenge, None, ["repository:a:pull"])
        assert (first.value, first.expires_in) == ("a1", 60)
        clock.now += 56
        second = client.fetch_token(HOST, challenge, None, ["repository:a:pull"])
        assert (second.value, second.expires_in) == ("t2", 60)
        assert second.issued_at is not None and second.issued_at.year == 2024
        clock.now += 56
        assert client.fetch_token(HOST, challenge, None, ["repository:a:pull"]).value == "t3"


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (404, {}, "answered HTTP 404 to /v2/"),
        (401, {}, "no WWW-Authenticate header"),
        (401, {"WWW-Authenticate": 'Negotiate realm="x"'}, "does not speak (negotiate)"),
        (401, {"WWW-Authenticate": 'Bearer service="x"'}, "named no token service"),
    ],
)
def test_fake_unusable_challenges(status: int, headers: dict[str, str], expected: str) -> None:
    fake = FakeRegistry(lambda request: httpx.Response(status, headers=headers))
    with fake.client() as client:
        result = check_login(SECRET_LOGIN, HOST, client=client)
    assert result.status is AccessStatus.PROTOCOL_ERROR
    assert expected in result.message


def test_a_password_is_never_sent_in_clear_to_a_remote_realm() -> None:
    insecure = 'Bearer realm="http://auth.example.com/token",service="x"'
    fake = FakeRegistry(lambda request: httpx.Response(401, headers={"WWW-Authenticate": insecure}))
    with fake.client() as client:
        result = check_login(SECRET_LOGIN, HOST, client=client)
    assert result.status is AccessStatus.REALM_REFUSED
    assert "over plain HTTP; refused" in result.message
    assert all(r.url.host != "auth.example.com" for r in fake.requests)


def test_an_open_registry_has_nothing_to_check() -> None:
    fake = FakeRegistry(lambda request: httpx.Response(200, json={}))
    with fake.client() as client:
        result = check_login(SECRET_LOGIN, HOST, client=client)
        assert result.ok
        assert result.message == (
            f"The registry {HOST} needs no login: it answers without credentials, so there "
            "is nothing to check."
        )
        assert not any("Authorization" in r.headers for r in fake.requests)
        access = check_access(None, f"{HOST}/a/b:1", client=client)
    assert access.ok


def test_errors_hold_no_secret() -> None:
    fake = FakeRegistry(
        lambda request: httpx.Response(
            401, headers={"WWW-Authenticate": 'Basic realm="x"'}, content=b"{}"
        )
    )
    with fake.client() as client:
        result = check_login(SECRET_LOGIN, HOST, client=client)
        assert result.status is AccessStatus.UNAUTHORIZED
        with pytest.raises(LoginRejected) as error:
            client.authorize(HOST, None)
    for text in (result.message, repr(result), str(error.value), repr(error.value)):
        assert SECRET_LOGIN.password not in text
    assert SECRET_LOGIN.password not in repr(client)
    sent = fake.requests[-1].headers.get("Authorization", "")
    assert sent.startswith("Basic ")


def test_challenge_is_remembered_per_host() -> None:
    fake = FakeRegistry(
        lambda request: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
    )
    with fake.client() as client:
        assert client.challenge(HOST) == client.challenge(HOST.upper())
        assert len(fake.requests) == 1
