"""Fixtures of the end-to-end deploy and build tests: one region and its agent, in process.

The agent is the real one (sync loop, deployer, docker runtime) talking to the live server
over HTTP and to the session's real dockerd.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from moorage.agent.runtime import Runtime, make_runtime
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.regions.services import RegistryInput
from moorage.testing.agents import InProcessAgent
from moorage.testing.dockerd import Dockerd
from moorage.testing.regions import AgentView, make_region
from moorage.testing.registry import RegistryServer
from moorage.testing.swarm import Swarm

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


# ----- a swarm region and its agent


#: Swarm runtime timings for tests: a short monitor and stop grace, bounded waits.
SWARM_TIMINGS = {"ready_timeout": 30, "monitor": 1.0, "stop_timeout": 1, "api_timeout": 15}

MakeAgent = Callable[..., InProcessAgent]


@pytest.fixture
def region_registry(registry_basic: RegistryServer) -> RegistryInput:
    """The swarm region's own registry: the Basic registry, with a user of the platform's."""
    login = RegistryInput(registry_basic.host, "region-" + secrets.token_hex(3),
                          "Region-Pw-" + secrets.token_hex(8))
    registry_basic.add_user(login.username, login.password)
    return login


@pytest.fixture
def swarm_region(region_registry: RegistryInput) -> AgentView:
    return make_region("sw-1", runtime="swarm", registry=region_registry)


@pytest.fixture
def swarm_agent(
    swarm_region: AgentView, live_server: object, swarm: Swarm,
    swarm_client: docker.DockerClient, tmp_path: Path,
) -> Iterator[MakeAgent]:
    """Make the swarm region's agent (a fresh data dir each: ``name``; ``background``: it
    long-polls in a thread once started); ``swarm_client`` removes what the test left."""
    made: list[InProcessAgent] = []

    def runtime_for(kind: RuntimeKind) -> Runtime:
        if kind is RuntimeKind.SWARM:
            return make_runtime(kind, swarm.base_url, region=swarm_region.slug, **SWARM_TIMINGS)
        return make_runtime(kind, swarm.base_url, region=swarm_region.slug)

    def make(name: str = "agent", *, background: bool = False) -> InProcessAgent:
        agent = InProcessAgent(swarm_region, url=str(live_server.url),  # type: ignore[attr-defined]
                               docker_host=swarm.base_url, data_dir=tmp_path / name,
                               background=background, runtime_for=runtime_for)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()
