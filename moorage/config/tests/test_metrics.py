"""``/metrics``: loopback only without a token, bearers of the token with one; the figures."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from moorage.regions import services
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import make_region

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-" + "k" * 20


def test_without_a_token_only_loopback_clients_not_behind_a_proxy_read_them(
    client: Client, owner: Member,
) -> None:
    eu = make_region("eu-1")
    services.account_regions_set(actor=owner.user, membership=owner.membership, slugs=["eu-1"])
    make_credential(owner)
    eu.snapshot(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert 'moorage_region_applied_revision{region="eu-1"} 0.0' in text
    assert 'moorage_region_lag_revisions{region="eu-1"}' in text
    assert "moorage_agents_connected 1.0" in text
    assert "moorage_credential_refresh_failures_total 0.0" in text
    assert "moorage_credential_tokens_failing 0.0" in text
    assert "moorage_agent_polls_waiting" in text
    for address, headers in (("192.0.2.10", {}), ("127.0.0.1", {"X-Forwarded-For": "1.2.3.4"})):
        refused = client.get("/metrics", REMOTE_ADDR=address, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["code"] == "metrics_forbidden"
        assert "MOORAGE_METRICS_TOKEN" in refused.json()["message"]


@override_settings(MOORAGE_METRICS_TOKEN=TOKEN)
def test_with_a_token_only_its_bearers_read_them_from_anywhere(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                    {"Authorization": f"Basic {TOKEN}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "metrics_token_invalid"
        assert refused["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in refused.content.decode()
    ok = client.get("/metrics", REMOTE_ADDR="192.0.2.10",
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and b"moorage_sync_revision" in ok.content


def test_deployment_durations_come_from_the_database_by_outcome(client: Client) -> None:
    from datetime import timedelta

    from moorage.apps.services import app_create
    from moorage.deployments.models import Deployment
    from moorage.testing.regions import deploy_one, member_in

    region = make_region("eu-1")
    owner = member_in(region, "Durations")
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="registry.example.com/acme/api:1", port=8080)
    # A replaced deployment came up: its outcome is running. A superseded one never ran.
    for seconds, status in ((3, "replaced"), (45, "running"), (4, "failed"),
                            (1, "superseded")):
        deployment = deploy_one(owner, app.pk)
        Deployment.objects.filter(pk=deployment.pk).update(
            status=status, finished_at=deployment.created_at + timedelta(seconds=seconds))
    text = client.get("/metrics").content.decode()
    assert 'moorage_deployment_duration_seconds_bucket{le="5.0",outcome="running"} 1.0' in text
    assert 'moorage_deployment_duration_seconds_bucket{le="60.0",outcome="running"} 2.0' in text
    assert 'moorage_deployment_duration_seconds_count{outcome="running"} 2.0' in text
    assert 'moorage_deployment_duration_seconds_sum{outcome="running"} 48.0' in text
    assert 'moorage_deployment_duration_seconds_count{outcome="failed"} 1.0' in text
    assert 'outcome="superseded"' not in text and 'outcome="replaced"' not in text
