"""The App page's Latest deploy card and Deployments table agree without a reload, in a real
Chromium, while the region's real agent runs the deploys on the real dockerd."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
import pytest
from playwright.sync_api import Page, expect

from moorage.deployments.models import Deployment
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.browser import log_in
from moorage.testing.factories import PASSWORD
from moorage.testing.regions import AgentView, deploy_one, make_region, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_latest_card_and_table_follow_the_deploys_together(
    page: Page, live_server: Any, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], start_agent: Callable[[AgentView], InProcessAgent],
    docker_client: docker.DockerClient,
) -> None:
    url = str(live_server.url)
    region = make_region("eu-1")
    owner = member_in(region, "Page Co")
    image = busybox_image(registry_basic, "pages/latest", "1.0")
    app, first = script_app(owner, registry=registry_basic, image=image,
                            script="echo up; exec sleep 3600")
    second = deploy_one(owner, app.pk)

    # The page is open while both deploys are queued (no agent yet).
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(f"{url}/apps/{app.pk}/")
    card = page.get_by_test_id("latest-deploy")
    table = page.get_by_test_id("deployment-history")
    expect(card.get_by_test_id(f"deployment-{second.pk}")
           .get_by_test_id("deployment-status")).to_have_text("Queued")
    expect(table.get_by_test_id(f"history-{first.pk}").get_by_test_id("history-started")) \
        .to_have_text("not started")

    start_agent(region)
    running_container(Deployment.objects.get(pk=second.pk), docker_client, printed="up")
    # Without a reload: the card and the table show the same statuses, from one read.
    expect(card.get_by_test_id(f"deployment-{second.pk}")
           .get_by_test_id("deployment-status")).to_have_text("Running", timeout=15_000)
    second_row = table.get_by_test_id(f"history-{second.pk}")
    expect(second_row.get_by_test_id("history-status")).to_have_text("Running")
    expect(table.get_by_test_id(f"history-{first.pk}").get_by_test_id("history-status")) \
        .to_have_text("Superseded")
    second.refresh_from_db()
    assert second.started_at is not None and second.started_at > second.created_at
    # Started is when the agent started it, not when it was queued.
    expect(second_row.get_by_test_id("history-started")).to_have_text(
        second.started_at.strftime("%Y-%m-%d %H:%M:%S"))
    expect(table.get_by_test_id(f"history-{first.pk}").get_by_test_id("history-started")) \
        .to_have_text("not started")
    # Finished: the page stops polling (nothing left that could change by itself).
    expect(card).not_to_have_attribute("hx-get", f"/apps/{app.pk}/deployments/")
