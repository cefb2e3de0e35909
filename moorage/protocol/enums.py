"""The names that travel between the control plane and its agents.

Plain ``str`` enums, so a value compares equal to the text in a payload and the Django
``TextChoices`` of the control plane can take their values from here.
"""

from __future__ import annotations

import enum


class Runtime(enum.StrEnum):
    """What a region's agent drives (the snapshot's ``runtime``)."""

    DOCKER = "docker"
    SWARM = "swarm"


class NodeState(enum.StrEnum):
    """A Swarm node as its manager reports it (the runtime report's ``nodes``)."""

    READY = "ready"
    DOWN = "down"
    UNKNOWN = "unknown"
    DISCONNECTED = "disconnected"


class PullMode(enum.StrEnum):
    """How a deployment's image pull authenticates (a DEPLOYMENT's ``pull.mode``)."""

    CREDENTIAL = "credential"
    ANONYMOUS = "anonymous"


class ReportStatus(enum.StrEnum):
    """The status an agent reports for a deployment; ``running`` and ``failed`` are final."""

    BUILDING = "building"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"


class Op(enum.StrEnum):
    """The operations of a ``changes`` answer."""

    ACCOUNT_UPSERT = "account.upsert"
    ACCOUNT_DELETE = "account.delete"
    CREDENTIAL_UPSERT = "credential.upsert"
    CREDENTIAL_DELETE = "credential.delete"
    DEPLOYMENT_UPSERT = "deployment.upsert"
    APP_DELETE = "app.delete"
    LOGS_REQUEST = "logs.request"
    #: The region's own settings changed (its runtime, its registry).
    REGION_UPSERT = "region.upsert"
    #: The region is being removed: stop and remove every app it runs, then say so
    #: (``POST /agent/drained``).
    REGION_DRAIN = "region.drain"
