"""The credential model."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from moorage.credentials.choices import CredentialType, TestResult
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
        ]
        indexes = [models.Index(fields=["account", "type", "created_at"], name="credential_age")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_type_display()}, {self.server})"
