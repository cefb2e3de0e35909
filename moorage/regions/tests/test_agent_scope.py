"""An agent writes only its own region's sync state (issue 9, item 3): acks and deployment
reports are taken only for what the region was sent, and ids or revisions beyond what a
column holds are a 422, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from moorage.apps.services import app_create
from moorage.credentials import services as credential_services
from moorage.deployments.models import Deployment
from moorage.regions import services
from moorage.regions.models import CredentialReplica
from moorage.testing.api_checks import assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region

pytestmark = pytest.mark.django_db

HUGE = 2**63
MAX_ID = 2**63 - 1


def _enable(member: Member, *slugs: str) -> None:
    services.account_regions_set(actor=member.user, membership=member.membership,
                                 slugs=list(slugs))


def _ack(client: Client, region: AgentView, body: dict[str, Any] | str) -> Any:
    return client.post("/api/v1/agent/ack", body if isinstance(body, str) else json.dumps(body),
                       content_type="application/json", headers=region.auth)


def _report(client: Client, region: AgentView, deployment_id: int | str,
            body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/agent/deployments/{deployment_id}/events", json.dumps(body),
                       content_type="application/json", headers=region.auth)


def _held(slug: str) -> dict[int, int]:
    return dict(CredentialReplica.objects.filter(region__slug=slug)
                .values_list("credential_id", "revision"))


def test_a_region_cannot_ack_another_accounts_credential(
    client: Client, owner: Member, other_owner: Member
) -> None:
    theirs = make_credential(other_owner)
    eu, lonely = make_region("eu-1"), make_region("lonely")  # lonely: no account enabled
    _enable(other_owner, "eu-1")
    # The repro: a region with no accounts, another account's credential, a revision
    # that does not exist. It answered 204 and showed the region "in sync".
    body = {"revision": 0, "snapshot": False, "credentials": {str(theirs.pk): 77}}
    refused = assert_api_error(_ack(client, lonely, body), 422, "credential_not_in_region")
    assert refused["detail"] == {"credentials": [theirs.pk]}
    assert f"Credential {theirs.pk} was never sent to region 'lonely'" in refused["message"]
    body["credentials"] = {str(theirs.pk): 1}
    assert_api_error(_ack(client, lonely, body), 422, "credential_not_in_region")
    assert_api_error(_ack(client, lonely, body | {"snapshot": True}), 422,
                     "credential_not_in_region")
    assert _held("lonely") == {}
    sync = client.get(f"/api/v1/credentials/{theirs.pk}/sync", headers=other_owner.auth).json()
    assert [r["region"] for r in sync["regions"]] == ["eu-1"]
    assert sync["synced_regions"] == 0
    # A revision the credential never had is refused in its own region too; nothing of a
    # refused ack is recorded, not even the part that was right.
    mine = make_credential(other_owner)
    body = {"revision": 0, "credentials": {str(mine.pk): 1, str(theirs.pk): 77}}
    refused = assert_api_error(_ack(client, eu, body), 422, "credential_revision_unknown")
    assert refused["detail"] == {"credentials": [theirs.pk]}
    assert "has no revision 77 (its revision is 1)" in refused["message"]
    assert _held("eu-1") == {}
    # What the region was sent is taken.
    assert _ack(client, eu, {"revision": 0, "credentials": {str(mine.pk): 1,
                                                            str(theirs.pk): 1}}
                ).status_code == 204
    assert _held("eu-1") == {mine.pk: 1, theirs.pk: 1}


def test_an_ack_that_crossed_a_change_is_taken_for_what_still_holds(
    client: Client, owner: Member
) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    kept, deleted = make_credential(owner), make_credential(owner)
    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=kept.pk, secret="rotated-now")
    body = {"revision": 0, "credentials": {str(kept.pk): 1, str(deleted.pk): 1}}
    credential_services.credential_delete(actor=owner.user, membership=owner.membership,
                                          credential_id=deleted.pk)
    # An older revision than the current one is fine (the rotation is on its way); a
    # credential deleted since the agent received it is skipped.
    assert _ack(client, eu, body).status_code == 204
    assert _held("eu-1") == {kept.pk: 1}
    # The account is disabled for the region after its credentials were sent: the ack that
    # crossed that change is answered, and records nothing for the account any more.
    _enable(owner)
    assert _ack(client, eu, {"revision": 0, "snapshot": True,
                             "credentials": {str(kept.pk): 2}}).status_code == 204
    assert _held("eu-1") == {}


@pytest.mark.parametrize("body", [
    {"revision": HUGE},
    {"revision": -1},
    {"revision": 0, "credentials": {str(HUGE): 1}},
    {"revision": 0, "credentials": {"1": HUGE}},
    {"revision": 0, "credentials": {"1": 2**31}},
    {"revision": 0, "credentials": {"-5": 1}},
    {"revision": 0, "credentials": {"1": 0}},
    {"revision": 0, "removed": [HUGE]},
    {"revision": 0, "removed": [0]},
    {"revision": 0, "key_id": "Not a key"},
], ids=lambda body: json.dumps(body))
def test_out_of_range_ack_numbers_are_a_422(client: Client, body: dict[str, Any]) -> None:
    eu = make_region("eu-1")
    assert_api_error(_ack(client, eu, body), 422, "validation_error")


def test_out_of_range_sync_and_report_ids_are_a_422(client: Client) -> None:
    eu = make_region("eu-1")
    response = client.get(f"/api/v1/agent/changes?since={HUGE}&wait=0&nonce=nonce-123",
                          headers=eu.auth)
    assert_api_error(response, 422, "validation_error")
    assert_api_error(_report(client, eu, HUGE, {"status": "failed"}), 422, "validation_error")
    assert_api_error(_report(client, eu, 0, {"status": "failed"}), 422, "validation_error")
    assert_api_error(client.get(f"/api/v1/agent/sources/{HUGE}", headers=eu.auth), 422,
                     "validation_error")
    # The largest id that fits is simply not found.
    assert_api_error(_report(client, eu, MAX_ID, {"status": "failed"}), 404,
                     "deployment_not_found")
    big = {"revision": MAX_ID, "credentials": {str(MAX_ID): 2**31 - 1}, "removed": [MAX_ID]}
    assert _ack(client, eu, big).status_code == 204


@pytest.fixture
def deployed(owner: Member) -> tuple[AgentView, Deployment, int]:
    """An image app of ``owner`` deployed in eu-1 with its registry credential."""
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    hub = make_credential(owner, name="hub", server="ghcr.io")
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="ghcr.io/acme/api:1.4")
    return eu, deploy_one(owner, app.pk), hub.pk


def test_a_report_names_only_the_deployments_own_credential(
    client: Client, owner: Member, other_owner: Member,
    deployed: tuple[AgentView, Deployment, int],
) -> None:
    eu, deployment, hub = deployed
    theirs = make_credential(other_owner, server="ghcr.io")
    sibling = make_credential(owner, name="sibling", server="ghcr.io")
    running = {"status": "running", "image_digest": "sha256:" + "b" * 64}
    # The repro: a deployment event carrying another account's credential id.
    refused = assert_api_error(
        _report(client, eu, deployment.pk, running | {"credential_id": theirs.pk,
                                                      "credential_revision": 1}),
        422, "credential_not_in_account")
    assert refused["detail"] == {"credential_id": theirs.pk}
    assert_api_error(_report(client, eu, deployment.pk,
                             running | {"credential_id": sibling.pk, "credential_revision": 1}),
                     422, "report_credential_mismatch")
    assert_api_error(_report(client, eu, deployment.pk,
                             running | {"credential_id": hub, "credential_revision": 9}),
                     422, "credential_revision_unknown")
    # A revision alone is of the deployment's own credential.
    assert_api_error(_report(client, eu, deployment.pk, running | {"credential_revision": 9}),
                     422, "credential_revision_unknown")
    for body in ({"status": "failed", "credential_id": HUGE},
                 {"status": "failed", "credential_id": hub, "credential_revision": 2**31}):
        assert_api_error(_report(client, eu, deployment.pk, body), 422, "validation_error")
    deployment.refresh_from_db()
    assert (deployment.status, deployment.used_revision) == ("queued", None)
    # Another region's agent cannot report it at all.
    us = make_region("us-1")
    assert_api_error(_report(client, us, deployment.pk, {"status": "failed"}), 404,
                     "deployment_not_found")
    # The deployment's own credential, at a revision it has, is taken.
    ok = _report(client, eu, deployment.pk,
                 running | {"credential_id": hub, "credential_revision": 1})
    assert ok.status_code == 204, ok.content
    deployment.refresh_from_db()
    assert (deployment.status, deployment.used_revision) == ("running", 1)


def test_an_anonymous_deployment_reports_no_credential(
    client: Client, owner: Member, deployed: tuple[AgentView, Deployment, int]
) -> None:
    eu, _, hub = deployed
    public = app_create(actor=owner.user, membership=owner.membership, name="public",
                        image="ghcr.io/acme/public:1", runtime_pull="none")
    deployment = deploy_one(owner, public.pk)
    for extra in ({"credential_revision": 1}, {"credential_id": hub, "credential_revision": 1}):
        assert_api_error(_report(client, eu, deployment.pk, {"status": "running"} | extra),
                         422, "report_credential_mismatch")
    assert _report(client, eu, deployment.pk, {"status": "running"}).status_code == 204
