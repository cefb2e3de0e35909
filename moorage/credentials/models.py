"""The credential model."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from moorage.credentials.choices import CredentialType, LoginSource, TestResult
from moorage.keys.fields import SealedTextField


class Credential(models.Model):
    """A login an account stores once and its apps select: a registry login or a git token.

    ``secret`` (the registry password or the git token) is sealed with AES-256-GCM bound to the
    account, this credential and the field (:data:`moorage.keys.registry.CREDENTIAL_SECRET`);
    it is written and read only through :mod:`moorage.credentials.vault`. ``revision`` grows
    with every change regions must see (server, username, e-mail, secret, being the default),
    so deployments can record which revision they used and regions can report which one they
    hold.

    At most one container-registry credential per account is the default (a partial unique
    index); the services keep it exactly one while any exists.
    """

    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="credentials"
    )
    type = models.CharField(max_length=32, choices=CredentialType.choices)
    name = models.CharField(max_length=100)
    server = models.CharField(
        max_length=255, help_text="Canonical registry host, or the git host, e.g. ghcr.io."
    )
    email = models.EmailField(max_length=254, blank=True)
    username = models.CharField(max_length=255)
    secret = SealedTextField(help_text="Sealed; never shown.")
    login_source = models.CharField(
        max_length=32, choices=LoginSource.choices, default=LoginSource.STATIC,
        help_text="static: the secret is the password; otherwise the secret is a cloud key the "
        "control plane exchanges for short-lived tokens (LoginToken).",
    )
    aws_access_key_id = models.CharField(max_length=128, blank=True)
    aws_region = models.CharField(max_length=32, blank=True)
    revision = models.PositiveIntegerField(default=1)
    is_default = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_result = models.CharField(max_length=32, choices=TestResult.choices, blank=True)
    last_test_message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ("name", "id")
        constraints = [
            # Case-insensitive: "Prod" and "prod" in one select would be one trap.
            models.UniqueConstraint(
                "account", "type", Lower("name"), name="credential_name_unique_ci"
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(is_default=True),
                name="credential_one_default_per_account",
            ),
            models.CheckConstraint(
                condition=models.Q(is_default=False)
                | models.Q(type=CredentialType.CONTAINER_REGISTRY),
                name="credential_default_is_registry",
            ),
            models.CheckConstraint(
                condition=models.Q(type__in=CredentialType.values), name="credential_type_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(login_source__in=LoginSource.values),
                name="credential_login_source_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(login_source=LoginSource.STATIC)
                | models.Q(type=CredentialType.CONTAINER_REGISTRY),
                name="credential_exchanged_is_registry",
            ),
        ]
        indexes = [models.Index(fields=["account", "type", "created_at"], name="credential_age")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_type_display()}, {self.server})"


class LoginToken(models.Model):
    """The short-lived login an exchanged credential holds now, and how refreshing it goes.

    Only credentials whose login source is exchanged (``aws_ecr``, ``gcp_service_account``)
    have one, made in the same transaction as the credential from a first successful exchange:
    such a credential always has a token to hand to regions. ``token`` (the short-lived
    password) is sealed like the credential's secret, bound to its account, credential and
    the field ``login_token``; ``Credential.username`` holds the token's user name.

    ``expires_at`` is what the issuer said, possibly already past (moto says 2015): the token
    is then used until the registry refuses it and refreshed at the shortest interval.
    ``refresh_due_at`` is when the refresh worker takes it next; ``claimed_until`` is the lease
    of a refresh in flight, so several control-plane processes refresh a token once. A failing
    refresh keeps the previous token and records ``failing_since``, the classified
    ``failure_code`` and ``failure_message``, and counts ``failures`` (consecutive) and
    ``failures_total`` (ever: the operators' metric).
    """

    credential = models.OneToOneField(
        Credential, on_delete=models.CASCADE, primary_key=True, related_name="login_token"
    )
    token = SealedTextField(help_text="Sealed; never shown.")
    refreshed_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    refresh_due_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    failures = models.PositiveIntegerField(default=0)
    failures_total = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["refresh_due_at"], name="login_token_due")]

    def __str__(self) -> str:
        return f"token of credential {self.credential_id}"

    def valid_until(self) -> datetime | None:
        """The expiry to trust: the issuer's, unless it was already past when the token came
        (then nobody knows; the registry decides)."""
        return self.expires_at if self.expires_at > self.refreshed_at else None

    def expired(self, now: datetime) -> bool:
        """Whether the token is known to have expired by ``now``."""
        until = self.valid_until()
        return until is not None and until <= now
