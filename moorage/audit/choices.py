"""The catalogue of audited actions. Each domain adds its own here, never as a bare string."""

from django.db import models


class AuditAction(models.TextChoices):
    """What happened, as ``<entity>.<past tense verb>``."""

    INSTALLATION_INITIALISED = "installation.initialised", "Installation initialised"
    ACCOUNT_CREATED = "account.created", "Account created"
    ACCOUNT_RENAMED = "account.renamed", "Account renamed"
    MEMBER_ADDED = "member.added", "Member added"
    INVITATION_CREATED = "invitation.created", "Member invited"
    INVITATION_REVOKED = "invitation.revoked", "Invitation revoked"
    INVITATION_DECLINED = "invitation.declined", "Invitation declined"
    MEMBER_ROLE_CHANGED = "member.role_changed", "Member role changed"
    MEMBER_REMOVED = "member.removed", "Member removed"
    USER_CREATED = "user.created", "User created"
    USER_PASSWORD_CHANGED = "user.password_changed", "Password changed"
    USER_LOGGED_IN = "user.logged_in", "Logged in"
    USER_LOGIN_FAILED = "user.login_failed", "Login failed"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    CREDENTIAL_CREATED = "credential.created", "Credential added"
    CREDENTIAL_UPDATED = "credential.updated", "Credential changed"
    CREDENTIAL_SET_DEFAULT = "credential.set_default", "Credential set as default"
    CREDENTIAL_DELETED = "credential.deleted", "Credential deleted"
    CREDENTIAL_DEFAULT_PROMOTED = (
        "credential.default_promoted", "Credential became the default (the default was deleted)"
    )
    CREDENTIAL_TESTED = "credential.tested", "Credential tested"
    CREDENTIAL_EXPORTED = "credential.exported", "Credential exported"
    CREDENTIAL_TOKEN_REFRESHED = "credential.token_refreshed", "Credential token refreshed"
    CREDENTIAL_TOKEN_REFRESH_FAILED = (
        "credential.token_refresh_failed", "Credential token refresh failing"
    )
    CREDENTIAL_TOKEN_REFRESH_REQUESTED = (
        "credential.token_refresh_requested", "Credential token refresh requested"
    )
    REGION_CREATED = "region.created", "Region added"
    REGION_TOKEN_ROTATED = "region.token_rotated", "Region token rotated"
    REGION_KEY_ROTATED = "region.key_rotated", "Region key rotation started"
    REGION_KEY_ADOPTED = "region.key_adopted", "Region agent took the new key"
    REGION_UPDATED = "region.updated", "Region settings changed"
    REGION_REMOVED = "region.removed", "Region removed"
    REGION_DRAIN_STARTED = "region.drain_started", "Region drain started"
    REGION_DRAINED = "region.drained", "Region agent removed every app"
    ACCOUNT_REGIONS_CHANGED = "account.regions_changed", "Regions of the account changed"
    ACCOUNT_REGION_DISABLED = "account.region_disabled", "Region disabled for the account"
    ACCOUNT_REGION_ENABLED = "account.region_enabled", "Region enabled for the account"
    APP_CREATED = "app.created", "App created"
    APP_UPDATED = "app.updated", "App changed"
    APP_DELETED = "app.deleted", "App deleted"
    DEPLOY_STARTED = "deploy.started", "Deploy started"
    DEPLOY_FINISHED = "deploy.finished", "Deploy finished"
