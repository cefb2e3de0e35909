"""The Regions page, the account's choice of regions, and sync state on the Credentials page."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.regions import services
from moorage.regions.models import AccountRegion, Region
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.regions import make_region

pytestmark = pytest.mark.django_db


def _login(client: Client, member: Member) -> Client:
    client.post("/login/", {"email": member.user.email, "password": PASSWORD})
    return client


def test_members_see_regions_staff_manage_them(client: Client, owner: Member) -> None:
    make_region("eu-1")
    page = _login(client, owner).get("/regions/").content.decode()
    assert 'data-region="eu-1"' in page and "Never connected" in page
    assert "Add a region" not in page and "Rotate token" not in page
    assert client.post("/regions/add/", {"slug": "us-1", "runtime": "docker"}).status_code == 403
    assert not Region.objects.filter(slug="us-1").exists()


def test_staff_add_a_region_and_see_its_token_once(client: Client) -> None:
    staff = factories.make_account("Ops", owner=factories.make_user(staff=True))
    _login(client, staff)
    response = client.post("/regions/add/", {"slug": "us-1", "name": "US East",
                                             "runtime": "swarm", "for_all_accounts": "on"})
    page = response.content.decode()
    token = re.search(r'data-testid="region-token">(mrr_[^<]+)<', page)
    assert token, page
    assert "us-1" in page and Region.objects.get(slug="us-1").runtime == "swarm"
    assert AccountRegion.objects.filter(account=staff.account, region__slug="us-1").exists()
    assert token.group(1) not in client.get("/regions/").content.decode()
    bad = client.post("/regions/add/", {"slug": "Not Valid", "runtime": "docker"})
    assert bad.status_code == 422 and "lower-case" in bad.content.decode()


def test_admin_chooses_the_accounts_regions(client: Client, owner: Member) -> None:
    make_region("eu-1")
    make_region("us-1")
    _login(client, owner).post("/regions/account/", {"regions": ["eu-1", "us-1"]})
    assert set(AccountRegion.objects.filter(account=owner.account)
               .values_list("region__slug", flat=True)) == {"eu-1", "us-1"}
    client.post("/regions/account/", {"regions": ["us-1"]})
    assert list(AccountRegion.objects.filter(account=owner.account)
                .values_list("region__slug", flat=True)) == ["us-1"]


def test_members_cannot_choose_regions(client: Client, owner: Member) -> None:
    make_region("eu-1")
    member = factories.add_member(owner, Role.MEMBER)
    page = _login(client, member).get("/regions/").content.decode()
    assert "disabled" in page and "Save the account" not in page
    assert client.post("/regions/account/", {"regions": ["eu-1"]}).status_code == 403
    assert not AccountRegion.objects.filter(account=owner.account).exists()


def test_credentials_page_shows_sync_state(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    make_region("us-1")
    services.account_regions_set(actor=owner.user, membership=owner.membership,
                                 slugs=["eu-1", "us-1"])
    credential = make_credential(owner, name="hub")
    snapshot = eu.snapshot(client)
    client.post("/api/v1/agent/ack", json.dumps({
        "revision": snapshot["revision"], "snapshot": True,
        "credentials": {str(credential.id): credential.revision}}),
        content_type="application/json", headers=eu.auth)
    page = _login(client, owner).get("/credentials/").content.decode()
    assert "synced to 1 of 2 regions" in page
    assert "eu-1: revision 1" in page and "us-1: not yet" in page


def test_staff_remove_is_refused_while_apps_run_and_drain_starts_instead(
    client: Client,
) -> None:
    from moorage.apps.services import app_create
    from moorage.testing.regions import deploy_one

    staff = factories.make_account("Ops", owner=factories.make_user(staff=True))
    region = make_region("eu-1")
    services.account_regions_set(actor=staff.user, membership=staff.membership,
                                 slugs=["eu-1"])
    app = app_create(actor=staff.user, membership=staff.membership, name="api",
                     image="registry.example/ops/api:1", runtime_pull="none")
    deploy_one(staff, app.pk)
    _login(client, staff)
    page = client.post("/regions/eu-1/remove/", follow=True).content.decode()
    assert "runs 1 app: ops/api" in page and "--drain" in page
    assert Region.objects.get(slug="eu-1").draining_since is None
    page = client.post("/regions/eu-1/remove/", {"drain": "1"}, follow=True).content.decode()
    assert "Region eu-1 is draining: its agent stops and removes ops/api" in page
    assert 'data-testid="region-draining">draining<' in page
    assert region.changes(client, since=0)["changes"][-1]["op"] == "region.drain"
