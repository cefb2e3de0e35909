"""check_login and check_access against the two real registries (htpasswd and token auth).

Every scenario runs on both flavours through the ``registry`` fixture. What differs: an
htpasswd registry gives every authenticated user every repository, so "a user without access
to this repository" can only be shown on the token registry; on the Basic registry the same
user is allowed (asserted too, so a change in that behaviour is noticed).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from moorage.registry import (
    AccessResult,
    AccessStatus,
    ImageReference,
    RegistryClient,
    RegistryLogin,
    check_access,
    check_login,
    parse_reference,
)
from moorage.registry.tests.conftest import admin, new_user, unique
from moorage.testing.ports import free_port
from moorage.testing.registry import RegistryServer

PushedImage = Callable[[RegistryServer], ImageReference]


def assert_no_secret(result: AccessResult, *logins: RegistryLogin | None) -> None:
    """The password appears nowhere in what a result shows."""
    for login in logins:
        if login is None:
            continue
        for text in (result.message, repr(result), str(result)):
            assert login.password not in text


# ----- check_login


def test_login_right_password_is_ok(registry: RegistryServer) -> None:
    login = new_user(registry)
    result = check_login(login, registry.host)
    assert result.ok, result
    assert result.status is AccessStatus.OK
    assert result.http_status == 200
    assert result.message == (
        f"The registry {registry.host} accepted the credential for user {login.username!r}."
    )
    assert_no_secret(result, login)


def test_login_wrong_password_is_unauthorized(registry: RegistryServer) -> None:
    login = new_user(registry)
    wrong = RegistryLogin(login.username, login.password + "-wrong")
    result = check_login(wrong, f"http://{registry.host}/")  # a pasted URL works as a host
    assert result.status is AccessStatus.UNAUTHORIZED
    assert not result.ok
    assert result.http_status == 401
    assert result.message == (
        f"The registry {registry.host} rejected the credential for user {login.username!r}."
    )
    assert_no_secret(result, login, wrong)


def test_login_unknown_user_is_unauthorized(registry: RegistryServer) -> None:
    ghost = RegistryLogin(unique("ghost"), secrets.token_urlsafe(12))
    result = check_login(ghost, registry.host)
    assert result.status is AccessStatus.UNAUTHORIZED
    assert_no_secret(result, ghost)


def test_login_anonymous(registry: RegistryServer) -> None:
    result = check_login(None, registry.host)
    if registry.auth == "basic":
        assert result.status is AccessStatus.UNAUTHORIZED
        assert result.message == (
            f"The registry {registry.host} requires a login and none was given."
        )
    else:
        # A token registry hands anonymous tokens out (like Docker Hub): nothing to reject
        # yet, and the message says that access is decided per repository.
        assert result.status is AccessStatus.OK
        assert "anonymous" in result.message and "depends on its repository" in result.message


def test_login_unreachable() -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    login = RegistryLogin("alice", "s3cret-" + secrets.token_hex(8))
    result = check_login(login, host, timeout=5)
    assert result.status is AccessStatus.UNREACHABLE
    assert result.http_status is None
    assert result.message.startswith(f"The registry {host} could not be reached: connection")
    assert_no_secret(result, login)


# ----- check_access


def test_access_right_password_can_pull(
    registry: RegistryServer, pushed_image: PushedImage
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    result = check_access(login, image)
    assert result.ok, result
    assert result.message == (
        f"The registry {registry.host} allows user {login.username!r} to pull {image.path}:v1."
    )
    assert_no_secret(result, login)
    # The digest the registry named pins exactly what was proven; asking by it works too.
    assert result.digest is not None and result.digest.startswith("sha256:")
    assert check_access(login, parse_reference(f"{image.name}@{result.digest}")).ok
    # A string reference works too, and so does a digest-less tag pull by the admin.
    assert check_access(admin(registry), str(image)).ok


def test_access_wrong_password_is_unauthorized(
    registry: RegistryServer, pushed_image: PushedImage
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    wrong = RegistryLogin(login.username, "not-" + login.password)
    result = check_access(wrong, image)
    assert result.status is AccessStatus.UNAUTHORIZED
    assert result.http_status == 401
    assert result.message == (
        f"The registry {registry.host} rejected the credential for user {login.username!r}."
    )
    assert_no_secret(result, login, wrong)


def test_access_missing_repository_is_not_found(registry: RegistryServer) -> None:
    missing = unique("missing/repo")
    login = new_user(registry, missing)  # granted, so only absence can explain the answer
    result = check_access(login, parse_reference(f"{registry.host}/{missing}:v1"))
    assert result.status is AccessStatus.NOT_FOUND
    assert result.http_status == 404
    assert result.message == (
        f"The registry {registry.host} has no image {missing}:v1 for user "
        f"{login.username!r}: repository or tag not found, or hidden from this credential."
    )


def test_access_missing_tag_is_not_found(
    registry: RegistryServer, pushed_image: PushedImage
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    result = check_access(login, image.with_tag("no-such-tag"))
    assert result.status is AccessStatus.NOT_FOUND
    assert "repository or tag not found" in result.message
    digest = "sha256:" + "0" * 64
    by_digest = check_access(login, parse_reference(f"{image.name}@{digest}"))
    assert by_digest.status is AccessStatus.NOT_FOUND
    assert "repository or digest not found" in by_digest.message


def test_access_to_another_users_repository(
    registry: RegistryServer, pushed_image: PushedImage
) -> None:
    image = pushed_image(registry)  # repository B, not granted to this user
    own = unique("own/repo")
    login = new_user(registry, own)  # granted repository A only
    result = check_access(login, image)
    if registry.auth == "basic":
        # htpasswd auth has no per-repository rights: every valid user may pull everything.
        assert result.ok
        return
    assert registry.issuer is not None
    assert result.status is AccessStatus.FORBIDDEN
    assert result.http_status == 401  # distribution answers insufficient_scope with 401
    assert result.message == (
        f"The registry {registry.host} accepted the credential for user {login.username!r}, "
        f"but it gives no pull access to the repository {image.path!r}."
    )
    # The issuer did hand out a token for B, with an empty grant: a token is not access.
    asked = [
        r
        for r in registry.issuer.requests
        if r.username == login.username and any(image.path in s for s in r.scopes)
    ]
    assert asked and all(r.status == 200 for r in asked)
    assert all(g["actions"] == [] for r in asked for g in r.granted)
    assert_no_secret(result, login)


def test_access_anonymous_on_a_private_registry(
    registry: RegistryServer, pushed_image: PushedImage
) -> None:
    image = pushed_image(registry)
    result = check_access(None, image)
    assert result.status is AccessStatus.UNAUTHORIZED
    if registry.auth == "basic":
        assert result.message == (
            f"The registry {registry.host} requires a login and none was given."
        )
    else:
        assert result.message == (
            f"The registry {registry.host} requires a login to pull {image.path}:v1, and no "
            "credential was given."
        )


def test_access_anonymous_to_a_public_repository(
    registry_token: RegistryServer, busybox_image: Callable[..., str]
) -> None:
    repository = unique("public/app")
    image = parse_reference(busybox_image(registry_token, repository, "1"))
    registry_token.make_public(repository)
    assert check_access(None, image).ok


def test_access_unreachable_registry() -> None:
    host = f"127.0.0.1:{free_port()}"
    login = RegistryLogin("alice", "pw-" + secrets.token_hex(8))
    result = check_access(login, parse_reference(f"{host}/team/app:1"), timeout=5)
    assert result.status is AccessStatus.UNREACHABLE
    assert host in result.message
    assert_no_secret(result, login)


def test_access_with_a_shared_client_reuses_its_token(
    registry_token: RegistryServer, pushed_image: PushedImage
) -> None:
    issuer = registry_token.issuer
    assert issuer is not None
    image = pushed_image(registry_token)
    login = new_user(registry_token, image.path)
    with RegistryClient(timeout=5) as client:
        assert check_access(login, image, client=client).ok
        asked = len([r for r in issuer.requests if r.username == login.username])
        assert check_access(login, image, client=client).ok
        assert check_access(login, image.with_tag("nope"), client=client).status is (
            AccessStatus.NOT_FOUND
        )
        again = len([r for r in issuer.requests if r.username == login.username])
    assert asked == 1 and again == 1


def test_rotation_takes_effect_at_once(registry: RegistryServer, pushed_image: PushedImage) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    assert check_access(login, image).ok
    rotated = RegistryLogin(login.username, secrets.token_urlsafe(18))
    registry.set_password(login.username, rotated.password)
    assert check_access(login, image).status is AccessStatus.UNAUTHORIZED
    assert check_access(rotated, image).ok
    assert check_login(rotated, registry.host).ok


@pytest.mark.parametrize("status", list(AccessStatus))
def test_access_status_values_are_stable(status: AccessStatus) -> None:
    assert status.value in {
        "ok",
        "unauthorized",
        "forbidden",
        "not_found",
        "rate_limited",
        "unreachable",
        "protocol_error",
        "realm_refused",
        "network_blocked",
        "timeout",
        "response_too_large",
    }
    assert str(status) == status.value
