"""REST endpoints of the accounts domain: thin wrappers over selectors and services."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from moorage.accounts import selectors, services
from moorage.accounts.auth import client_address
from moorage.accounts.choices import Role
from moorage.accounts.models import ApiToken, Invitation, Membership
from moorage.accounts.permissions import MATRIX, Action, require
from moorage.accounts.schemas import (
    AccountOut,
    AccountPatch,
    InvitationIn,
    InvitationOut,
    JoinedOut,
    LoginTokenIn,
    MemberOut,
    MemberPatch,
    MeOut,
    MyInvitationOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
)

router = Router(tags=["accounts"])


def _membership(request: HttpRequest) -> Membership:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    return membership


def _member_out(membership: Membership) -> MemberOut:
    return MemberOut(
        id=membership.id,
        email=membership.user.email,
        role=Role(membership.role),
        created_at=membership.created_at,
    )


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        owner=token.user.email,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


@router.get("/me", response=MeOut, summary="Who the token acts as")
def me(request: HttpRequest) -> MeOut:
    membership = _membership(request)
    return MeOut(
        user=membership.user,  # type: ignore[arg-type]
        account=membership.account,  # type: ignore[arg-type]
        role=Role(membership.role),
        permissions=sorted(str(a) for a in MATRIX[Role(membership.role)]),
    )


@router.get("/account", response=AccountOut, summary="The token's account")
def account_get(request: HttpRequest) -> AccountOut:
    return _membership(request).account  # type: ignore[return-value]


@router.patch("/account", response=AccountOut, summary="Rename the account (owners)")
def account_patch(request: HttpRequest, payload: AccountPatch) -> AccountOut:
    membership = _membership(request)
    account = services.account_rename(
        actor=membership.user, membership=membership, name=payload.name
    )
    return account  # type: ignore[return-value]


@router.get("/members", response=list[MemberOut], summary="Members of the account")
def members_list(request: HttpRequest) -> list[MemberOut]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    return [_member_out(m) for m in selectors.account_members(account=membership.account)]


@router.get("/members/{member_id}", response=MemberOut, summary="One member")
def member_get(request: HttpRequest, member_id: int) -> MemberOut:
    membership = _membership(request)
    return _member_out(selectors.member_get(account=membership.account, membership_id=member_id))


def _invitation_out(invitation: Invitation) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=Role(invitation.role),
        status=invitation.status,  # type: ignore[arg-type]
        invited_by=invitation.invited_by.email if invitation.invited_by else None,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
    )


@router.get("/invitations", response=list[InvitationOut],
            summary="Pending invitations of the account")
def invitations_list(request: HttpRequest) -> list[InvitationOut]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    return [_invitation_out(i) for i in selectors.account_invitations(account=membership.account)]


@router.post("/invitations", response={201: InvitationOut},
             summary="Invite someone by e-mail (admins); they accept after logging in",
             description="The answer is the same whether or not a user with this e-mail "
                         "exists. Inviting again renews a pending invitation.")
def invitation_create(request: HttpRequest, payload: InvitationIn) -> Status[InvitationOut]:
    membership = _membership(request)
    invitation = services.invitation_create(
        actor=membership.user, membership=membership, email=payload.email, role=payload.role
    )
    return Status(201, _invitation_out(invitation))


@router.delete("/invitations/{invitation_id}", response={204: None},
               summary="Revoke a pending invitation (admins)")
def invitation_revoke(request: HttpRequest, invitation_id: int) -> Status[None]:
    membership = _membership(request)
    services.invitation_revoke(actor=membership.user, membership=membership,
                               invitation_id=invitation_id)
    return Status(204, None)


@router.get("/me/invitations", response=list[MyInvitationOut],
            summary="Invitations addressed to you, from any account")
def my_invitations(request: HttpRequest) -> list[MyInvitationOut]:
    user = _membership(request).user
    return [
        MyInvitationOut(
            id=i.id,
            account=i.account,  # type: ignore[arg-type]
            role=Role(i.role),
            invited_by=i.invited_by.email if i.invited_by else None,
            expires_at=i.expires_at,
        )
        for i in selectors.invitations_for_user(user=user)
    ]


@router.post("/me/invitations/{invitation_id}/accept", response=JoinedOut,
             summary="Accept an invitation addressed to you: join its account")
def my_invitation_accept(request: HttpRequest, invitation_id: int) -> JoinedOut:
    joined = services.invitation_accept(actor=_membership(request).user,
                                        invitation_id=invitation_id)
    return JoinedOut(account=joined.account, role=Role(joined.role))  # type: ignore[arg-type]


@router.post("/me/invitations/{invitation_id}/decline", response={204: None},
             summary="Decline an invitation addressed to you")
def my_invitation_decline(request: HttpRequest, invitation_id: int) -> Status[None]:
    services.invitation_decline(actor=_membership(request).user, invitation_id=invitation_id)
    return Status(204, None)


@router.patch("/members/{member_id}", response=MemberOut, summary="Change a member's role")
def member_patch(request: HttpRequest, member_id: int, payload: MemberPatch) -> MemberOut:
    membership = _membership(request)
    changed = services.member_change_role(
        actor=membership.user, membership=membership, member_id=member_id, role=payload.role
    )
    return _member_out(changed)


@router.delete("/members/{member_id}", response={204: None}, summary="Remove a member")
def member_delete(request: HttpRequest, member_id: int) -> Status[None]:
    membership = _membership(request)
    services.member_remove(actor=membership.user, membership=membership, member_id=member_id)
    return Status(204, None)


@router.get("/tokens", response=list[TokenOut], summary="Your API tokens in this account")
def tokens_list(request: HttpRequest) -> list[TokenOut]:
    membership = _membership(request)
    tokens = selectors.api_tokens_of(user=membership.user, account=membership.account)
    return [_token_out(t) for t in tokens.select_related("user")]


@router.post("/tokens", response={201: TokenCreatedOut}, summary="Create an API token")
def token_create(request: HttpRequest, payload: TokenIn) -> Status[TokenCreatedOut]:
    membership = _membership(request)
    token, plaintext = services.api_token_create(
        actor=membership.user, membership=membership, name=payload.name
    )
    return Status(201, TokenCreatedOut(api_token=_token_out(token), token=plaintext))


@router.delete("/tokens/{token_id}", response={204: None}, summary="Revoke an API token")
def token_revoke(request: HttpRequest, token_id: int) -> Status[None]:
    membership = _membership(request)
    services.api_token_revoke(actor=membership.user, membership=membership, token_id=token_id)
    return Status(204, None)


@router.post(
    "/auth/token",
    auth=None,
    response={201: TokenCreatedOut},
    summary="Exchange an e-mail and password for an API token (what `moorage login` does)",
)
def token_for_login(request: HttpRequest, payload: LoginTokenIn) -> Status[TokenCreatedOut]:
    token, plaintext = services.api_token_issue_for_login(
        email=payload.email,
        password=payload.password,
        address=client_address(request),
        account_slug=payload.account,
        name=payload.name,
    )
    return Status(201, TokenCreatedOut(api_token=_token_out(token), token=plaintext))
