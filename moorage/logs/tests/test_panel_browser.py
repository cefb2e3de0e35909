"""The App page's Logs panel in a real Chromium, with the region's real agent in a thread and
the app's real container on the real dockerd."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import docker
import pytest
from playwright.sync_api import Page, expect

from moorage.accounts.choices import Role
from moorage.logs import views
from moorage.testing import factories
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.browser import log_in
from moorage.testing.factories import PASSWORD
from moorage.testing.regions import AgentView, make_region, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

SECRET = "Petrel-" + secrets.token_hex(8) + "-slate"
SCRIPT = ('echo "token is $APP_TOKEN"; i=1; while [ $i -le 20 ]; do echo "line $i"; '
          'i=$((i+1)); done; exec sleep 3600')


def test_a_viewer_shows_the_tail_then_follows_until_unticking(
    page: Page, live_server: Any, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], start_agent: Callable[[AgentView], InProcessAgent],
    docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = str(live_server.url)
    region = make_region("eu-1")
    owner = member_in(region, "Panel Co")
    image = busybox_image(registry_basic, "logs/panel", "1.0")
    app, deployment = script_app(owner, registry=registry_basic, image=image, script=SCRIPT,
                                 secrets={"APP_TOKEN": SECRET})
    start_agent(region)
    container = running_container(deployment, docker_client, printed="line 20")

    viewer = factories.add_member(owner, Role.VIEWER)
    log_in(page, url, viewer.user.email, PASSWORD)
    page.goto(f"{url}/apps/{app.pk}/")
    panel = page.locator("#logs-panel")
    expect(panel.get_by_role("heading", name="Logs")).to_be_visible()
    panel.get_by_label("Lines").fill("5")
    panel.get_by_role("button", name="Show logs").click()
    output = page.get_by_test_id("logs-eu-1").locator("pre")
    expect(output).to_contain_text("End of the logs.")
    assert output.inner_text().splitlines() == [
        "line 16", "line 17", "line 18", "line 19", "line 20", "End of the logs."]

    panel.get_by_label("Lines").fill("30")
    panel.get_by_role("button", name="Show logs").click()
    expect(output).to_contain_text("token is ***")
    expect(output).to_contain_text("End of the logs.")
    assert output.inner_text().splitlines()[0] == "token is ***"
    assert SECRET not in page.content()

    # Follow, in windows of 2 s: a line printed while following shows once, as does every
    # line before it; unticking Follow stops the chain at the end of the window.
    monkeypatch.setattr(views, "FOLLOW_WINDOW", 2)
    panel.get_by_label("Lines").fill("2")
    panel.get_by_label("Follow").check()
    panel.get_by_role("button", name="Show logs").click()
    expect(output).to_contain_text("line 20")
    page.wait_for_timeout(2500)  # into the second window at least
    marker = "printed-while-following-" + secrets.token_hex(4)
    container.exec_run(["/bin/sh", "-c", f"echo {marker} > /proc/1/fd/1"])
    expect(output).to_contain_text(marker, timeout=15_000)
    panel.get_by_label("Follow").uncheck()
    expect(output).to_contain_text("Stopped following.", timeout=15_000)
    assert output.inner_text().splitlines() == [
        "line 19", "line 20", marker, "Stopped following."]
