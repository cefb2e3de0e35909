"""Deployments end to end on the agent side: the FAKE control plane (``fakes.py``) sends them,
the real sync loop applies them, the deployer runs them on a REAL dockerd pulling from a REAL
registry, and the reports come back to the fake."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from moorage.agent.backoff import Backoff
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime
from moorage.agent.sync import SyncLoop
from moorage.agent.tests.conftest import Sleeps
from moorage.agent.tests.fakes import FakeControlPlane, FakeCredential, FakeDeployment, always
from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.ports import free_port
from moorage.testing.registry import RegistryServer

PASSWORD = "pw-Deployer-Qx81z"
DB_PASSWORD = "db-secret-Vv27p"
MakeAgent = Callable[[], SyncLoop]


@pytest.fixture
def runtime(dockerd: Dockerd, docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(dockerd.base_url, pull_timeout=60, ready_timeout=15, stop_timeout=1)


@pytest.fixture
def make_agent(
    config: AgentConfig, client: ControlPlaneClient, replica: Replica, runtime: DockerRuntime,
    sleeps: Sleeps,
) -> MakeAgent:
    """A sync loop with a deployer; called again, it is the agent restarted on its replica."""

    def make() -> SyncLoop:
        logger = logging.getLogger("moorage.agent")
        deployer = Deployer(replica, client, runtime, logger, backoff=Backoff(rand=always(0.5)))
        return SyncLoop(config, client, replica, logger, threading.Event(), sleep=sleeps,
                        backoff=Backoff(rand=always(0.5)), deployer=deployer)

    return make


@pytest.fixture
def app_image(
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    user = f"dep-{request.node.name[-40:]}".replace("_", "-")
    yield busybox_image(registry_basic, f"{user}/api", "1.0")


def statuses(fake: FakeControlPlane, deployment_id: int) -> list[str]:
    return [body["status"] for i, body in fake.reports if i == deployment_id]


def seeded(fake: FakeControlPlane, registry: RegistryServer, user: str, **deployment: Any) -> int:
    registry.add_user(user, PASSWORD)
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, user, PASSWORD, name="reg-prod",
                                       server=registry.host, is_default=True))
    fields: dict[str, Any] = {"credential_id": 17} | deployment
    return fake.put_deployment(FakeDeployment(id=41, account_id=1, app_id=3, app="api",
                                              number=1, **fields))


def test_a_deployment_goes_pulling_starting_running_and_is_not_redeployed_on_restart(
    fake: FakeControlPlane, make_agent: MakeAgent, replica: Replica, config: AgentConfig,
    registry_basic: RegistryServer, app_image: str, docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    seeded(fake, registry_basic, "dep-run", image=app_image, port=port,
           command=["httpd", "-f", "-p", str(port)], env={"LOG_LEVEL": "info"},
           secret_env={"DB_PASSWORD": DB_PASSWORD})
    make_agent().run_once()

    assert statuses(fake, 41) == ["pulling", "starting", "running"]
    pulling, starting, running = (body for _, body in fake.reports)
    assert pulling["log"] == [
        f"Pulling {app_image} with 'reg-prod' (revision 1) from {registry_basic.host}"]
    digest = docker_client.api.inspect_image(app_image)["RepoDigests"][0].split("@")[1]
    assert starting["image_digest"] == running["image_digest"] == digest
    assert (running["credential_id"], running["credential_revision"]) == (17, 1)
    container = docker_client.containers.get(running["container_id"])
    assert container.name == "moorage-acme-api-41"
    assert container.labels["moorage.region"] == "eu-1"
    assert {"LOG_LEVEL=info", f"DB_PASSWORD={DB_PASSWORD}"} <= set(container.attrs["Config"]["Env"])
    assert replica.get_deployment(41).state == "done"  # type: ignore[union-attr]

    # Restarted: the finished deployment is reported again, not run again.
    fake.reports.clear()
    make_agent().run_once()
    assert fake.reports == [(41, running)]
    assert [c.id for c in docker_client.containers.list(all=True)
            if c.labels.get("moorage.app") == "3"] == [container.id]

    # The registry password is nowhere: replica files, agent logs, containers. The app's
    # own secret is in its container's environment (that is its purpose) and nowhere else.
    replica.close()
    for path in Path(config.data_dir).iterdir():
        data = path.read_bytes()
        assert PASSWORD.encode() not in data and DB_PASSWORD.encode() not in data, path
    assert PASSWORD not in caplog.text and DB_PASSWORD not in caplog.text
    assert PASSWORD not in json.dumps(fake.reports)
    for c in docker_client.containers.list(all=True):
        assert PASSWORD not in json.dumps(c.attrs)


def test_the_next_deployment_replaces_the_container_and_app_delete_removes_it(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient,
) -> None:
    port = free_port()
    httpd = ["httpd", "-f", "-p", str(port)]
    seeded(fake, registry_basic, "dep-next", image=app_image, port=port, command=httpd)
    agent = make_agent()
    agent.run_once()
    first = fake.reports[-1][1]["container_id"]
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, app_image, credential_id=17,
                                       port=port, command=httpd))
    agent.run_once()
    assert statuses(fake, 42) == ["pulling", "starting", "running"]
    second = fake.reports[-1][1]["container_id"]
    assert "Removing 1 previous container(s)" in fake.reports[-1][1]["log"]
    ids = [c.id for c in docker_client.containers.list(all=True)]
    assert second in ids and first not in ids

    fake.delete_app(1, 3)
    agent.run_once()
    assert second not in [c.id for c in docker_client.containers.list(all=True)]


def test_the_running_report_leaves_before_the_clean_up_which_follows_it(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient,
) -> None:
    """The restart policy and the removal of the previous container change nothing of what
    serves: the final report does not wait for them, and they happen right after it."""
    port = free_port()
    httpd = ["httpd", "-f", "-p", str(port)]
    seeded(fake, registry_basic, "dep-after", image=app_image, port=port, command=httpd)
    agent = make_agent()
    agent.run_once()
    first = fake.reports[-1][1]["container_id"]
    at_report: dict[str, Any] = {}

    def look(deployment_id: int, body: dict[str, Any]) -> None:
        if deployment_id == 42 and body["status"] == "running":
            new = docker_client.containers.get(body["container_id"])
            at_report["policy"] = new.attrs["HostConfig"]["RestartPolicy"]["Name"]
            at_report["previous there"] = first in [
                c.id for c in docker_client.containers.list(all=True)]

    fake.on_report = look
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, app_image, credential_id=17,
                                       port=port, command=httpd))
    agent.run_once()
    assert statuses(fake, 42) == ["pulling", "starting", "running"]
    assert at_report["policy"] in ("", "no") and at_report["previous there"] is True
    second = docker_client.containers.get(fake.reports[-1][1]["container_id"])
    assert second.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert first not in [c.id for c in docker_client.containers.list(all=True)]


def test_a_clean_up_that_fails_after_the_report_is_logged_and_the_deployment_stays_running(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient, caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    seeded(fake, registry_basic, "dep-after-fails", image=app_image, port=port,
           command=["httpd", "-f", "-p", str(port)])

    def remove_it(deployment_id: int, body: dict[str, Any]) -> None:
        if body["status"] == "running":  # gone before its restart policy can be set
            docker_client.containers.get(body["container_id"]).remove(force=True)

    fake.on_report = remove_it
    agent = make_agent()
    agent.run_once()
    assert statuses(fake, 41) == ["pulling", "starting", "running"]
    assert "deployment 41 (api #1) runs, but its clean-up failed: container_failed" \
        in caplog.text
    fake.on_report = None
    agent.run_once()  # finished: not run again, no second final report
    assert statuses(fake, 41) == ["pulling", "starting", "running"]


def test_a_failing_deployment_reports_why_and_the_previous_one_keeps_serving(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient,
) -> None:
    port = free_port()
    seeded(fake, registry_basic, "dep-fail", image=app_image, port=port,
           command=["httpd", "-f", "-p", str(port)])
    agent = make_agent()
    agent.run_once()
    serving = fake.reports[-1][1]["container_id"]
    fake.put_deployment(FakeDeployment(
        42, 1, 3, "api", 2, app_image, credential_id=17, port=port,
        command=["sh", "-c", "echo token=$API_TOKEN; exit 1"],
        secret_env={"API_TOKEN": DB_PASSWORD}))
    agent.run_once()
    assert statuses(fake, 42) == ["pulling", "starting", "failed"]
    failed = fake.reports[-1][1]
    assert failed["error"]["code"] == "container_exited"
    assert failed["log"][-2:] == ["Last log lines of the container:", "  token=***"]
    assert DB_PASSWORD not in json.dumps(fake.reports)
    assert docker_client.containers.get(serving).status == "running"


def test_a_command_that_cannot_start_is_classified_in_the_engines_words(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient,
) -> None:
    port = free_port()
    seeded(fake, registry_basic, "dep-nocmd", image=app_image, port=port,
           command=["httpd", "-f", "-p", str(port)])
    agent = make_agent()
    agent.run_once()
    serving = fake.reports[-1][1]["container_id"]
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, app_image, credential_id=17,
                                       port=port, command=["nosuchcmd"]))
    agent.run_once()
    assert statuses(fake, 42) == ["pulling", "starting", "failed"]
    error = fake.reports[-1][1]["error"]
    assert error["code"] == "container_start_failed"
    assert error["message"].startswith('The container could not start: exec: "nosuchcmd": '
                                       "executable file not found in $PATH.")
    assert docker_client.containers.get(serving).status == "running"


def test_the_apps_readiness_timeout_reaches_the_runtime(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str, docker_client: docker.DockerClient,
) -> None:
    """The runtime waits 15 s by default; the deployment says 2, and 2 it is."""
    port = free_port()
    seeded(fake, registry_basic, "dep-ready", image=app_image, port=port,
           command=["sleep", "60"], ready_timeout=2)
    make_agent().run_once()
    assert statuses(fake, 41) == ["pulling", "starting", "failed"]
    error = fake.reports[-1][1]["error"]
    assert error == {"code": "container_not_ready",
                     "message": f"The container did not accept connections on port {port} "
                                "within 2 s (the app's readiness timeout)."}
    assert [c for c in docker_client.containers.list(all=True)
            if c.labels.get("moorage.app") == "3"] == []


def test_a_credential_for_another_host_fails_without_any_network_call(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str,
) -> None:
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, "dep-host", PASSWORD, name="reg-prod",
                                       server="ghcr.io"))
    agent = make_agent()
    agent.run_once()
    for number in (1, 2):  # two deployments of the app in one batch
        fake.put_deployment(FakeDeployment(40 + number, 1, 3, "api", number, app_image,
                                           credential_id=17))
    before = registry_basic.logs()
    agent.run_once()
    # The first deployment is superseded by the second, which fails on the host check.
    assert fake.reports[0] == (41, {"status": "failed", "log": [], "error": {
        "code": "superseded",
        "message": "Deployment #1 of api was superseded by #2 before it started."}})
    assert statuses(fake, 42) == ["failed"]
    error = fake.reports[-1][1]["error"]
    assert error["code"] == "credential_host_mismatch"
    assert error["message"].startswith(
        f"The credential 'reg-prod' is for the registry ghcr.io, but the image {app_image} is "
        f"on {registry_basic.host}")
    assert registry_basic.logs()[len(before):].count("dep-host") == 0


def test_a_credential_revision_not_yet_held_syncs_first_then_fails_if_still_missing(
    fake: FakeControlPlane, make_agent: MakeAgent, registry_basic: RegistryServer,
    app_image: str,
) -> None:
    seeded(fake, registry_basic, "dep-rev", image=app_image, credential_revision=2)
    fake.requests.clear()
    make_agent().run_once()
    assert fake.requests[:3] == ["snapshot", "ack", "changes"]  # the sync asked for
    assert statuses(fake, 41) == ["failed"]
    assert fake.reports[-1][1]["error"] == {
        "code": "credential_not_synced",
        "message": "The credential 'reg-prod' (revision 2) has not reached region eu-1 yet "
                   "(it holds revision 1). Try again in a moment."}


def test_a_final_report_that_fails_is_kept_and_sent_later(
    fake: FakeControlPlane, make_agent: MakeAgent, replica: Replica,
    registry_basic: RegistryServer, app_image: str,
) -> None:
    seeded(fake, registry_basic, "dep-report", image=app_image)
    fake.credentials[17].server = "other.example"
    fake.put_credential(fake.credentials[17])
    fake.report_failures = [503]
    agent = make_agent()
    agent.run_once()
    assert fake.reports == []
    assert [d.id for d in replica.unreported()] == [41]
    assert agent.deployer is not None
    agent.deployer._quiet_until = 0  # the backoff has passed
    agent.run_once()
    assert statuses(fake, 41) == ["failed"]
    assert replica.unreported() == []
