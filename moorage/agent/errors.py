"""What can go wrong between an agent and its control plane, sorted by what the agent does.

The sync loop branches on the class, not on messages: :class:`AgentAuthError` stops the agent
(the CLI exits 3), :class:`TransientError` is retried with backoff, :class:`ProtocolError` and
:class:`~moorage.protocol.envelopes.TamperedPayload` (with :class:`MalformedPayload`) are
logged, not applied, and retried later. The deployer turns :class:`DeployError` into a failed
deployment with its ``code``. No message ever holds the token, the key or a secret.
"""

from __future__ import annotations

from moorage.protocol.envelopes import TamperedPayload

__all__ = [
    "AgentAuthError",
    "AgentError",
    "ConfigurationError",
    "CredentialNotFound",
    "DeployError",
    "LogsError",
    "MalformedPayload",
    "ProtocolError",
    "ReplicaError",
    "TamperedPayload",
    "TransientError",
]


class AgentError(Exception):
    """Root of the agent's own errors (payload errors derive from ``ValueError`` instead)."""


class ConfigurationError(AgentError):
    """The agent cannot start as configured; the message names the setting or file."""


class AgentAuthError(AgentError):
    """The control plane refused the region token or key: fatal, retrying cannot help.

    ``code`` is the API's (``region_token_invalid``, ``region_token_revoked``,
    ``not_authenticated`` or ``region_key_unknown``) so the CLI can say whether the token is
    wrong or was rotated, or the key file is not the region's.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(AgentError):
    """The control plane answered with a 4xx the protocol does not expect (a bug, a version
    mismatch, a proxy in the way): not fatal, but retrying at full speed would not help."""

    def __init__(self, message: str, *, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientError(AgentError):
    """The control plane could not be reached or answered 5xx/429: retry with backoff.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one (a 503 of an
    overloaded control plane): the backoff waits at least that long."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedPayload(TamperedPayload):
    """A payload that passed its MAC but does not have the protocol's shape (or is for
    another region, another ``since``): refused like a tampered one, never half-applied."""


class ReplicaError(AgentError):
    """The local replica cannot take this payload (another region's data, a gap in the
    revisions, no snapshot yet)."""


class CredentialNotFound(AgentError, LookupError):
    """The replica holds no credential with this id (deleted, or not in this region)."""


class DeployError(AgentError):
    """A pull or run that failed, with a stable ``code`` and a message for the app's owner.

    Codes of the runtimes: ``registry_unauthorized`` (credential rejected, or a login is
    required), ``registry_forbidden`` (no access to the repository), ``image_not_found``,
    ``registry_rate_limited``, ``registry_unreachable``, ``engine_unreachable``,
    ``pull_timeout``, ``pull_failed`` (anything else the engine said), ``invalid_image``,
    ``container_start_failed`` (the engine could not start it; its reason quoted),
    ``container_exited``, ``container_not_ready``, ``port_in_use``, ``container_failed``;
    of builds: ``build_*``, ``git_*``, ``dockerfile_*``, ``source_*``; of the deployer:
    ``credential_*``, ``env_secret_unreadable``, ``superseded``, ``agent_error``.
    ``logs`` holds the last output lines (container or build) worth showing.
    The message never holds a secret (engine text is scrubbed of the password).
    """

    def __init__(self, code: str, message: str, *, logs: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.logs = logs or []


class LogsError(AgentError):
    """Reading an app's logs failed, with a stable ``code`` and a message for its owner:
    ``app_not_running`` (nothing of the app on the engine), ``engine_unreachable``,
    ``logs_failed`` (what the engine said), ``agent_busy`` (too many requests at once).
    Never holds a line of the logs themselves."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
