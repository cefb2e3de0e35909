"""How the control plane ends deployments an agent never runs or no longer runs, and says
when one stalled: reports go through the real agent endpoint with the region's token, reads
through the real API (``docs/sync.md``, Deployments)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import Client, override_settings
from django.utils import timezone

from moorage.apps.services import app_create
from moorage.deployments.models import Deployment
from moorage.regions.models import Region
from moorage.testing.api_checks import assert_api_error
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region, member_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def eu() -> AgentView:
    return make_region("eu-1")


@pytest.fixture
def owner(eu: AgentView) -> Member:
    return member_in(eu, "Acme")


def _app(owner: Member) -> int:
    return app_create(actor=owner.user, membership=owner.membership, name="api",
                      image="ghcr.io/acme/api:1.4", runtime_pull="none", ready_timeout=20).pk


def _report(client: Client, region: AgentView, deployment: Deployment, **body: Any) -> None:
    response = client.post(f"/api/v1/agent/deployments/{deployment.pk}/events",
                           json.dumps(body), content_type="application/json",
                           headers=region.auth)
    assert response.status_code == 204, response.content


def _get(client: Client, owner: Member, deployment: Deployment) -> dict[str, Any]:
    response = client.get(f"/api/v1/deployments/{deployment.pk}", headers=owner.auth)
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


def _status(deployment: Deployment) -> str:
    deployment.refresh_from_db()
    return deployment.status


def test_the_newest_deploys_first_report_supersedes_the_queued_ones_it_replaces(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    first, second, third = (deploy_one(owner, app_id) for _ in range(3))
    assert {_status(d) for d in (first, second, third)} == {"queued"}
    # The agent received only #3 (changes coalesce per app) and starts it.
    _report(client, eu, third, status="pulling", log=["Pulling"])
    assert (_status(first), _status(second), _status(third)) == (
        "superseded", "superseded", "pulling")
    got = _get(client, owner, second)
    assert got["started_at"] is None and got["finished_at"] is not None
    assert got["stalled"] is None
    lines = [line["line"] for line in client.get(
        f"/api/v1/deployments/{second.pk}/logs", headers=owner.auth).json()]
    assert lines[-1].startswith("Superseded by #3 before it started")
    # A late report for a superseded deployment moves nothing.
    _report(client, eu, second, status="running")
    assert _status(second) == "superseded"


def test_an_agents_own_superseded_report_is_the_superseded_status_not_a_failure(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    older, newer = deploy_one(owner, app_id), deploy_one(owner, app_id)
    _report(client, eu, older, status="failed", error={
        "code": "superseded",
        "message": "Deployment #1 of api was superseded by #2 before it started."})
    got = _get(client, owner, older)
    assert (got["status"], got["error_code"], got["started_at"]) == ("superseded", None, None)
    assert _status(newer) == "queued"


def test_one_running_deployment_per_app_and_region(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    first = deploy_one(owner, app_id)
    _report(client, eu, first, status="pulling")
    _report(client, eu, first, status="running")
    second = deploy_one(owner, app_id)
    _report(client, eu, second, status="pulling")
    assert _status(first) == "running"  # still serving while #2 pulls
    _report(client, eu, second, status="running")
    assert (_status(first), _status(second)) == ("replaced", "running")
    # A newer one that fails leaves the running one running.
    third = deploy_one(owner, app_id)
    _report(client, eu, third, status="failed", error={"code": "image_not_found"})
    assert (_status(second), _status(third)) == ("running", "failed")
    # A report that comes late, after a newer deployment came up: replaced at once.
    fourth, fifth = deploy_one(owner, app_id), deploy_one(owner, app_id)
    _report(client, eu, fourth, status="pulling")
    _report(client, eu, fifth, status="pulling")
    _report(client, eu, fifth, status="running")
    _report(client, eu, fourth, status="running")
    assert (_status(second), _status(fourth), _status(fifth)) == (
        "replaced", "replaced", "running")
    assert Deployment.objects.filter(app_id=app_id, status="running").count() == 1
    # The database holds the rule too.
    with pytest.raises(IntegrityError), transaction.atomic():
        Deployment.objects.filter(pk=first.pk).update(status="running")


def test_agents_cannot_report_the_control_planes_own_statuses(
    client: Client, owner: Member, eu: AgentView
) -> None:
    deployment = deploy_one(owner, _app(owner))
    for status in ("replaced", "superseded", "queued"):
        response = client.post(f"/api/v1/agent/deployments/{deployment.pk}/events",
                               json.dumps({"status": status}), content_type="application/json",
                               headers=eu.auth)
        assert_api_error(response, 422, "validation_error")
    assert _status(deployment) == "queued"


@override_settings(DEPLOY_STALLED_AFTER=60)
def test_a_deployment_whose_agent_is_away_or_silent_is_shown_stalled(
    client: Client, owner: Member, eu: AgentView
) -> None:
    deployment = deploy_one(owner, _app(owner))
    assert _get(client, owner, deployment)["stalled"] is None  # just made
    # Never connected, and made longer ago than the bound (60 s, plus the app's 20 s
    # readiness timeout: its agent sends nothing while it waits for a new version).
    Deployment.objects.filter(pk=deployment.pk).update(
        created_at=timezone.now() - timedelta(seconds=75))
    assert _get(client, owner, deployment)["stalled"] is None
    Deployment.objects.filter(pk=deployment.pk).update(
        created_at=timezone.now() - timedelta(seconds=85))
    stalled = _get(client, owner, deployment)["stalled"]
    assert stalled["code"] == "agent_offline"
    assert stalled["message"].startswith("The agent of region eu-1 has never connected")
    # Seen a moment ago and pulling: not stalled; then silent on it past the bound.
    _report(client, eu, deployment, status="pulling")
    assert _get(client, owner, deployment)["stalled"] is None
    Deployment.objects.filter(pk=deployment.pk).update(
        reported_at=timezone.now() - timedelta(seconds=90))
    stalled = _get(client, owner, deployment)["stalled"]
    assert stalled["code"] == "agent_silent"
    assert "has not reported on this deployment for 1 min 30 s (it was pulling)" in \
        stalled["message"]
    # Not seen for longer than the bound.
    Region.objects.filter(slug="eu-1").update(
        last_seen_at=timezone.now() - timedelta(seconds=200))
    stalled = _get(client, owner, deployment)["stalled"]
    assert stalled["code"] == "agent_offline"
    assert "has not been in touch for 3 min 20 s" in stalled["message"]
    # A finished deployment is never stalled.
    Region.objects.filter(slug="eu-1").update(last_seen_at=timezone.now())
    _report(client, eu, deployment, status="running")
    Region.objects.filter(slug="eu-1").update(
        last_seen_at=timezone.now() - timedelta(seconds=200))
    assert _get(client, owner, deployment)["stalled"] is None
