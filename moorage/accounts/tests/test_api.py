"""The accounts API: authentication errors, members, tokens, and the generic tenancy checks."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.accounts.models import ApiToken, Invitation, Membership
from moorage.accounts.permissions import Action
from moorage.testing import factories
from moorage.testing.api_checks import (
    API,
    Case,
    ObjectEndpoint,
    assert_api_error,
    check_endpoint,
    generic_cases,
)
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


def _post(client: Client, path: str, body: object, member: Member | None = None) -> object:
    headers = member.auth if member else {}
    return client.post(API + path, json.dumps(body), content_type="application/json",
                       headers=headers)


def _another_member(owner: Member) -> int:
    return factories.add_member(owner, Role.MEMBER).membership.id


def _own_token(owner: Member) -> int:
    return ApiToken.objects.filter(user=owner.user, account=owner.account).first().id  # type: ignore[union-attr]


def _invitation(owner: Member) -> int:
    from moorage.accounts import services

    return services.invitation_create(actor=owner.user, membership=owner.membership,
                                      email="invited@example.com", role="member").id


OBJECT_ENDPOINTS = [
    ObjectEndpoint("DELETE", "/invitations/{id}", _invitation, Action.MANAGE_MEMBERS),
    ObjectEndpoint("GET", "/members/{id}", _another_member, Action.VIEW),
    ObjectEndpoint("PATCH", "/members/{id}", _another_member, Action.MANAGE_MEMBERS,
                   body={"role": "viewer"}),
    ObjectEndpoint("DELETE", "/members/{id}", _another_member, Action.MANAGE_MEMBERS),
    ObjectEndpoint("DELETE", "/tokens/{id}", _own_token, Action.MANAGE_MEMBERS),
]


GENERIC_CASES = generic_cases(OBJECT_ENDPOINTS)


@pytest.mark.parametrize(("endpoint", "case"), GENERIC_CASES)
def test_generic_checks(client: Client, endpoint: ObjectEndpoint, case: Case) -> None:
    check_endpoint(client, endpoint, case)


def test_missing_header_is_401_in_the_error_shape(client: Client) -> None:
    response = client.get(API + "/me")
    assert_api_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="moorage"'


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer nonsense", "token_invalid"),
        ("Bearer mrg_" + "B" * 43, "token_invalid"),
        ("Basic dXNlcjpwYXNz", "not_authenticated"),
        ("Bearer", "token_invalid"),
    ],
)
def test_bad_tokens_are_401_with_a_code(client: Client, header: str, code: str) -> None:
    assert_api_error(client.get(API + "/me", headers={"Authorization": header}), 401, code)


def test_revoked_token_is_401_token_revoked(client: Client, owner: Member) -> None:
    token = ApiToken.objects.get(user=owner.user, account=owner.account)
    assert client.get(API + "/me", headers=owner.auth).status_code == 200
    response = client.delete(API + f"/tokens/{token.id}", headers=owner.auth)
    assert response.status_code == 204
    assert_api_error(client.get(API + "/me", headers=owner.auth), 401, "token_revoked")


def test_me_tells_user_account_role_and_permissions(client: Client, owner: Member) -> None:
    viewer = factories.add_member(owner, Role.VIEWER)
    body = client.get(API + "/me", headers=viewer.auth).json()
    assert body["user"]["email"] == viewer.user.email
    assert body["account"]["slug"] == "acme"
    assert body["role"] == "viewer"
    assert body["permissions"] == ["manage_own_tokens", "view"]


def test_members_listing_is_scoped_to_the_token_account(
    client: Client, owner: Member, other_owner: Member
) -> None:
    factories.add_member(owner, Role.ADMIN, "second@example.com")
    emails = [m["email"] for m in client.get(API + "/members", headers=owner.auth).json()]
    assert emails == [owner.user.email, "second@example.com"]
    others = [m["email"] for m in client.get(API + "/members", headers=other_owner.auth).json()]
    assert others == [other_owner.user.email]


def test_viewer_gets_403_for_admin_actions(client: Client, owner: Member) -> None:
    viewer = factories.add_member(owner, Role.VIEWER)
    response = _post(client, "/invitations", {"email": "x@example.com", "role": "member"},
                     viewer)
    body = assert_api_error(response, 403, "permission_denied")
    assert body["detail"] == {"action": "manage_members", "role": "viewer"}
    assert not Invitation.objects.filter(email="x@example.com").exists()
    response = client.patch(API + "/account", json.dumps({"name": "Hacked"}),
                            content_type="application/json", headers=viewer.auth)
    assert_api_error(response, 403, "permission_denied")


def test_validation_errors_name_the_field(client: Client, owner: Member) -> None:
    response = _post(client, "/invitations", {"email": "x@example.com", "role": "emperor"},
                     owner)
    body = assert_api_error(response, 422, "validation_error")
    assert "role" in body["detail"]["fields"]
    response = _post(client, "/tokens", {"name": "n" * 101}, owner)
    body = assert_api_error(response, 422, "validation_error")
    assert "name" in body["detail"]["fields"]
    response = client.post(API + "/tokens", "{not json", content_type="application/json",
                           headers=owner.auth)
    assert response.status_code in (400, 422)
    assert set(response.json()) == {"code", "message", "detail"}


def test_last_owner_conflict_over_the_api(client: Client, owner: Member) -> None:
    response = client.delete(API + f"/members/{owner.membership.id}", headers=owner.auth)
    assert_api_error(response, 409, "last_owner")
    assert Membership.objects.filter(id=owner.membership.id).exists()


def test_token_create_over_the_api_shows_the_token_once(client: Client, owner: Member) -> None:
    response = _post(client, "/tokens", {"name": "deploy-bot"}, owner)
    assert response.status_code == 201  # type: ignore[attr-defined]
    token = response.json()["token"]  # type: ignore[attr-defined]
    assert client.get(API + "/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listing = client.get(API + "/tokens", headers=owner.auth)
    assert token not in listing.content.decode()
    assert "deploy-bot" in [t["name"] for t in listing.json()]


def test_login_for_a_token_with_password(
    client: Client, owner: Member, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"email": owner.user.email, "password": PASSWORD, "name": "laptop"}
    response = _post(client, "/auth/token", body)
    assert response.status_code == 201  # type: ignore[attr-defined]
    token = response.json()["token"]  # type: ignore[attr-defined]
    assert token not in caplog.text and PASSWORD not in caplog.text
    assert_api_error(_post(client, "/auth/token", body | {"password": "wrong-password"}), 401,
                     "invalid_credentials")
    assert_api_error(_post(client, "/auth/token", body | {"account": "globex"}), 404,
                     "account_not_found")


def test_unknown_api_path_answers_in_the_error_shape(client: Client) -> None:
    assert_api_error(client.get(API + "/no/such/thing"), 404, "not_found")


def test_openapi_document_and_docs_are_served(client: Client) -> None:
    document = client.get(API + "/openapi.json").json()
    assert document["info"]["title"] == "Moorage API"
    assert "/api/v1/members/{member_id}" in document["paths"]
    docs = client.get(API + "/docs")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    assert b"cdn.jsdelivr" not in docs.content  # served by the app itself, works offline
