"""Fixtures of the end-to-end deploy and build tests: one region and its agent, in process.

The agent is the real one (sync loop, deployer, docker runtime) talking to the live server
over HTTP and to the session's real dockerd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from moorage.testing.agents import InProcessAgent
from moorage.testing.dockerd import Dockerd
from moorage.testing.regions import AgentView, make_region

RunAgent = Callable[[], None]


@pytest.fixture
def region() -> AgentView:
    return make_region("eu-1")


@pytest.fixture
def run_agent(
    region: AgentView, live_server: object, dockerd: Dockerd, tmp_path: Path,
    docker_client: docker.DockerClient,
) -> Iterator[RunAgent]:
    """Run the region's agent until it has nothing left to do (sync, deploy, report)."""
    agent = InProcessAgent(region, url=str(live_server.url),  # type: ignore[attr-defined]
                           docker_host=dockerd.base_url, data_dir=tmp_path)
    yield agent.run_until_idle
    agent.stop()
