"""The engines a region's agent drives, behind one interface (:mod:`.base`).

- :mod:`.docker` — one Docker Engine (or Podman's compatible API): one container per app.
"""

from __future__ import annotations

from moorage.agent.runtime.base import (
    AppSpec,
    BuildResult,
    DeployEvents,
    DeployResult,
    ImageSource,
    PullProgress,
    PullResult,
    RunningApp,
    Runtime,
)
from moorage.agent.runtime.docker import DEFAULT_DOCKER_HOST, DockerRuntime
from moorage.protocol.logs import LogLine

__all__ = [
    "DEFAULT_DOCKER_HOST",
    "AppSpec",
    "BuildResult",
    "DeployEvents",
    "DeployResult",
    "DockerRuntime",
    "ImageSource",
    "LogLine",
    "PullProgress",
    "PullResult",
    "RunningApp",
    "Runtime",
]
