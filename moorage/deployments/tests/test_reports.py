"""Deploy reports leave the agent in the background, in order, and the final one wins: the
real control plane (live server), the real agent in this process, a real dockerd and registry.
A progress report is lost on the way (it never arrives, or its answer never comes back) and
retried; the control plane still ends with the deployment ``running`` and every log line once,
in order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from moorage.agent.backoff import Backoff
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.errors import TransientError
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime
from moorage.agent.sync import SyncLoop
from moorage.apps.services import app_create
from moorage.testing.credentials import make_credential
from moorage.testing.dockerd import Dockerd
from moorage.testing.ports import free_port
from moorage.testing.regions import AgentView, deploy_one, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


class LossyClient(ControlPlaneClient):
    """The agent's real client, losing the first ``starting`` report: before it reaches the
    control plane (``"request"``) or after (``"answer"``, so the retry repeats it)."""

    def __init__(self, config: AgentConfig, lose: str) -> None:
        super().__init__(config)
        self.lose = lose
        self.delivered: list[str] = []
        self.lost: list[str] = []
        self._lock = threading.Lock()

    def report(self, deployment_id: int, body: dict[str, Any]) -> None:
        status = body["status"]
        with self._lock:
            losing = status == "starting" and not self.lost
            if losing:
                self.lost.append(status)
        if losing and self.lose == "request":
            raise TransientError("ReadError: the report was lost on the way")
        super().report(deployment_id, body)
        with self._lock:
            self.delivered.append(status)
        if losing:
            raise TransientError("ReadError: the answer to the report was lost")


@pytest.mark.parametrize("lose", ["request", "answer"])
def test_reports_arrive_in_order_and_the_final_status_wins_after_a_lost_progress_report(
    lose: str, region: AgentView, live_server: Any, dockerd: Dockerd, tmp_path: Path,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    owner = member_in(region, "Acme")
    user = f"reports-{lose}"
    registry_basic.add_user(user, "Reports-Pw-71")
    image = busybox_image(registry_basic, f"acme/reports-{lose}", "1.0")
    registry_basic.grant(user, f"acme/reports-{lose}")
    make_credential(owner, name="reg", server=registry_basic.host, username=user,
                    secret="Reports-Pw-71")
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     port=port, command=["/bin/sh", "-c", f"exec httpd -f -p {port}"])
    deployment = deploy_one(owner, app.pk)

    config = AgentConfig(url=str(live_server.url), token=region.token, region_key=region.key,
                         data_dir=tmp_path / "agent", docker_host=dockerd.base_url, wait=0)
    client = LossyClient(config, lose)
    replica = Replica.in_dir(config.data_dir, region.key)
    logger = logging.getLogger("moorage.agent")
    runtime = DockerRuntime(dockerd.base_url, region=region.slug, pull_timeout=60,
                            ready_timeout=20, stop_timeout=1)
    # rand() 0: a retry comes at once (no sleeping in tests); the order is what is tested.
    deployer = Deployer(replica, client, runtime, logger, backoff=Backoff(rand=lambda: 0.0))
    loop = SyncLoop(config, client, replica, logger, threading.Event(), deployer=deployer)
    try:
        for _ in range(4):
            loop.run_once(backoff=False)
    finally:
        client.close()
        replica.close()

    assert client.lost == ["starting"]
    # The final report comes after every progress report, the lost one's retry included.
    expected = ["pulling", "starting", "running"] if lose == "request" \
        else ["pulling", "starting", "starting", "running"]
    assert client.delivered == expected
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    lines = list(deployment.logs.order_by("id").values_list("line", flat=True))
    assert len(lines) == len(set(lines)), lines  # a repeated report added its lines once
    order = [next(i for i, line in enumerate(lines) if line.startswith(prefix))
             for prefix in ("Pulling ", "Pulled ", "Starting container ", "Container ")]
    assert order == sorted(order), lines
    [container] = docker_client.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert container.labels["moorage.deployment"] == str(deployment.pk)
