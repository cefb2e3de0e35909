"""``moorage regions enable|disable SLUG`` against a live server, with the region's real agent
in a thread and the app's real container on the real dockerd (issue 13, item 4): disabling
asks first, naming the apps; the containers go; enabling again offers to redeploy them, and
``--redeploy`` brings them back."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from moorage.cli.tests.conftest import Cli
from moorage.deployments.models import Deployment
from moorage.regions import services as region_services
from moorage.regions.models import AccountRegion
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.factories import Member
from moorage.testing.processes import wait_until
from moorage.testing.regions import AgentView, make_region
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def _containers(docker_client: docker.DockerClient, app_id: int) -> list[object]:
    return docker_client.containers.list(all=True, filters={"label": f"moorage.app={app_id}"})


def test_disable_asks_then_stops_and_enable_redeploys(
    run: Cli, logged_in: Member, start_agent: Callable[[AgentView], InProcessAgent],
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    region = make_region("r2")
    region_services.account_regions_set(actor=logged_in.user, membership=logged_in.membership,
                                        slugs=["r2"])
    start_agent(region)
    image = busybox_image(registry_basic, "cli-regions/api", "1.0")
    app, deployment = script_app(logged_in, registry=registry_basic, image=image,
                                 script="echo up; exec sleep 3600")
    running_container(deployment, docker_client, printed="up")

    declined = run("regions", "disable", "r2", input="n\n")
    assert declined.exit_code == 1
    assert "stops 1 app: api in r2" in declined.stderr
    assert "Disable r2 and stop them?" in declined.stderr
    assert AccountRegion.objects.filter(account=logged_in.account, region__slug="r2").exists()
    assert len(_containers(docker_client, app.pk)) == 1

    disabled = run("regions", "disable", "r2", input="y\n")
    assert disabled.exit_code == 0, disabled.output
    assert "no longer deploys to r2; stopped: api" in disabled.stdout
    wait_until(lambda: not _containers(docker_client, app.pk), timeout=30,
               what="the agent to remove the app's container")
    deployment.refresh_from_db()
    assert deployment.status == "stopped"
    assert deployment.error_message == ("stopped: region r2 disabled for the account by "
                                        f"{logged_in.user.email}")
    status = run("apps", "status", "api")
    assert status.exit_code == 0, status.output
    assert "r2 stopped: region r2 disabled for the account by" in " ".join(status.stdout.split())

    enabled = run("regions", "enable", "r2")
    assert enabled.exit_code == 0, enabled.output
    assert "Stopped when a region was disabled: api in r2" in enabled.stdout
    assert "moorage regions enable r2 --redeploy" in enabled.stdout
    assert not _containers(docker_client, app.pk)  # nothing comes back by itself

    redeployed = run("regions", "enable", "r2", "--redeploy")
    assert redeployed.exit_code == 0, redeployed.output
    assert "Deploying again: 1 deployment queued." in redeployed.stdout
    again = Deployment.objects.filter(app=app).latest("number")
    assert again.number == 2
    container = running_container(again, docker_client, printed="up")
    assert container.labels["moorage.deployment"] == str(again.pk)
    assert container.status == "running"


def test_disable_yes_does_not_ask_and_unknown_regions_are_named(
    run: Cli, logged_in: Member,
) -> None:
    make_region("r2")
    region_services.account_regions_set(actor=logged_in.user, membership=logged_in.membership,
                                        slugs=["r2"])
    assert run("regions", "disable", "r2", "--yes").exit_code == 0
    assert not AccountRegion.objects.filter(account=logged_in.account).exists()
    missing = run("regions", "disable", "r2")
    assert missing.exit_code == 1 and "does not deploy to r2" in missing.stderr
    unknown = run("regions", "enable", "nowhere")
    assert unknown.exit_code == 1 and "region_not_found" in unknown.stderr
