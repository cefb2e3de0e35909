"""Enumerations of the credentials domain."""

from django.db import models

from moorage.registry.logins import SourceName


class CredentialType(models.TextChoices):
    """What a credential logs in to."""

    CONTAINER_REGISTRY = "container_registry", "Container registry"
    GIT = "git", "Git"


class LoginSource(models.TextChoices):
    """How a container-registry credential logs in (``moorage.registry.logins``)."""

    STATIC = SourceName.STATIC.value, "Username and password"
    AWS_ECR = SourceName.AWS_ECR.value, "AWS ECR (access key, exchanged for tokens)"
    GCP_SERVICE_ACCOUNT = (SourceName.GCP_SERVICE_ACCOUNT.value,
                           "Google service account (key, exchanged for tokens)")


class TestResult(models.TextChoices):
    """The outcome of the last "Test connection", as the registry library classifies it."""

    __test__ = False  # not a pytest test class, despite the name

    OK = "ok", "Accepted"
    UNAUTHORIZED = "unauthorized", "Credential rejected"
    FORBIDDEN = "forbidden", "No access to the repository"
    NOT_FOUND = "not_found", "Image or tag not found"
    RATE_LIMITED = "rate_limited", "Rate limited"
    UNREACHABLE = "unreachable", "Registry unreachable"
    PROTOCOL_ERROR = "protocol_error", "Unexpected registry answer"
    HOST_MISMATCH = "host_mismatch", "Image is on another registry"
    REALM_REFUSED = "realm_refused", "Token service refused (plain HTTP to another host)"
    NETWORK_BLOCKED = "network_blocked", "Address in a blocked network"
    TIMEOUT = "timeout", "Registry too slow"
    RESPONSE_TOO_LARGE = "response_too_large", "Answer too large"
    EXCHANGE_FAILED = "exchange_failed", "Token exchange failed"
