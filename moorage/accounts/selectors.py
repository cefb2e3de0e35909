"""Reads of the accounts domain. Every read is scoped to what the caller may see."""

from __future__ import annotations

from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.utils import timezone

from moorage.accounts.choices import InvitationStatus, Role
from moorage.accounts.models import Account, ApiToken, Invitation, Membership, User, normalize_email
from moorage.errors import NotFound


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    """The accounts a user belongs to, with their role in each."""
    return Membership.objects.filter(user=user).select_related("account").order_by(
        "account__name"
    )


def membership_of(*, user: User, account_id: int) -> Membership | None:
    """The user's membership in an account, or ``None`` when they do not belong to it."""
    return (
        Membership.objects.filter(user=user, account_id=account_id)
        .select_related("account", "user")
        .first()
    )


def membership_by_slug(*, user: User, slug: str) -> Membership:
    """The user's membership in the account ``slug``; :class:`NotFound` for others' accounts."""
    membership = (
        Membership.objects.filter(user=user, account__slug=slug)
        .select_related("account", "user")
        .first()
    )
    if membership is None:
        raise NotFound(f"No account {slug!r} among yours.", code="account_not_found")
    return membership


def account_members(*, account: Account) -> QuerySet[Membership]:
    """Members of an account, owners first, then by e-mail."""
    rank = Case(
        *(When(role=role, then=Value(position)) for position, role in enumerate(Role.values)),
        output_field=IntegerField(),
    )
    return (
        Membership.objects.filter(account=account)
        .select_related("user")
        .annotate(role_rank=rank)
        .order_by("role_rank", "user__email")
    )


def member_get(*, account: Account, membership_id: int) -> Membership:
    """One membership of the account; :class:`NotFound` for another account's."""
    membership = (
        Membership.objects.filter(account=account, id=membership_id)
        .select_related("user", "account")
        .first()
    )
    if membership is None:
        raise NotFound("No such member in this account.", code="member_not_found")
    return membership


def account_invitations(*, account: Account) -> QuerySet[Invitation]:
    """The account's pending invitations (expired ones too, until renewed), newest first."""
    return (
        Invitation.objects.filter(account=account, status=InvitationStatus.PENDING)
        .select_related("invited_by")
        .order_by("-created_at", "-id")
    )


def invitations_for_user(*, user: User) -> QuerySet[Invitation]:
    """Invitations the user can accept now: pending, unexpired, addressed to their e-mail."""
    return (
        Invitation.objects.filter(
            email=normalize_email(user.email),
            status=InvitationStatus.PENDING,
            expires_at__gt=timezone.now(),
        )
        .select_related("account", "invited_by")
        .order_by("-created_at", "-id")
    )


def api_tokens_of(*, user: User, account: Account) -> QuerySet[ApiToken]:
    """A user's tokens in one account, active first, newest first."""
    return ApiToken.objects.filter(user=user, account=account).order_by(
        "revoked_at", "-created_at"
    )


def api_token_get(*, account: Account, token_id: int) -> ApiToken:
    """One token of the account; :class:`NotFound` for another account's."""
    token = ApiToken.objects.filter(account=account, id=token_id).select_related("user").first()
    if token is None:
        raise NotFound("No such API token in this account.", code="token_not_found")
    return token


def operator_membership(*, email: str | None, account_slug: str | None) -> Membership:
    """Whom a server-side command acts as: the given user (default: the first platform staff
    user) in the given account (default: their first)."""
    if email:
        user = User.objects.filter(email=email.strip().lower()).first()
        if user is None:
            raise NotFound(f"No user {email}.", code="user_not_found")
    else:
        user = User.objects.filter(is_platform_staff=True).order_by("id").first()
        if user is None:
            raise NotFound("No user yet; run 'moorage init' first.", code="not_initialised")
    if account_slug:
        return membership_by_slug(user=user, slug=account_slug)
    first = memberships_of_user(user=user).select_related("user").first()
    if first is None:
        raise NotFound(f"{user.email} belongs to no account.", code="no_account")
    return first
