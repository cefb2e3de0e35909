"""Invitations: nobody joins an account without accepting, and inviting tells the admin
nothing about which e-mails have users here (pages, API, services)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from moorage.accounts import services
from moorage.accounts.choices import InvitationStatus, Role
from moorage.accounts.models import Invitation, Membership, User
from moorage.audit.choices import AuditAction
from moorage.audit.models import AuditEvent
from moorage.errors import ApplicationError
from moorage.testing import factories
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


def _invite(owner: Member, email: str, role: str = "member") -> Invitation:
    return services.invitation_create(actor=owner.user, membership=owner.membership,
                                      email=email, role=role)


def _post(client: Client, path: str, member: Member, body: Any = None) -> Any:
    return client.post(API + path, json.dumps(body) if body is not None else "",
                       content_type="application/json", headers=member.auth)


def _code(exc: pytest.ExceptionInfo[ApplicationError]) -> str:
    return exc.value.code


# ----- services


def test_an_invitation_adds_nobody_until_accepted(owner: Member) -> None:
    invited = factories.make_user("Invited@Example.com")
    invitation = _invite(owner, "INVITED@example.com", "admin")
    assert (invitation.email, invitation.role, invitation.status) == (
        "invited@example.com", "admin", InvitationStatus.PENDING)
    assert not Membership.objects.filter(user=invited, account=owner.account).exists()
    assert invitation.expires_at > timezone.now() + timedelta(days=6)
    joined = services.invitation_accept(actor=invited, invitation_id=invitation.id)
    assert (joined.account, joined.role) == (owner.account, Role.ADMIN)
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.ACCEPTED and invitation.closed_at
    actions = list(AuditEvent.objects.filter(account=owner.account).values_list(
        "action", flat=True).order_by("id"))
    assert actions[-2:] == [AuditAction.INVITATION_CREATED, AuditAction.MEMBER_ADDED]
    # Accepted once is done: a second accept finds nothing.
    with pytest.raises(ApplicationError) as exc:
        services.invitation_accept(actor=invited, invitation_id=invitation.id)
    assert _code(exc) == "invitation_not_found"


def test_inviting_an_unknown_email_creates_no_user(owner: Member) -> None:
    users = User.objects.count()
    invitation = _invite(owner, "nobody-yet@example.com")
    assert User.objects.count() == users
    # Once that person has a user (made by platform staff), the invitation waits for them.
    newcomer = factories.make_user("nobody-yet@example.com")
    assert services.invitation_accept(actor=newcomer, invitation_id=invitation.id)


def test_only_the_invited_email_can_accept_or_decline(owner: Member) -> None:
    invitation = _invite(owner, "right@example.com")
    wrong = factories.make_user("wrong@example.com")
    for act in (services.invitation_accept, services.invitation_decline):
        with pytest.raises(ApplicationError) as exc:
            act(actor=wrong, invitation_id=invitation.id)
        assert (exc.value.status, _code(exc)) == (404, "invitation_not_found")
    assert not Membership.objects.filter(user=wrong, account=owner.account).exists()


def test_expired_revoked_and_declined_invitations_cannot_be_accepted(owner: Member) -> None:
    person = factories.make_user("late@example.com")
    invitation = _invite(owner, "late@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    with pytest.raises(ApplicationError) as exc:
        services.invitation_accept(actor=person, invitation_id=invitation.id)
    assert (exc.value.status, _code(exc)) == (409, "invitation_expired")
    # Inviting again renews the same invitation.
    renewed = _invite(owner, "late@example.com", "viewer")
    assert renewed.id == invitation.id and renewed.role == "viewer"
    services.invitation_revoke(actor=owner.user, membership=owner.membership,
                               invitation_id=renewed.id)
    with pytest.raises(ApplicationError) as exc:
        services.invitation_accept(actor=person, invitation_id=renewed.id)
    assert _code(exc) == "invitation_not_found"
    declined = _invite(owner, "late@example.com")
    services.invitation_decline(actor=person, invitation_id=declined.id)
    with pytest.raises(ApplicationError):
        services.invitation_accept(actor=person, invitation_id=declined.id)
    assert not Membership.objects.filter(user=person, account=owner.account).exists()
    actions = set(AuditEvent.objects.filter(account=owner.account).values_list("action",
                                                                                flat=True))
    assert {AuditAction.INVITATION_REVOKED, AuditAction.INVITATION_DECLINED} <= actions


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
def test_only_admins_and_owners_invite_and_revoke(owner: Member, role: Role) -> None:
    limited = factories.add_member(owner, role)
    with pytest.raises(ApplicationError) as exc:
        services.invitation_create(actor=limited.user, membership=limited.membership,
                                   email="z@example.com", role="viewer")
    assert (exc.value.status, _code(exc)) == (403, "permission_denied")
    invitation = _invite(owner, "z@example.com")
    with pytest.raises(ApplicationError) as exc:
        services.invitation_revoke(actor=limited.user, membership=limited.membership,
                                   invitation_id=invitation.id)
    assert exc.value.status == 403
    admin = factories.add_member(owner, Role.ADMIN)
    owner_invite = _invite(owner, "future-owner@example.com", "owner")
    with pytest.raises(ApplicationError) as exc:
        services.invitation_revoke(actor=admin.user, membership=admin.membership,
                                   invitation_id=owner_invite.id)
    assert exc.value.status == 403


def test_bad_input_and_existing_members_are_refused(owner: Member) -> None:
    member = factories.add_member(owner, Role.MEMBER, "already@example.com")
    cases = [
        ({"email": member.user.email, "role": "member"}, "member_exists"),
        ({"email": "x@example.com", "role": "superhero"}, "role_invalid"),
        ({"email": "not-an-email", "role": "member"}, "email_invalid"),
        ({"email": "a" * 250 + "@example.com", "role": "member"}, "email_invalid"),
    ]
    before = Invitation.objects.count()
    for kwargs, code in cases:
        with pytest.raises(ApplicationError) as exc:
            services.invitation_create(actor=owner.user, membership=owner.membership, **kwargs)
        assert _code(exc) == code
    assert Invitation.objects.count() == before


def test_another_accounts_invitation_cannot_be_revoked(
    owner: Member, other_owner: Member
) -> None:
    theirs = _invite(other_owner, "someone@example.com")
    with pytest.raises(ApplicationError) as exc:
        services.invitation_revoke(actor=owner.user, membership=owner.membership,
                                   invitation_id=theirs.id)
    assert exc.value.status == 404


# ----- no enumeration


def _comparable(body: dict[str, Any], email: str) -> str:
    text = json.dumps({k: v for k, v in body.items() if k not in ("id", "created_at",
                                                                    "expires_at")})
    return text.replace(email, "EMAIL")


def test_the_api_answer_is_the_same_whether_or_not_the_email_exists(
    client: Client, owner: Member
) -> None:
    factories.make_user("exists@example.com")
    existing = _post(client, "/invitations", owner, {"email": "exists@example.com"})
    unknown = _post(client, "/invitations", owner, {"email": "unknown@example.com"})
    assert existing.status_code == unknown.status_code == 201
    assert dict(existing.headers).keys() == dict(unknown.headers).keys()
    assert _comparable(existing.json(), "exists@example.com") == _comparable(
        unknown.json(), "unknown@example.com")
    assert set(existing.json()) == {"id", "email", "role", "status", "invited_by",
                                    "created_at", "expires_at"}
    assert "one_time_password" not in existing.content.decode()


def test_the_page_answer_is_the_same_whether_or_not_the_email_exists(
    client: Client, owner: Member
) -> None:
    factories.make_user("exists@example.com")
    client.login(email=owner.user.email, password=PASSWORD)
    pages = []
    for email in ("exists@example.com", "unknown@example.com"):
        response = client.post("/account/invitations/", {"email": email, "role": "member"},
                               follow=True)
        assert response.status_code == 200
        page = response.content.decode()
        message = re.search(r'<li class="message success">([^<]+)</li>', page)
        assert message, page
        pages.append((response.redirect_chain, message.group(1).replace(email, "EMAIL")))
    assert pages[0] == pages[1]
    assert "accept on their Invitations page" in pages[0][1]


# ----- API and pages, end to end


def test_the_invited_user_accepts_over_the_api(client: Client, owner: Member) -> None:
    elsewhere = factories.make_account("Elsewhere")
    invitation = _post(client, "/invitations", owner, {"email": elsewhere.user.email,
                                                       "role": "viewer"}).json()
    listed = client.get(API + "/invitations", headers=owner.auth).json()
    assert [i["email"] for i in listed] == [elsewhere.user.email]
    mine = client.get(API + "/me/invitations", headers=elsewhere.auth).json()
    assert [(i["id"], i["account"]["slug"], i["role"]) for i in mine] == [
        (invitation["id"], owner.account.slug, "viewer")]
    # The admin cannot accept on the invited person's behalf.
    assert_api_error(_post(client, f"/me/invitations/{invitation['id']}/accept", owner), 404,
                     "invitation_not_found")
    joined = _post(client, f"/me/invitations/{invitation['id']}/accept", elsewhere)
    assert joined.status_code == 200
    assert joined.json()["account"]["slug"] == owner.account.slug
    assert joined.json()["role"] == "viewer"
    assert client.get(API + "/invitations", headers=owner.auth).json() == []


def test_revoke_and_decline_over_the_api(client: Client, owner: Member) -> None:
    elsewhere = factories.make_account("Elsewhere")
    first = _post(client, "/invitations", owner, {"email": elsewhere.user.email}).json()
    assert client.delete(API + f"/invitations/{first['id']}",
                         headers=owner.auth).status_code == 204
    assert client.get(API + "/me/invitations", headers=elsewhere.auth).json() == []
    second = _post(client, "/invitations", owner, {"email": elsewhere.user.email}).json()
    assert _post(client, f"/me/invitations/{second['id']}/decline",
                 elsewhere).status_code == 204
    assert not Membership.objects.filter(user=elsewhere.user, account=owner.account).exists()


def test_a_new_user_finds_the_invitation_after_logging_in(client: Client, owner: Member) -> None:
    _invite(owner, "newcomer@example.com", "member")
    factories.make_user("newcomer@example.com")
    client.post("/login/", {"email": "newcomer@example.com", "password": PASSWORD})
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == "/invitations/"
    page = client.get("/invitations/").content.decode()
    assert owner.account.name in page and 'data-testid="invitations-waiting"' in page
    invitation = Invitation.objects.get(email="newcomer@example.com")
    joined = client.post(f"/invitations/{invitation.id}/accept/")
    assert joined.status_code == 302
    assert client.get("/").status_code == 200
    assert Membership.objects.get(user__email="newcomer@example.com").role == Role.MEMBER


def test_the_account_page_lists_and_revokes_invitations(client: Client, owner: Member) -> None:
    invitation = _invite(owner, "pending@example.com")
    client.login(email=owner.user.email, password=PASSWORD)
    page = client.get("/account/").content.decode()
    assert 'data-invitation="pending@example.com"' in page
    client.post(f"/account/invitations/{invitation.id}/revoke/")
    assert 'data-invitation="pending@example.com"' not in client.get("/account/").content.decode()
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.REVOKED
