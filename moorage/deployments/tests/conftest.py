"""Fixtures of the end-to-end deploy and build tests: one region and its agent, in process.

The agent is the real one (sync loop, deployer, docker runtime) talking to the live server
over HTTP and to the session's real dockerd.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime
from moorage.agent.sync import SyncLoop
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
    config = AgentConfig(url=str(live_server.url), token=region.token,  # type: ignore[attr-defined]
                         region_key=region.key, data_dir=tmp_path / "agent",
                         docker_host=dockerd.base_url, wait=0)
    client = ControlPlaneClient(config)
    replica = Replica.in_dir(config.data_dir, region.key)
    logger = logging.getLogger("moorage.agent")
    runtime = DockerRuntime(dockerd.base_url, region=region.slug, pull_timeout=60,
                            ready_timeout=20, stop_timeout=1)
    (tmp_path / "builds").mkdir()
    deployer = Deployer(replica, client, runtime, logger, build_dir=tmp_path / "builds")
    loop = SyncLoop(config, client, replica, logger, threading.Event(), deployer=deployer)

    def run() -> None:
        for _ in range(4):
            loop.run_once(backoff=False)

    yield run
    client.close()
    replica.close()
