"""The Regions page in a real Chromium (issue 13, item 4): unticking a region where apps run
asks first, naming them; confirmed, the App page says they stopped and why; ticking the
region again offers "Deploy again"."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from moorage.apps.services import app_create
from moorage.deployments.models import Deployment
from moorage.regions import services
from moorage.regions.models import AccountRegion
from moorage.testing import factories
from moorage.testing.browser import log_in
from moorage.testing.factories import PASSWORD
from moorage.testing.regions import deploy_one, make_region

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_disable_confirms_records_the_stop_and_offers_to_deploy_again(
    page: Page, live_server: object,
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Browser Co")
    region = make_region("r2")
    make_region("r3")
    services.account_regions_set(actor=owner.user, membership=owner.membership,
                                 slugs=["r2", "r3"])
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="registry.example/acme/api:1", runtime_pull="none", regions=["r2"])
    deployment = deploy_one(owner, app.pk)
    reported = Client().post(f"/api/v1/agent/deployments/{deployment.pk}/events",
                             json.dumps({"status": "running"}),
                             content_type="application/json", headers=region.auth)
    assert reported.status_code == 204
    log_in(page, url, owner.user.email, PASSWORD)

    page.goto(url + "/regions/")
    page.get_by_label("Deploy Browser Co to r2").uncheck()
    page.get_by_role("button", name="Save the account's regions").click()
    confirm = page.get_by_test_id("confirm-disable")
    expect(confirm.get_by_test_id("stopping-apps")).to_have_text("api in r2 (deployment #1)")
    page.get_by_role("link", name="Cancel").click()  # cancelling changes nothing
    expect(page.get_by_label("Deploy Browser Co to r2")).to_be_checked()
    assert AccountRegion.objects.filter(account=owner.account, region__slug="r2").exists()

    page.get_by_label("Deploy Browser Co to r2").uncheck()
    page.get_by_role("button", name="Save the account's regions").click()
    page.get_by_role("button", name="Stop 1 app and save").click()
    expect(page.locator(".messages")).to_contain_text("Stopped: api in r2.")
    expect(page.get_by_label("Deploy Browser Co to r2")).not_to_be_checked()
    expect(page.get_by_label("Deploy Browser Co to r3")).to_be_checked()

    page.goto(url + f"/apps/{app.pk}/")
    latest = page.get_by_test_id(f"deployment-{deployment.pk}")
    expect(latest.get_by_test_id("deployment-status")).to_have_text("Stopped")
    expect(latest).to_contain_text(
        f"stopped: region r2 disabled for the account by {owner.user.email}")

    page.goto(url + "/regions/")
    expect(page.get_by_test_id("redeployable")).to_have_count(0)
    page.get_by_label("Deploy Browser Co to r2").check()
    page.get_by_role("button", name="Save the account's regions").click()
    offer = page.get_by_test_id("redeployable")
    expect(offer).to_contain_text("api in r2 (deployment #1 stopped)")
    offer.get_by_role("button", name="Deploy again").click()
    expect(page.locator(".messages")).to_contain_text("Deploying again: api in r2.")
    expect(page.get_by_test_id("redeployable")).to_have_count(0)
    again = Deployment.objects.filter(app=app).latest("number")
    assert (again.number, again.region.slug, again.status) == (2, "r2", "queued")
