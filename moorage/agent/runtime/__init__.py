"""The engines a region's agent drives, behind one interface (:mod:`.base`).

- :mod:`.docker` — one Docker Engine (or Podman's compatible API): one container per app;
- :mod:`.swarm` — a Docker Swarm through one of its managers: one service per app.

The agent picks one from the region's ``runtime`` in its snapshot (:func:`make_runtime`).
"""

from __future__ import annotations

from typing import Any

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
from moorage.agent.runtime.swarm import SwarmRuntime
from moorage.protocol.enums import Runtime as RuntimeKind
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
    "SwarmRuntime",
    "make_runtime",
]


def make_runtime(kind: RuntimeKind, docker_host: str = DEFAULT_DOCKER_HOST, *,
                 region: str = "", **options: Any) -> Runtime:
    """The runtime for a region's ``runtime``: both talk to the Engine API at
    ``docker_host`` (a swarm's manager for ``swarm``). ``options`` go to its constructor."""
    if kind is RuntimeKind.SWARM:
        return SwarmRuntime(docker_host, region=region, **options)
    return DockerRuntime(docker_host, region=region, **options)
