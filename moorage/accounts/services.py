"""Every change to users, accounts, memberships and API tokens.

Services are keyword-only, run in one transaction, check the actor's role through
:mod:`moorage.accounts.permissions`, and write the audit row with the change.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from moorage import names
from moorage.accounts import selectors, tokens
from moorage.accounts.choices import InvitationStatus, Role
from moorage.accounts.models import (
    Account,
    ApiToken,
    Invitation,
    LoginAttempt,
    Membership,
    User,
    normalize_email,
)
from moorage.accounts.permissions import Action, require
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from moorage.regions.services import enable_default_regions

NAME_MAX = 100
SLUG_MAX = 50
EMAIL_MAX = 254
PASSWORD_MAX = 512
# Updating ``last_used_at`` on every request would turn every API read into a write.
TOKEN_USE_RECORD_INTERVAL = timedelta(seconds=60)
LOGIN_ATTEMPT_RETENTION = timedelta(days=1)


def generate_password() -> str:
    """A one-time password people can type: 20 characters from a readable alphabet."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))


# ---------------------------------------------------------------- validation helpers


def _clean_email(email: str) -> str:
    email = normalize_email(email)
    if len(email) > EMAIL_MAX:
        raise ValidationFailed(
            f"The e-mail address is longer than {EMAIL_MAX} characters.",
            code="email_invalid",
            detail={"fields": {"email": "too long"}},
        )
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ValidationFailed(
            "Enter a valid e-mail address, like ada@example.com.",
            code="email_invalid",
            detail={"fields": {"email": "invalid"}},
        ) from None
    return email


def _clean_name(name: str, *, field: str = "name") -> str:
    return names.clean_name(name, max_length=NAME_MAX, field=field)


def _check_password(password: str, *, user: User | None = None) -> None:
    if len(password) > PASSWORD_MAX:
        raise ValidationFailed(
            f"The password is longer than {PASSWORD_MAX} characters.",
            code="password_too_long",
            detail={"fields": {"password": "too long"}},
        )
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ValidationFailed(
            " ".join(exc.messages),
            code="password_too_weak",
            detail={"fields": {"password": exc.messages}},
        ) from None


def _clean_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ValidationFailed(
            f"Unknown role {role!r}; choose one of: {', '.join(Role.values)}.",
            code="role_invalid",
            detail={"fields": {"role": "invalid"}},
        ) from None


def _free_slug(name: str) -> str:
    base = slugify(name)[:SLUG_MAX].strip("-") or "account"
    slug, n = base, 2
    while Account.objects.filter(slug=slug).exists():
        suffix = f"-{n}"
        slug = base[: SLUG_MAX - len(suffix)] + suffix
        n += 1
    return slug


# ---------------------------------------------------------------- users and accounts


@transaction.atomic
def user_create(
    *,
    actor: User | None,
    email: str,
    password: str | None = None,
    is_platform_staff: bool = False,
    account: Account | None = None,
) -> tuple[User, str | None]:
    """Create a user. Without a password, a one-time password is generated and returned.

    A generated password must be changed at first login. Returns ``(user, generated)``, where
    ``generated`` is ``None`` when the caller chose the password.
    """
    email = _clean_email(email)
    generated: str | None = None
    if password is None:
        generated = password = generate_password()
    else:
        _check_password(password)
    if User.objects.filter(email=email).exists():
        raise Conflict(f"A user {email} already exists.", code="user_exists")
    user = User.objects.create_user(
        email,
        password,
        is_platform_staff=is_platform_staff,
        is_staff=is_platform_staff,
        is_superuser=is_platform_staff,
        must_change_password=generated is not None,
    )
    audit_record(
        account=account,
        actor=actor,
        action=AuditAction.USER_CREATED,
        target=user,
        details={"email": email, "platform_staff": is_platform_staff},
    )
    return user, generated


@transaction.atomic
def account_create(*, actor: User, name: str, slug: str | None = None) -> Account:
    """Create an account whose first owner is ``actor``."""
    name = _clean_name(name)
    if slug is None:
        slug = _free_slug(name)
    elif slug != slugify(slug) or not slug or len(slug) > SLUG_MAX:
        raise ValidationFailed(
            "The slug may hold lower-case letters, digits and hyphens, at most 50.",
            code="slug_invalid",
            detail={"fields": {"slug": "invalid"}},
        )
    elif Account.objects.filter(slug=slug).exists():
        raise Conflict(f"The account slug {slug!r} is taken.", code="account_slug_taken")
    account = Account.objects.create(name=name, slug=slug)
    Membership.objects.create(user=actor, account=account, role=Role.OWNER)
    enable_default_regions(account)
    audit_record(
        account=account,
        actor=actor,
        action=AuditAction.ACCOUNT_CREATED,
        target=account,
        details={"name": name, "slug": slug},
    )
    return account


@transaction.atomic
def account_rename(*, actor: User, membership: Membership, name: str) -> Account:
    """Rename the member's account (owners only); the same name again changes nothing."""
    require(membership, Action.MANAGE_OWNERS)
    account = membership.account
    if _clean_name(name) == account.name:
        return account
    old, account.name = account.name, _clean_name(name)
    account.save(update_fields=["name"])
    audit_record(
        account=account,
        actor=actor,
        action=AuditAction.ACCOUNT_RENAMED,
        target=account,
        details={"from": old, "to": account.name},
    )
    return account


@dataclass(frozen=True)
class InitResult:
    """What ``moorage init`` did: ``created`` is False when everything already existed."""

    created: bool
    user: User
    account: Account
    generated_password: str | None


@transaction.atomic
def installation_init(*, email: str, account_name: str, password: str | None) -> InitResult:
    """Create the first owner (platform staff) and account, once.

    Idempotent: when any user already exists nothing changes and ``created`` is False.
    """
    existing = User.objects.filter(is_platform_staff=True).order_by("id").first()
    if existing is None and User.objects.exists():
        existing = User.objects.order_by("id").first()
    if existing is not None:
        membership = existing.memberships.select_related("account").order_by("id").first()
        if membership is None:
            account = account_create(actor=existing, name=account_name)
            return InitResult(True, existing, account, None)
        return InitResult(False, existing, membership.account, None)
    user, generated = user_create(
        actor=None, email=email, password=password, is_platform_staff=True
    )
    account = account_create(actor=user, name=account_name)
    audit_record(
        account=account,
        actor=user,
        action=AuditAction.INSTALLATION_INITIALISED,
        target=account,
        details={"owner": user.email},
    )
    return InitResult(True, user, account, generated)


# ---------------------------------------------------------------- members


def _require_role_change_allowed(membership: Membership, *roles: str) -> None:
    require(membership, Action.MANAGE_MEMBERS)
    if Role.OWNER in roles:
        require(membership, Action.MANAGE_OWNERS)


@transaction.atomic
def invitation_create(*, actor: User, membership: Membership, email: str, role: str) -> Invitation:
    """Invite ``email`` into the actor's account with ``role``; they accept after logging in.

    Whether a user with that e-mail exists is neither checked nor told: the answer is the
    same either way (no enumeration of the installation's users), and no user is created.
    Inviting an e-mail that already has a pending invitation renews it with the new role.
    Only someone already in this account (which the actor can see anyway) is refused.
    """
    new_role = _clean_role(role)
    _require_role_change_allowed(membership, new_role)
    email = _clean_email(email)
    account = membership.account
    if Membership.objects.filter(account=account, user__email=email).exists():
        raise Conflict(f"{email} is already a member of this account.", code="member_exists")
    expires_at = timezone.now() + timedelta(days=settings.INVITATION_DAYS)
    invitation = (
        Invitation.objects.select_for_update()
        .filter(account=account, email=email, status=InvitationStatus.PENDING)
        .first()
    )
    if invitation is None:
        invitation = Invitation.objects.create(
            account=account, email=email, role=new_role, invited_by=actor, expires_at=expires_at
        )
    else:
        invitation.role, invitation.invited_by, invitation.expires_at = new_role, actor, expires_at
        invitation.save(update_fields=["role", "invited_by", "expires_at"])
    audit_record(
        account=account,
        actor=actor,
        action=AuditAction.INVITATION_CREATED,
        target=invitation,
        details={"email": email, "role": new_role.value},
    )
    return invitation


@transaction.atomic
def invitation_revoke(*, actor: User, membership: Membership, invitation_id: int) -> Invitation:
    """Withdraw a pending invitation of the actor's account (admins; owners for owner ones)."""
    invitation = (
        Invitation.objects.select_for_update()
        .filter(account=membership.account, id=invitation_id)
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation in this account.", code="invitation_not_found")
    _require_role_change_allowed(membership, invitation.role)
    if invitation.status != InvitationStatus.PENDING:
        return invitation
    _close(invitation, InvitationStatus.REVOKED)
    audit_record(
        account=membership.account,
        actor=actor,
        action=AuditAction.INVITATION_REVOKED,
        target=invitation,
        details={"email": invitation.email, "role": invitation.role},
    )
    return invitation


def _close(invitation: Invitation, status: InvitationStatus) -> None:
    invitation.status, invitation.closed_at = status, timezone.now()
    invitation.save(update_fields=["status", "closed_at"])


def _own_pending_invitation(actor: User, invitation_id: int) -> Invitation:
    """The actor's pending invitation; anyone else's, or a closed one, is not found."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("account")
        .filter(id=invitation_id, email=normalize_email(actor.email),
                status=InvitationStatus.PENDING)
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation for you.", code="invitation_not_found")
    return invitation


@transaction.atomic
def invitation_accept(*, actor: User, invitation_id: int) -> Membership:
    """Join the account of an invitation addressed to the actor's e-mail, with its role."""
    invitation = _own_pending_invitation(actor, invitation_id)
    if invitation.expires_at <= timezone.now():
        raise Conflict(
            "This invitation has expired; ask an admin of the account to invite you again.",
            code="invitation_expired",
        )
    _close(invitation, InvitationStatus.ACCEPTED)
    existing = Membership.objects.filter(user=actor, account=invitation.account).first()
    if existing is not None:
        return existing  # joined meanwhile (another invitation): keep the role they have
    added = Membership.objects.create(user=actor, account=invitation.account, role=invitation.role)
    audit_record(
        account=invitation.account,
        actor=actor,
        action=AuditAction.MEMBER_ADDED,
        target=added,
        details={"email": actor.email, "role": invitation.role, "invitation": invitation.pk},
    )
    return added


@transaction.atomic
def invitation_decline(*, actor: User, invitation_id: int) -> None:
    """Turn down an invitation addressed to the actor's e-mail."""
    invitation = _own_pending_invitation(actor, invitation_id)
    _close(invitation, InvitationStatus.DECLINED)
    audit_record(
        account=invitation.account,
        actor=actor,
        action=AuditAction.INVITATION_DECLINED,
        target=invitation,
        details={"email": invitation.email, "role": invitation.role},
    )


def _lock_owners(account: Account) -> int:
    """Lock the account's owner rows and count them, so two demotions cannot race."""
    return len(
        list(
            Membership.objects.select_for_update()
            .filter(account=account, role=Role.OWNER)
            .values_list("id", flat=True)
        )
    )


@transaction.atomic
def member_change_role(
    *, actor: User, membership: Membership, member_id: int, role: str
) -> Membership:
    """Give a member of the actor's account another role. The last owner stays an owner."""
    new_role = _clean_role(role)
    target = Membership.objects.select_for_update().filter(
        account=membership.account, id=member_id
    ).first()
    if target is None:
        raise NotFound("No such member in this account.", code="member_not_found")
    _require_role_change_allowed(membership, new_role, target.role)
    if target.role == new_role:
        return target
    if target.role == Role.OWNER and _lock_owners(membership.account) <= 1:
        raise Conflict(
            "An account needs at least one owner; make someone else owner first.",
            code="last_owner",
        )
    old, target.role = target.role, new_role
    target.save(update_fields=["role"])
    audit_record(
        account=membership.account,
        actor=actor,
        action=AuditAction.MEMBER_ROLE_CHANGED,
        target=target,
        details={"email": target.user.email, "from": old, "to": new_role.value},
    )
    return target


@transaction.atomic
def member_remove(*, actor: User, membership: Membership, member_id: int) -> None:
    """Remove a member from the actor's account, revoking their tokens in it."""
    target = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(account=membership.account, id=member_id)
        .first()
    )
    if target is None:
        raise NotFound("No such member in this account.", code="member_not_found")
    if target.user_id != actor.pk:  # leaving an account needs no role, only not being last
        _require_role_change_allowed(membership, target.role)
    if target.role == Role.OWNER and _lock_owners(membership.account) <= 1:
        raise Conflict(
            "An account needs at least one owner; make someone else owner first.",
            code="last_owner",
        )
    ApiToken.objects.filter(
        user=target.user, account=membership.account, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    audit_record(
        account=membership.account,
        actor=actor,
        action=AuditAction.MEMBER_REMOVED,
        target=target,
        details={"email": target.user.email, "role": target.role},
    )
    target.delete()


# ---------------------------------------------------------------- passwords and login


@transaction.atomic
def password_change(*, user: User, current_password: str, new_password: str) -> None:
    """Change one's own password, proving the current one."""
    if len(current_password) > PASSWORD_MAX or not user.check_password(current_password):
        raise ValidationFailed(
            "The current password is not right.",
            code="password_incorrect",
            detail={"fields": {"current_password": "incorrect"}},
        )
    if new_password == current_password:
        raise ValidationFailed(
            "Choose a password different from the current one.",
            code="password_unchanged",
            detail={"fields": {"new_password": "unchanged"}},
        )
    _check_password(new_password, user=user)
    user.set_password(new_password)
    user.must_change_password = False
    user.save(update_fields=["password", "must_change_password"])
    for membership in user.memberships.all():
        audit_record(
            account=membership.account,
            actor=user,
            action=AuditAction.USER_PASSWORD_CHANGED,
            target=user,
        )


@dataclass(frozen=True)
class _LoginLimit:
    """One rule: at most ``limit`` failures among ``failures`` within ``window``."""

    scope: str
    failures: QuerySet[LoginAttempt]
    limit: int
    window: timedelta


def _login_limits(*, email: str, address: str) -> list[_LoginLimit]:
    """The rules that apply to a login of ``email`` from ``address`` right now.

    * ``user_address``: one person (or one guesser) at one address; a success there starts
      the count again.
    * ``address``: one address trying many users.
    * ``user``: every address together, over a longer window: a distributed guesser is slowed
      too. It spares an address the user logged in from in the last
      ``LOGIN_KNOWN_ADDRESS_DAYS``, so the owner at their own address still gets in.
    """
    now = timezone.now()
    window = timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    ceiling = timedelta(seconds=settings.LOGIN_USER_CEILING_WINDOW_SECONDS)
    failures = LoginAttempt.objects.filter(succeeded=False)
    last_success = (
        LoginAttempt.objects.filter(email=email, address=address, succeeded=True)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    pair_since = now - window if last_success is None else max(now - window, last_success)
    limits = [
        _LoginLimit("user_address", failures.filter(email=email, address=address,
                                                    at__gt=pair_since),
                    settings.LOGIN_FAILURES_PER_USER_ADDRESS, window),
        _LoginLimit("address", failures.filter(address=address, at__gte=now - window),
                    settings.LOGIN_FAILURES_PER_ADDRESS, window),
    ]
    known = last_success is not None and last_success >= now - timedelta(
        days=settings.LOGIN_KNOWN_ADDRESS_DAYS
    )
    if not known:
        limits.append(_LoginLimit("user", failures.filter(email=email, at__gte=now - ceiling),
                                  settings.LOGIN_FAILURES_PER_USER, ceiling))
    return limits


def _login_refusal(*, email: str, address: str) -> RateLimited | None:
    """The 429 to answer when a rule is full: seconds until its oldest counted failure ages
    out of the window. Refused attempts are not recorded: waiting is what unlocks."""
    for rule in _login_limits(email=email, address=address):
        recent = list(rule.failures.order_by("-at").values_list("at", flat=True)[: rule.limit])
        if len(recent) >= rule.limit:
            wait = (recent[-1] + rule.window - timezone.now()).total_seconds()
            retry_after = max(1, math.ceil(wait))
            return RateLimited(
                f"Too many failed logins. Try again in {retry_after} seconds.",
                code="login_rate_limited",
                detail={"retry_after": retry_after, "scope": rule.scope},
            )
    return None


def login_authenticate(*, email: str, password: str, address: str) -> User:
    """Check an e-mail and password, rate-limited (:func:`_login_limits`).

    Every attempt is recorded (without the password). Errors: ``login_rate_limited`` (429,
    ``detail.retry_after`` and ``detail.scope``),
    ``invalid_credentials`` (401, the same for an unknown user and a wrong password, so the
    answer does not reveal who has an account) and ``user_disabled`` (401, only said to someone
    who knew the password).
    """
    email = normalize_email(email)[:EMAIL_MAX]
    address = address[:64]
    refusal = _login_refusal(email=email, address=address)
    if refusal is not None:
        raise refusal
    user = User.objects.filter(email=email).first()
    ok = (
        user is not None
        and len(password) <= PASSWORD_MAX
        and user.has_usable_password()
        and user.check_password(password)
    )
    with transaction.atomic():
        LoginAttempt.objects.create(email=email, address=address, succeeded=ok)
        now = timezone.now()
        LoginAttempt.objects.filter(succeeded=False, at__lt=now - LOGIN_ATTEMPT_RETENTION).delete()
        # Successes are kept longer: they make an address known to the user's ceiling.
        LoginAttempt.objects.filter(
            succeeded=True, at__lt=now - timedelta(days=settings.LOGIN_KNOWN_ADDRESS_DAYS)
        ).delete()
    if not ok or user is None:
        if user is not None:
            with transaction.atomic():
                for membership in user.memberships.all():
                    audit_record(
                        account=membership.account,
                        actor=None,
                        action=AuditAction.USER_LOGIN_FAILED,
                        target=user,
                        details={"email": email, "address": address},
                    )
        raise AuthenticationFailed(
            "The e-mail address or password is not right.", code="invalid_credentials"
        )
    if not user.is_active:
        raise AuthenticationFailed(
            "This user is disabled. Ask an administrator of your account.",
            code="user_disabled",
        )
    return user


# ---------------------------------------------------------------- API tokens


@transaction.atomic
def api_token_create(
    *, actor: User, membership: Membership, name: str
) -> tuple[ApiToken, str]:
    """Create a personal API token for the member, acting in their account.

    Returns ``(token, plaintext)``; the plaintext is never stored and cannot be shown again.
    """
    require(membership, Action.MANAGE_OWN_TOKENS)
    if membership.user_id != actor.pk:
        raise PermissionDenied("You may only create tokens for yourself.", code="not_your_token")
    name = _clean_name(name)
    plaintext = tokens.new_token()
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=actor,
                account=membership.account,
                name=name,
                prefix=tokens.display_prefix(plaintext),
                digest=tokens.token_digest(plaintext),
            )
    except IntegrityError:
        raise Conflict(
            f"You already have an active token named {name!r} in this account.",
            code="token_name_taken",
        ) from None
    audit_record(
        account=membership.account,
        actor=actor,
        action=AuditAction.TOKEN_CREATED,
        target=token,
        details={"name": name, "token_prefix": token.prefix, "owner": actor.email},
    )
    return token, plaintext


@transaction.atomic
def api_token_revoke(*, actor: User, membership: Membership, token_id: int) -> ApiToken:
    """Revoke a token: one's own, or (admins) any token in the account."""
    token = (
        ApiToken.objects.select_for_update()
        .select_related("user")
        .filter(account=membership.account, id=token_id)
        .first()
    )
    if token is None:
        raise NotFound("No such API token in this account.", code="token_not_found")
    if token.user_id == actor.pk:
        require(membership, Action.MANAGE_OWN_TOKENS)
    else:
        require(membership, Action.MANAGE_MEMBERS)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_record(
        account=membership.account,
        actor=actor,
        action=AuditAction.TOKEN_REVOKED,
        target=token,
        details={"name": token.name, "token_prefix": token.prefix, "owner": token.user.email},
    )
    return token


def api_token_issue_for_login(
    *, email: str, password: str, address: str, account_slug: str | None, name: str
) -> tuple[ApiToken, str]:
    """Log in with e-mail and password and mint a token, as ``moorage login`` does.

    Rate-limited like the login page. ``account_slug`` picks the account; without it the
    user's first account is used.
    """
    user = login_authenticate(email=email, password=password, address=address)
    if account_slug:
        membership = selectors.membership_by_slug(user=user, slug=account_slug)
    else:
        first = selectors.memberships_of_user(user=user).select_related("user").first()
        if first is None:
            raise NotFound(
                "You do not belong to any account yet. Ask an account admin to invite you, "
                "then accept the invitation on the Invitations page.",
                code="no_account",
            )
        membership = first
    return api_token_create(actor=user, membership=membership, name=name)


def api_token_authenticate(*, token: str) -> Membership:
    """The membership a bearer token acts as, or :class:`AuthenticationFailed`.

    Codes: ``token_invalid`` (malformed or unknown), ``token_revoked``, ``user_disabled``,
    ``membership_gone`` (the user left the account the token was made for).
    """
    if not tokens.is_well_formed(token):
        raise AuthenticationFailed(
            "The API token is malformed; tokens start with 'mrg_'.", code="token_invalid"
        )
    found = (
        ApiToken.objects.select_related("user", "account")
        .filter(digest=tokens.token_digest(token))
        .first()
    )
    if found is None:
        raise AuthenticationFailed("The API token is not valid.", code="token_invalid")
    if found.revoked_at is not None:
        raise AuthenticationFailed("The API token was revoked.", code="token_revoked")
    if not found.user.is_active:
        raise AuthenticationFailed("The token's user is disabled.", code="user_disabled")
    membership = (
        Membership.objects.select_related("user", "account")
        .filter(user=found.user, account=found.account)
        .first()
    )
    if membership is None:
        raise AuthenticationFailed(
            "The token's user no longer belongs to its account.", code="membership_gone"
        )
    now = timezone.now()
    if found.last_used_at is None or now - found.last_used_at > TOKEN_USE_RECORD_INTERVAL:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    return membership
