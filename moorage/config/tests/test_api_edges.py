"""The API's edges: what the OpenAPI document promises, what PATCH refuses, how names and
secrets are measured, and who is told what on a 401 or a forbidden page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from moorage.accounts.choices import Role
from moorage.credentials.models import Credential
from moorage.schemas import ERROR_STATUSES
from moorage.testing import factories
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


def _send(client: Client, method: str, path: str, member: Member, body: str) -> Any:
    return client.generic(method, API + path, body, content_type="application/json",
                          headers=member.auth)


# ----- the OpenAPI document


def test_every_operation_documents_the_error_statuses_with_the_error_shape(
    client: Client,
) -> None:
    document = client.get(API + "/openapi.json").json()
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "message", "detail"]
    operations = [(path, method, op) for path, ops in document["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) > 30
    for path, method, operation in operations:
        for status in ERROR_STATUSES:
            response = operation["responses"].get(str(status))
            assert response is not None, f"{method.upper()} {path} lacks {status}"
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    assert set(ERROR_STATUSES) == {400, 401, 403, 404, 409, 413, 422, 429}
    upload = document["paths"]["/api/v1/apps/{app_id}/source"]["post"]
    assert "415" in upload["responses"] and "application/gzip" in upload["requestBody"]["content"]


# ----- PATCH bodies


@pytest.mark.parametrize("body", ["[]", '"rename"', "1", "null", '[{"name": "x"}]'])
def test_a_patch_whose_body_is_not_an_object_is_422(
    client: Client, owner: Member, body: str
) -> None:
    credential = make_credential(owner, name="keep-me")
    for path in (f"/credentials/{credential.id}", "/account"):
        error = assert_api_error(_send(client, "PATCH", path, owner, body), 422,
                                 "validation_error")
        assert "body" in error["detail"]["fields"]
    assert Credential.objects.get(id=credential.id).name == "keep-me"


@pytest.mark.parametrize(("path_of", "body", "field"), [
    (lambda ids: f"/credentials/{ids['credential']}", {"type": "git"}, "type"),
    (lambda ids: f"/credentials/{ids['credential']}", {"name": "x", "is_default": True},
     "is_default"),
    (lambda ids: f"/credentials/{ids['credential']}", {"nmae": "typo"}, "nmae"),
    (lambda ids: "/account", {"name": "New", "slug": "hijack"}, "slug"),
    (lambda ids: f"/apps/{ids['app']}", {"source": "image", "owner": 1}, "owner"),
    (lambda ids: f"/members/{ids['member']}", {"role": "viewer", "user": 1}, "user"),
])
def test_a_patch_with_unknown_or_immutable_fields_is_422_and_changes_nothing(
    client: Client, owner: Member, path_of: Any, body: dict[str, Any], field: str
) -> None:
    credential = make_credential(owner, name="same")
    app = client.post(API + "/apps", json.dumps({"name": "web", "image": "busybox:1"}),
                      content_type="application/json", headers=owner.auth)
    assert app.status_code == 201, app.content
    member = factories.add_member(owner, Role.MEMBER)
    ids = {"credential": credential.id, "app": app.json()["id"],
           "member": member.membership.id}
    response = _send(client, "PATCH", path_of(ids), owner, json.dumps(body))
    error = assert_api_error(response, 422, "validation_error")
    assert field in error["detail"]["fields"]
    stored = Credential.objects.get(id=credential.id)
    assert (stored.type, stored.name) == ("container_registry", "same")


# ----- secrets count bytes


def test_the_secret_limit_counts_utf8_bytes(owner: Member) -> None:
    from moorage.errors import ValidationFailed

    make_credential(owner, name="at-the-limit", secret="é" * (8 * 1024))  # 16 KiB exactly
    with pytest.raises(ValidationFailed) as error:
        make_credential(owner, name="over", secret="é" * (8 * 1024 + 1))  # 8193 characters
    assert error.value.code == "secret_too_long"
    assert "16 KiB (16384 bytes of UTF-8)" in error.value.message
    with pytest.raises(ValidationFailed):
        make_credential(owner, name="emoji", secret="🔑" * 4097)  # 4 bytes each


# ----- names


@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u2028", "\u0085", "\u200e", "\ufeff",
                                  "\t", "\x07", "\u2066"])
def test_names_refuse_control_invisible_and_bidi_characters(
    client: Client, owner: Member, char: str
) -> None:
    name = f"prod{char}gpj.exe"
    attempts = [
        ("POST", "/credentials", {"name": name, "server": "ghcr.io", "username": "u",
                                  "secret": "s"}),
        ("PATCH", "/account", {"name": name}),
        ("POST", "/tokens", {"name": name}),
    ]
    for method, path, body in attempts:
        error = assert_api_error(_send(client, method, path, owner, json.dumps(body)), 422,
                                 "name_invalid")
        assert f"U+{ord(char):04X}" in error["message"]
        assert error["detail"]["fields"] == {"name": error["message"]}


def test_names_are_nfc_normalised_and_credential_names_unique_whatever_their_case(
    client: Client, owner: Member
) -> None:
    decomposed = "Cafe\u0301"  # "é" as "e" + combining acute accent
    created = _send(client, "POST", "/credentials", owner, json.dumps(
        {"name": decomposed, "server": "ghcr.io", "username": "u", "secret": "s"}))
    assert created.status_code == 201, created.content
    assert created.json()["name"] == "Café" == "Caf\u00e9"
    for clash in ("Caf\u00e9", "CAF\u00c9", "caf\u00e9", "CAFE\u0301"):
        response = _send(client, "POST", "/credentials", owner, json.dumps(
            {"name": clash, "server": "ghcr.io", "username": "u", "secret": "s"}))
        assert_api_error(response, 409, "credential_name_taken")
    other = make_credential(owner, name="Prod")
    renamed = _send(client, "PATCH", f"/credentials/{other.id}", owner,
                    json.dumps({"name": "café"}))
    assert_api_error(renamed, 409, "credential_name_taken")
    # A git credential may share a registry credential's name (unique per type).
    git = _send(client, "POST", "/credentials", owner, json.dumps(
        {"type": "git", "name": "prod", "server": "github.com", "username": "u",
         "secret": "t"}))
    assert git.status_code == 201, git.content
    account = _send(client, "PATCH", "/account", owner, json.dumps({"name": " Ac\u0301me "}))
    assert account.json()["name"] == "A\u0107me"  # "c" + U+0301 is one "ć"


def test_the_database_refuses_names_differing_only_in_case(owner: Member) -> None:
    first = make_credential(owner, name="Registry")
    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.create(account=owner.account, type=first.type, name="REGISTRY",
                                  server="ghcr.io", username="u", secret="")


# ----- pages and the agent's 401


def test_renaming_the_account_as_a_non_owner_is_a_403_page(client: Client, owner: Member) -> None:
    admin = factories.add_member(owner, Role.ADMIN)
    client.post("/login/", {"email": admin.user.email, "password": PASSWORD})
    response = client.post("/account/rename/", {"name": "Taken over"})
    assert response.status_code == 403
    page = response.content.decode()
    assert "may not manage owners" in page and "Traceback" not in page
    owner.account.refresh_from_db()
    assert owner.account.name != "Taken over"


def test_the_agent_endpoints_401_speaks_of_region_tokens(client: Client, owner: Member) -> None:
    for path in ("/agent/snapshot", "/agent/changes?since=0"):
        error = assert_api_error(client.get(API + path), 401, "not_authenticated")
        assert "region token" in error["message"] and "mrr_" in error["message"]
    # A person's API token is not a region token either.
    error = assert_api_error(client.get(API + "/agent/snapshot", headers=owner.auth), 401,
                             "region_token_invalid")
    assert "mrr_" in error["message"]
    # The people's API still speaks of API tokens.
    people = assert_api_error(client.get(API + "/me"), 401, "not_authenticated")
    assert "API token" in people["message"]
