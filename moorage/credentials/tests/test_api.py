"""The credentials API: shapes without secrets, tenancy, errors, and Test connection against
the real Basic and Bearer registries."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.accounts.permissions import Action
from moorage.credentials.models import Credential
from moorage.testing import factories
from moorage.testing.api_checks import (
    API,
    Case,
    ObjectEndpoint,
    assert_api_error,
    check_endpoint,
    generic_cases,
)
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.registry import RegistryServer

pytestmark = pytest.mark.django_db


def _json(client: Client, method: str, path: str, member: Member, body: Any = None) -> Any:
    return client.generic(method, API + path, json.dumps(body) if body is not None else "",
                          content_type="application/json", headers=member.auth)


def _registry_credential(owner: Member) -> int:
    return make_credential(owner).id


OBJECT_ENDPOINTS = [
    ObjectEndpoint("GET", "/credentials/{id}", _registry_credential, Action.VIEW),
    ObjectEndpoint("PATCH", "/credentials/{id}", _registry_credential,
                   Action.MANAGE_CREDENTIALS, body={"name": "renamed"}),
    ObjectEndpoint("DELETE", "/credentials/{id}", _registry_credential,
                   Action.MANAGE_CREDENTIALS),
    ObjectEndpoint("POST", "/credentials/{id}/set-default", _registry_credential,
                   Action.MANAGE_CREDENTIALS),
    ObjectEndpoint("POST", "/credentials/{id}/test", _registry_credential, Action.DEPLOY),
]
GENERIC_CASES = generic_cases(OBJECT_ENDPOINTS)


@pytest.mark.parametrize(("endpoint", "case"), GENERIC_CASES)
def test_generic_checks(client: Client, endpoint: ObjectEndpoint, case: Case) -> None:
    check_endpoint(client, endpoint, case)


def test_create_list_get_never_return_the_secret(client: Client, owner: Member) -> None:
    secret = "Api-Secret-" + secrets.token_hex(8)
    body = {"type": "container_registry", "name": "ghcr-prod", "server": "https://ghcr.io/",
            "username": "octo", "secret": secret, "email": "ops@example.com"}
    created = _json(client, "POST", "/credentials", owner, body)
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["server"] == "ghcr.io" and data["is_default"] is True and data["revision"] == 1
    assert set(data) == {"id", "type", "name", "server", "username", "email", "is_default",
                         "revision", "created_by", "created_at", "updated_at",
                         "last_tested_at", "last_test_result", "last_test_message",
                         "used_by_apps", "login_source", "aws_access_key_id", "aws_region",
                         "token"}
    assert (data["login_source"], data["token"]) == ("static", None)
    listing = client.get(API + "/credentials", headers=owner.auth)
    one = client.get(API + f"/credentials/{data['id']}", headers=owner.auth)
    for response in (created, listing, one):
        assert secret not in response.content.decode()
    assert listing.json()[0]["name"] == "ghcr-prod"


def test_list_filters_by_type(client: Client, owner: Member) -> None:
    make_credential(owner, name="reg")
    make_credential(owner, name="gh", type="git", server="github.com")
    names = lambda q: [c["name"] for c in client.get(API + "/credentials" + q,  # noqa: E731
                                                      headers=owner.auth).json()]
    assert names("?type=git") == ["gh"]
    assert names("?type=container_registry") == ["reg"]
    assert_api_error(client.get(API + "/credentials?type=ssh", headers=owner.auth), 422,
                     "validation_error")


def test_patch_rotates_and_set_default_moves(client: Client, owner: Member) -> None:
    first = make_credential(owner, name="first")
    second = make_credential(owner, name="second")
    rotated = _json(client, "PATCH", f"/credentials/{first.id}", owner, {"secret": "rotated-1"})
    assert rotated.status_code == 200 and rotated.json()["revision"] == 2
    moved = _json(client, "POST", f"/credentials/{second.id}/set-default", owner)
    assert moved.json()["is_default"] is True
    assert Credential.objects.get(id=first.id).is_default is False
    gone = _json(client, "DELETE", f"/credentials/{second.id}", owner)
    assert gone.status_code == 204
    assert Credential.objects.get(id=first.id).is_default is True


def test_errors_have_stable_codes(client: Client, owner: Member) -> None:
    git = make_credential(owner, name="gh", type="git", server="github.com")
    assert_api_error(_json(client, "POST", f"/credentials/{git.id}/set-default", owner), 422,
                     "credential_type_mismatch")
    assert_api_error(_json(client, "POST", f"/credentials/{git.id}/test", owner), 422,
                     "credential_type_mismatch")
    base = {"name": "x", "server": "ghcr.io", "username": "u", "secret": "p"}
    assert_api_error(_json(client, "POST", "/credentials", owner, base | {"type": "ssh"}), 422,
                     "validation_error")
    assert_api_error(_json(client, "POST", "/credentials", owner,
                           base | {"server": "ghcr.io/org"}), 422, "server_has_path")
    assert_api_error(_json(client, "POST", "/credentials", owner, base | {"name": "n" * 101}),
                     422, "validation_error")
    _json(client, "POST", "/credentials", owner, base)
    assert_api_error(_json(client, "POST", "/credentials", owner, base), 409,
                     "credential_name_taken")
    assert Credential.objects.filter(account=owner.account, name="x").count() == 1


def test_non_utf8_body_is_a_clear_error(client: Client, owner: Member) -> None:
    response = client.post(API + "/credentials", b'{"name": "\xff\xfe"}',
                           content_type="application/json", headers=owner.auth)
    assert response.status_code in (400, 422)
    assert set(response.json()) == {"code", "message", "detail"}
    assert not Credential.objects.filter(account=owner.account).exists()


def test_viewer_sees_the_list_but_cannot_change(client: Client, owner: Member) -> None:
    viewer = factories.add_member(owner, Role.VIEWER)
    make_credential(owner, name="reg")
    assert [c["name"] for c in client.get(API + "/credentials", headers=viewer.auth).json()] \
        == ["reg"]
    body = {"name": "y", "server": "ghcr.io", "username": "u", "secret": "p"}
    assert_api_error(_json(client, "POST", "/credentials", viewer, body), 403,
                     "permission_denied")


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    fixture: RegistryServer = request.getfixturevalue(f"registry_{request.param}")
    return fixture


def test_test_connection_classifies_against_real_registries(
    client: Client, owner: Member, registry: RegistryServer, busybox_image: Any
) -> None:
    user, password = "tester-" + secrets.token_hex(3), "pw-" + secrets.token_hex(8)
    registry.add_user(user, password)
    repo = "team/app-" + secrets.token_hex(3)
    image = busybox_image(registry, repo, "1.0")
    registry.grant(user, repo)
    good = make_credential(owner, name="good", server=registry.host, username=user,
                           secret=password)
    bad = make_credential(owner, name="bad", server=registry.host, username=user,
                          secret="wrong-" + password)

    def test(credential: Credential, image: str | None = None) -> dict[str, Any]:
        response = _json(client, "POST", f"/credentials/{credential.id}/test", owner,
                         {"image": image} if image else None)
        assert response.status_code == 200, response.content
        assert password not in response.content.decode()
        result: dict[str, Any] = response.json()
        return result

    assert test(good)["result"] == "ok"
    assert test(good, image)["result"] == "ok"
    rejected = test(bad)
    assert rejected["result"] == "unauthorized" and rejected["ok"] is False
    assert registry.host in rejected["message"]
    assert test(good, f"{registry.host}/{repo}:missing-tag")["result"] == "not_found"
    assert test(good, f"{registry.host}/team/nothing-here:1")["result"] in (
        "not_found", "forbidden")  # a Bearer registry hides what the user may not see
    mismatch = test(good, "ghcr.io/octo/app:1")
    assert mismatch["result"] == "host_mismatch"
    assert "was not sent there" in mismatch["message"]
    stored = Credential.objects.get(id=good.id)
    assert stored.last_test_result == "host_mismatch" and stored.last_tested_at is not None
    assert_api_error(_json(client, "POST", f"/credentials/{good.id}/test", owner,
                           {"image": "UPPER/Case"}), 422, "image_invalid")


def test_test_connection_to_a_stopped_registry_is_unreachable(
    client: Client, owner: Member
) -> None:
    from moorage.testing.ports import free_port

    credential = make_credential(owner, server=f"127.0.0.1:{free_port()}")
    result = _json(client, "POST", f"/credentials/{credential.id}/test", owner).json()
    assert result["result"] == "unreachable"


def test_token_registry_forbids_a_repository_not_granted(
    client: Client, owner: Member, registry_token: RegistryServer, busybox_image: Any
) -> None:
    user, password = "limited-" + secrets.token_hex(3), "pw-" + secrets.token_hex(8)
    registry_token.add_user(user, password)
    mine = busybox_image(registry_token, "mine/app-" + secrets.token_hex(3))
    theirs = busybox_image(registry_token, "theirs/app-" + secrets.token_hex(3))
    registry_token.grant(user, mine.split("/", 1)[1].split(":")[0])
    credential = make_credential(owner, server=registry_token.host, username=user,
                                 secret=password)
    ok = _json(client, "POST", f"/credentials/{credential.id}/test", owner, {"image": mine})
    assert ok.json()["result"] == "ok"
    denied = _json(client, "POST", f"/credentials/{credential.id}/test", owner, {"image": theirs})
    assert denied.json()["result"] == "forbidden"


def test_test_connection_never_sends_the_password_to_a_foreign_realm(
    client: Client, owner: Member
) -> None:
    """A registry named ``localhost:P`` naming a plain-HTTP realm on 127.0.0.1 (another host
    name) gets the answer ``realm_refused``; the realm sees no request, let alone the
    password."""
    from moorage.testing.hostile import StubServer

    password = "never-sent-" + secrets.token_hex(8)
    with StubServer() as registry, StubServer() as realm:
        realm.answer("/capture", body=b'{"token": "captured"}')
        registry.challenge(f"http://127.0.0.1:{realm.port}/capture")
        credential = make_credential(owner, server=f"localhost:{registry.port}",
                                     secret=password)
        response = _json(client, "POST", f"/credentials/{credential.id}/test", owner)
        assert realm.requests == []
    result = response.json()
    assert result["result"] == "realm_refused" and result["ok"] is False
    assert password not in response.content.decode()
    assert Credential.objects.get(id=credential.id).last_test_result == "realm_refused"


def test_test_connection_obeys_the_blocked_networks_setting(
    client: Client, owner: Member, registry_basic: RegistryServer, settings: Any
) -> None:
    from moorage.registry import ProbePolicy, parse_networks

    credential = make_credential(owner, server=registry_basic.host)
    link_local = make_credential(owner, server="169.254.169.254")
    assert _json(client, "POST", f"/credentials/{link_local.id}/test",
                 owner).json()["result"] == "network_blocked"
    settings.REGISTRY_PROBE_POLICY = ProbePolicy(blocked_networks=parse_networks("127.0.0.0/8"))
    result = _json(client, "POST", f"/credentials/{credential.id}/test", owner).json()
    assert result["result"] == "network_blocked"
    assert "127.0.0.1" in result["message"] and "127.0.0.0/8" in result["message"]
