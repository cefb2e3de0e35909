"""Removing a region (issue 13, item 3): refused while apps run there, naming them; with
``--drain`` its real agent stops and removes every app on the real dockerd and reports, and
only then does the region go. No container is left that no deployment accounts for."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest
from click.testing import CliRunner
from django.test import Client

from moorage.agent.errors import AgentAuthError
from moorage.audit.models import AuditEvent
from moorage.cli.main import cli
from moorage.deployments.models import Deployment
from moorage.errors import Conflict
from moorage.regions import services
from moorage.regions.models import Region
from moorage.testing import factories
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

StartAgent = Callable[[AgentView], InProcessAgent]


def _containers(docker_client: docker.DockerClient, slug: str) -> list[object]:
    return docker_client.containers.list(all=True, filters={"label": f"moorage.region={slug}"})


def _stopped_by_removal(agent: InProcessAgent) -> None:
    """The region is gone: its agent stops (on its revoked token, if it polled since)."""
    try:
        agent.stop()
    except AgentAuthError as exc:
        assert exc.code == "region_token_invalid"
    agent.error = None


@pytest.fixture
def owner_in_r2() -> tuple[Member, AgentView]:
    staff = factories.make_user(staff=True)
    owner = factories.make_account("Acme", owner=staff)
    region = make_region("r2")
    services.account_regions_set(actor=owner.user, membership=owner.membership, slugs=["r2"])
    return owner, region


def _run_app(owner: Member, registry: RegistryServer, busybox_image: Callable[..., str],
             docker_client: docker.DockerClient, name: str = "api") -> Deployment:
    image = busybox_image(registry, f"drain/{name}", "1.0")
    _, deployment = script_app(owner, registry=registry, image=image, name=name,
                               script="echo up; exec sleep 3600")
    running_container(deployment, docker_client, printed="up")
    return deployment


def test_remove_is_refused_naming_the_apps_and_drain_leaves_no_container(
    owner_in_r2: tuple[Member, AgentView], start_agent: StartAgent, client: Client,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    owner, region = owner_in_r2
    agent = start_agent(region)
    _run_app(owner, registry_basic, busybox_image, docker_client, "api")
    _run_app(owner, registry_basic, busybox_image, docker_client, "web")
    assert len(_containers(docker_client, "r2")) == 2
    runner = CliRunner()

    refused = runner.invoke(cli, ["regions", "remove", "r2", "--yes"])
    assert refused.exit_code == 1
    assert "region_in_use" in refused.stderr and "acme/api, acme/web" in refused.stderr
    answer = client.delete("/api/v1/regions/r2", headers={
        "Authorization": f"Bearer {owner.token}"})
    assert answer.status_code == 409
    assert answer.json()["code"] == "region_in_use"
    assert answer.json()["detail"]["apps"] == ["acme/api", "acme/web"]
    assert Region.objects.filter(slug="r2", draining_since__isnull=True).exists()
    assert len(_containers(docker_client, "r2")) == 2  # nothing was touched

    drained = runner.invoke(cli, ["regions", "remove", "r2", "--yes", "--drain",
                                  "--timeout", "60"])
    assert drained.exit_code == 0, drained.output
    assert "is draining: its agent stops and removes acme/api, acme/web" in drained.stderr
    assert "removed every app" in drained.stderr
    assert not Region.objects.filter(slug="r2").exists()
    assert _containers(docker_client, "r2") == []
    actions = list(AuditEvent.objects.filter(action__startswith="region.")
                   .order_by("id").values_list("action", flat=True))
    assert actions[-3:] == ["region.drain_started", "region.drained", "region.removed"]
    _stopped_by_removal(agent)


def test_an_agent_that_never_reports_keeps_the_region_draining_until_it_does_or_force(
    owner_in_r2: tuple[Member, AgentView], start_agent: StartAgent,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    owner, region = owner_in_r2
    agent = start_agent(region)
    deployment = _run_app(owner, registry_basic, busybox_image, docker_client)
    agent.stop()  # the agent is down: nobody can drain the region
    runner = CliRunner()

    waited = runner.invoke(cli, ["regions", "remove", "r2", "--yes", "--drain",
                                 "--timeout", "2"])
    assert waited.exit_code == 1
    assert "region_draining" in waited.stderr and "--force" in waited.stderr
    assert "Waited 2 s." in waited.stderr
    assert Region.objects.get(slug="r2").draining_since is not None
    with pytest.raises(Conflict) as refused:
        deploy_one(owner, deployment.app_id)
    assert refused.value.code == "region_draining"
    again = runner.invoke(cli, ["regions", "remove", "r2", "--yes"])
    assert again.exit_code == 1 and "region_draining" in again.stderr
    assert "draining" in runner.invoke(cli, ["regions", "list"]).stdout
    assert len(_containers(docker_client, "r2")) == 1

    restarted = start_agent(region)  # the agent comes back: a retry finishes the drain
    retried = runner.invoke(cli, ["regions", "remove", "r2", "--yes", "--drain",
                                  "--timeout", "60"])
    assert retried.exit_code == 0, retried.output
    assert _containers(docker_client, "r2") == []
    assert not Region.objects.filter(slug="r2").exists()
    _stopped_by_removal(restarted)


def test_force_removes_now_and_says_what_it_leaves_behind(
    owner_in_r2: tuple[Member, AgentView], start_agent: StartAgent,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    owner, region = owner_in_r2
    agent = start_agent(region)
    _run_app(owner, registry_basic, busybox_image, docker_client)
    agent.stop()
    forced = CliRunner().invoke(cli, ["regions", "remove", "r2", "--yes", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "Left behind, still running: acme/api." in forced.stderr
    assert not Region.objects.filter(slug="r2").exists()
    event = AuditEvent.objects.filter(action="region.removed").latest("id")
    assert event.details["force"] is True and event.details["left_behind"] == ["acme/api"]
