"""Users, the accounts they belong to, and how they prove who they are."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower

from moorage.accounts.choices import InvitationStatus, Role


class UserManager(BaseUserManager["User"]):
    """Users are identified by their e-mail address, compared case-insensitively."""

    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        user = self.model(email=normalize_email(email), **extra)
        if password is None:
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("is_platform_staff", True)
        return self.create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> User:
        return self.get(email=normalize_email(username or ""))


def normalize_email(email: str) -> str:
    """One spelling per address: stripped and lower-cased (also the local part, on purpose)."""
    return email.strip().lower()


class User(AbstractUser):
    """A person who logs in. They act inside accounts through their memberships.

    ``is_platform_staff`` marks the operators of this Moorage installation (they manage regions);
    ``is_staff`` keeps Django's meaning (may open the operators' admin site).
    """

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True, max_length=254)
    is_platform_staff = models.BooleanField(
        default=False, help_text="Operates this Moorage installation (manages regions)."
    )
    must_change_password = models.BooleanField(
        default=False, help_text="Logged in with a one-time password; must choose a new one."
    )

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: ClassVar[UserManager] = UserManager()  # type: ignore[assignment]

    class Meta:
        ordering = ("email",)

    def __str__(self) -> str:
        return self.email


class Account(models.Model):
    """A tenant: everything in Moorage (credentials, apps, deployments) belongs to one."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one account. A user may belong to several accounts."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("account__name", "user__email")
        constraints = [
            models.UniqueConstraint(fields=["user", "account"], name="membership_unique"),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.account} ({self.role})"


class Invitation(models.Model):
    """An admin's offer of a role in an account to whoever logs in with ``email``.

    It becomes a membership only when that person accepts it after logging in, so nobody is
    added to an account without consent; and making one looks the same whether or not a user
    with that e-mail exists, so it reveals nothing about the installation's users.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="invitations")
    email = models.CharField(max_length=254)
    role = models.CharField(max_length=16, choices=Role.choices)
    invited_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=InvitationStatus.choices, default=InvitationStatus.PENDING
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["account", "email"],
                condition=models.Q(status=InvitationStatus.PENDING),
                name="invitation_pending_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="invitation_role_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=InvitationStatus.values),
                name="invitation_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["email", "status"], name="invitation_email_status")]

    def __str__(self) -> str:
        return f"{self.email} to {self.account} as {self.role} ({self.status})"


class ApiToken(models.Model):
    """A personal API token, bound to one user acting in one account.

    Only a SHA-256 digest of the token is stored; the token itself is shown once. Tokens are
    256-bit random strings, so an unsalted fast digest is enough: there is nothing to guess.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["user", "account", "name"],
                condition=models.Q(revoked_at__isnull=True),
                name="api_token_active_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class LoginAttempt(models.Model):
    """One attempt to log in: failures are kept for a day to rate-limit guessing, successes
    for ``LOGIN_KNOWN_ADDRESS_DAYS`` to know the addresses a user logs in from."""

    email = models.CharField(max_length=254)
    address = models.CharField(max_length=64)
    succeeded = models.BooleanField()
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            models.Index(Lower("email"), "at", name="login_attempt_email_at"),
            models.Index(fields=["address", "at"], name="login_attempt_address_at"),
            models.Index(fields=["email", "address", "at"], name="login_attempt_pair_at"),
        ]

    def __str__(self) -> str:
        return f"{self.email} from {self.address} at {self.at:%Y-%m-%d %H:%M:%S}"
