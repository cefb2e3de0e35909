"""The agent picks its runtime from the region's settings (the FAKE control plane sends them);
a runtime it cannot drive fails the deployments in words, and credentials keep syncing.

No engine is needed here: every deployment below fails before any engine call, and the
engine the runtimes point at does not exist (what runs is then unknown, and said so)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime, Runtime, SwarmRuntime, make_runtime
from moorage.agent.sync import SyncLoop
from moorage.agent.tests.conftest import Sleeps
from moorage.agent.tests.fakes import FakeControlPlane, FakeCredential, FakeDeployment
from moorage.protocol.enums import Runtime as RuntimeKind


def _nowhere(tmp_path: Path) -> str:
    return f"unix://{tmp_path}/no-engine.sock"


def _agent(config: AgentConfig, client: ControlPlaneClient, replica: Replica, sleeps: Sleeps,
           runtime: DockerRuntime | SwarmRuntime, *, factory: bool
           ) -> tuple[SyncLoop, Deployer]:
    logger = logging.getLogger("moorage.agent")
    host = runtime.docker_host

    def runtime_for(kind: RuntimeKind) -> Runtime:
        # As `moorage agent` makes them: the same options for either runtime.
        return make_runtime(kind, host, region="eu-1", tls=False, api_timeout=2)

    deployer = Deployer(replica, client, runtime, logger,
                        runtime_factory=runtime_for if factory else None)
    loop = SyncLoop(config, client, replica, logger, threading.Event(), sleep=sleeps,
                    deployer=deployer)
    return loop, deployer


def _deployment(fake: FakeControlPlane, deployment_id: int = 41) -> None:
    fake.put_deployment(FakeDeployment(id=deployment_id, account_id=1, app_id=3, app="api",
                                       number=deployment_id, image="registry.test/a/api:1"))


def test_the_agent_follows_the_regions_runtime(
    fake: FakeControlPlane, config: AgentConfig, client: ControlPlaneClient, replica: Replica,
    sleeps: Sleeps, tmp_path: Path,
) -> None:
    fake.add_account(1, "acme")
    loop, deployer = _agent(config, client, replica, sleeps,
                            DockerRuntime(_nowhere(tmp_path)), factory=True)
    loop.run_once(backoff=False)
    assert isinstance(deployer.runtime, DockerRuntime)
    fake.set_settings("swarm")
    loop.run_once(backoff=False)
    assert isinstance(deployer.runtime, SwarmRuntime)
    assert deployer.runtime.region == "eu-1"
    assert deployer.runtime.engine.docker_host == _nowhere(tmp_path)


@pytest.mark.parametrize(("settings", "factory", "words"), [
    ("kubernetes", True, "runs on 'kubernetes', which this agent cannot drive"),
    ("swarm", False, "runs on swarm, but this agent was started for docker"),
], ids=["unknown", "fixed"])
def test_a_runtime_the_agent_cannot_drive_fails_deployments_and_credentials_still_sync(
    fake: FakeControlPlane, config: AgentConfig, client: ControlPlaneClient, replica: Replica,
    sleeps: Sleeps, tmp_path: Path, settings: str, factory: bool, words: str,
) -> None:
    fake.add_account(1, "acme")
    fake.set_settings(settings)
    _deployment(fake)
    loop, _ = _agent(config, client, replica, sleeps, DockerRuntime(_nowhere(tmp_path)),
                     factory=factory)
    loop.run_once(backoff=False)
    [(deployment_id, report)] = fake.reports
    assert (deployment_id, report["status"]) == (41, "failed")
    assert report["error"]["code"] == "runtime_unsupported"
    assert words in report["error"]["message"]
    assert fake.runtime_reports == []  # nothing is said about an engine it does not drive

    fake.put_credential(FakeCredential(17, 1, "octo", "a-secret", is_default=True))
    loop.run_once(backoff=False)
    assert replica.credentials_held() == {17: 1}


def test_a_build_in_a_swarm_region_without_registry_fails_before_fetching_anything(
    fake: FakeControlPlane, config: AgentConfig, client: ControlPlaneClient, replica: Replica,
    sleeps: Sleeps, tmp_path: Path,
) -> None:
    fake.add_account(1, "acme")
    fake.set_settings("swarm")
    fake.put_deployment(FakeDeployment(
        id=42, account_id=1, app_id=3, app="api", number=1, image=None,
        build={"git": {"url": "https://git.test/acme/api.git", "ref": "main"},
               "dockerfile": "Dockerfile", "context": ".", "build_args": {}, "pull": None}))
    loop, _ = _agent(config, client, replica, sleeps,
                     SwarmRuntime(_nowhere(tmp_path), region="eu-1", api_timeout=2),
                     factory=True)
    loop.run_once(backoff=False)
    [(_, report)] = fake.reports
    assert report["error"]["code"] == "region_registry_missing"
    assert "moorage regions update eu-1 --registry" in report["error"]["message"]
    assert not any("Fetching" in line for line in report["log"])
