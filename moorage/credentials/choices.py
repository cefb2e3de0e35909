"""Enumerations of the credentials domain."""

from django.db import models


class CredentialType(models.TextChoices):
    """What a credential logs in to."""

    CONTAINER_REGISTRY = "container_registry", "Container registry"
    GIT = "git", "Git"


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
