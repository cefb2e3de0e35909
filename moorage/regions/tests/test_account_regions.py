"""An account's regions (issue 13, item 4): ``GET/PUT /api/v1/account/regions``, the
confirmation a disable needs, the ``stopped`` deployments it records, and deploying them
again when the region is enabled again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.apps.services import app_create
from moorage.audit.models import AuditEvent
from moorage.deployments.models import Deployment
from moorage.errors import Conflict
from moorage.regions import services
from moorage.regions.models import AccountRegion
from moorage.testing import factories
from moorage.testing.api_checks import assert_api_error
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region

pytestmark = pytest.mark.django_db

URL = "/api/v1/account/regions"


def _put(client: Client, member: Member | None, body: Any) -> Any:
    return client.put(URL, json.dumps(body), content_type="application/json",
                      headers=member.auth if member else {})


def _running(client: Client, region: AgentView, member: Member, name: str) -> Deployment:
    """An app of ``member`` deployed to ``region``, which its agent reported running."""
    app = app_create(actor=member.user, membership=member.membership, name=name,
                     image="registry.example/acme/" + name + ":1", runtime_pull="none",
                     regions=[region.slug])
    deployment = deploy_one(member, app.pk)
    answer = client.post(f"/api/v1/agent/deployments/{deployment.pk}/events",
                         json.dumps({"status": "running"}), content_type="application/json",
                         headers=region.auth)
    assert answer.status_code == 204, answer.content
    deployment.refresh_from_db()
    assert deployment.status == "running"
    return deployment


@pytest.fixture
def eu(owner: Member) -> AgentView:
    region = make_region("eu-1")
    make_region("us-1")
    services.account_regions_set(actor=owner.user, membership=owner.membership,
                                 slugs=["eu-1", "us-1"])
    return region


def test_get_lists_every_region_and_whether_the_account_deploys_there(
    client: Client, owner: Member, eu: AgentView,
) -> None:
    services.account_regions_set(actor=owner.user, membership=owner.membership,
                                 slugs=["eu-1"])
    viewer = factories.add_member(owner, Role.VIEWER)
    answer = client.get(URL, headers=viewer.auth)
    assert answer.status_code == 200
    assert answer.json() == {
        "regions": [{"slug": "eu-1", "name": "eu-1", "enabled": True, "draining": False},
                    {"slug": "us-1", "name": "us-1", "enabled": False, "draining": False}],
        "stopped": [], "redeployable": [], "redeployed": []}
    assert_api_error(client.get(URL), 401, "not_authenticated")


@pytest.mark.parametrize("body", [
    {"regions": ["eu-1"], "confirm": "true"},
    {"regions": ["eu-1"], "redeploy": 1},
    {"regions": "eu-1"},
    {"regions": [1]},
    {"regions": ["eu-1"], "extra": True},
    {},
])
def test_put_takes_a_strict_body(client: Client, owner: Member, eu: AgentView,
                                 body: dict[str, Any]) -> None:
    assert_api_error(_put(client, owner, body), 422, "validation_error")
    assert AccountRegion.objects.filter(account=owner.account).count() == 2


def test_only_admins_and_owners_choose_regions(client: Client, owner: Member,
                                               eu: AgentView) -> None:
    member = factories.add_member(owner, Role.MEMBER)
    assert_api_error(_put(client, member, {"regions": []}), 403, "permission_denied")
    assert_api_error(_put(client, None, {"regions": []}), 401, "not_authenticated")
    admin = factories.add_member(owner, Role.ADMIN)
    assert _put(client, admin, {"regions": ["us-1"]}).status_code == 200
    assert_api_error(_put(client, owner, {"regions": ["nowhere"]}), 422, "region_not_found")


def test_disable_is_refused_naming_the_apps_until_confirmed_and_records_the_stop(
    client: Client, owner: Member, eu: AgentView,
) -> None:
    api = _running(client, eu, owner, "api")
    web = _running(client, eu, owner, "web")
    refused = assert_api_error(_put(client, owner, {"regions": ["us-1"]}), 409,
                               "region_disable_stops_apps")
    assert refused["detail"]["apps"] == [{"app": "api", "region": "eu-1"},
                                         {"app": "web", "region": "eu-1"}]
    assert "stops 2 apps: api in eu-1, web in eu-1" in refused["message"]
    assert AccountRegion.objects.filter(account=owner.account, region__slug="eu-1").exists()
    api.refresh_from_db()
    assert api.status == "running"

    answer = _put(client, owner, {"regions": ["us-1"], "confirm": True})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert [(a["app"], a["region"]) for a in body["stopped"]] == [("api", "eu-1"),
                                                                  ("web", "eu-1")]
    assert [r["slug"] for r in body["regions"] if r["enabled"]] == ["us-1"]
    for deployment in (api, web):
        deployment.refresh_from_db()
        assert deployment.status == "stopped"
        assert deployment.finished_at is not None
        message = f"stopped: region eu-1 disabled for the account by {owner.user.email}"
        assert deployment.error_message == message
        assert list(deployment.logs.values_list("line", flat=True))[-1] == message
    event = AuditEvent.objects.get(action="account.region_disabled")
    assert event.details == {"region": "eu-1", "stopped": ["api", "web"]}
    # A report arriving late from the agent does not bring the deployment back to life.
    client.post(f"/api/v1/agent/deployments/{api.pk}/events",
                json.dumps({"status": "running"}), content_type="application/json",
                headers=eu.auth)
    api.refresh_from_db()
    assert api.status == "stopped"


def test_enable_again_offers_to_redeploy_and_redeploys_in_that_region_only(
    client: Client, owner: Member, eu: AgentView,
) -> None:
    api = _running(client, eu, owner, "api")
    _put(client, owner, {"regions": ["us-1"], "confirm": True})
    answer = _put(client, owner, {"regions": ["eu-1", "us-1"]})
    assert answer.status_code == 200
    [offer] = answer.json()["redeployable"]
    assert (offer["app"], offer["region"], offer["deployment_id"]) == ("api", "eu-1", api.pk)
    assert answer.json()["redeployed"] == []
    assert AuditEvent.objects.filter(action="account.region_enabled",
                                     details__region="eu-1").exists()
    # The agent of the region enabled again is not sent the stopped deployment to run.
    assert eu.snapshot(client)["deployments"] == []
    assert client.get(URL, headers=owner.auth).json()["redeployable"] == [offer]

    redeployed = _put(client, owner, {"regions": ["eu-1", "us-1"], "redeploy": True})
    assert redeployed.status_code == 200
    [new_id] = redeployed.json()["redeployed"]
    new = Deployment.objects.get(pk=new_id)
    assert (new.app_id, new.region.slug, new.status, new.number) == (api.app_id, "eu-1",
                                                                     "queued", 2)
    assert redeployed.json()["redeployable"] == []
    assert [d["id"] for d in eu.snapshot(client)["deployments"]] == [new.pk]


def test_a_draining_region_takes_no_deploy_and_cannot_be_enabled(
    client: Client, owner: Member, eu: AgentView,
) -> None:
    api = _running(client, eu, owner, "api")
    other = factories.make_account("Globex")
    result = services.region_remove(actor=None, slug="eu-1", drain=True)
    assert result.draining and result.apps == [f"{owner.account.slug}/api"]
    with pytest.raises(Conflict) as refused:
        deploy_one(owner, api.app_id)
    assert refused.value.code == "region_draining"
    assert_api_error(_put(client, other, {"regions": ["eu-1"]}), 409, "region_draining")
    changes = eu.changes(client, since=0)["changes"]
    assert changes[-1]["op"] == "region.drain"
    assert eu.snapshot(client)["draining"] is True
    assert eu.snapshot(client)["deployments"] == []


def test_an_app_keeps_a_region_disabled_for_the_account_through_an_unchanged_save(
    client: Client, owner: Member, eu: AgentView,
) -> None:
    """The region stays the app's (so enabling it again can offer to redeploy there): saving
    the app unchanged, through the API or the App page, keeps it instead of failing."""
    api = _running(client, eu, owner, "api")
    _put(client, owner, {"regions": ["us-1"], "confirm": True})
    patched = client.patch(f"/api/v1/apps/{api.app_id}", json.dumps({"regions": ["eu-1"]}),
                           content_type="application/json", headers=owner.auth)
    assert patched.status_code == 200, patched.content
    assert patched.json()["regions"] == ["eu-1"]

    client.force_login(owner.user)
    page = client.get(f"/apps/{api.app_id}/")
    assert "eu-1 (disabled for the account)" in page.content.decode()
    form = page.context["form"]
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    saved = client.post(f"/apps/{api.app_id}/", data)
    assert saved.status_code == 302, saved.context["form"].errors if saved.context else saved
    app = api.app
    app.refresh_from_db()
    assert [r.slug for r in app.regions.all()] == ["eu-1"]

    # A region the account does not deploy to and the app never had is still refused.
    make_region("ap-1")
    refused = client.patch(f"/api/v1/apps/{api.app_id}",
                           json.dumps({"regions": ["eu-1", "ap-1"]}),
                           content_type="application/json", headers=owner.auth)
    assert_api_error(refused, 422, "region_not_enabled")
