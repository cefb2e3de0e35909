"""The apps API: validation, tenancy (I7), pull resolution (I5, I4), deploys and reports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from moorage.accounts.permissions import Action
from moorage.apps.models import App
from moorage.audit.models import AuditEvent
from moorage.credentials import services as credential_services
from moorage.deployments.models import Deployment
from moorage.regions import services as region_services
from moorage.testing.api_checks import (
    API,
    Case,
    ObjectEndpoint,
    assert_api_error,
    check_endpoint,
    generic_cases,
)
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db


def _call(client: Client, method: str, path: str, member: Member, body: Any = None) -> Any:
    return client.generic(method, API + path, json.dumps(body) if body is not None else "",
                          content_type="application/json", headers=member.auth)


@pytest.fixture
def eu(owner: Member) -> AgentView:
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    return region


def _app(owner: Member, **fields: Any) -> int:
    from moorage.apps.services import app_create

    return app_create(actor=owner.user, membership=owner.membership,
                      **({"name": "api", "image": "ghcr.io/acme/api:1.4"} | fields)).pk


OBJECT_ENDPOINTS = [
    ObjectEndpoint("GET", "/apps/{id}", _app, Action.VIEW),
    ObjectEndpoint("PATCH", "/apps/{id}", _app, Action.DEPLOY, body={"port": 8080}),
    ObjectEndpoint("DELETE", "/apps/{id}", _app, Action.DEPLOY),
    ObjectEndpoint("GET", "/apps/{id}/pull-credential", _app, Action.VIEW),
    ObjectEndpoint("POST", "/apps/{id}/deploy", _app, Action.DEPLOY),
    ObjectEndpoint("GET", "/apps/{id}/deployments", _app, Action.VIEW),
]


@pytest.mark.parametrize(("endpoint", "case"), generic_cases(OBJECT_ENDPOINTS))
def test_generic_checks(client: Client, endpoint: ObjectEndpoint, case: Case) -> None:
    check_endpoint(client, endpoint, case)


def test_create_with_env_keeps_secrets_write_only(
    client: Client, owner: Member, eu: AgentView
) -> None:
    body = {"name": "api", "image": "ghcr.io/acme/api:1.4", "port": 8080,
            "env": [{"name": "LOG_LEVEL", "value": "info"},
                    {"name": "DB_PASSWORD", "value": "Env-Secret-4242", "secret": True}]}
    created = _call(client, "POST", "/apps", owner, body)
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["regions"] == ["eu-1"] and data["runtime_pull"] == "account_default"
    assert data["env"] == [{"name": "DB_PASSWORD", "value": None, "secret": True},
                           {"name": "LOG_LEVEL", "value": "info", "secret": False}]
    assert "Env-Secret-4242" not in created.content.decode()
    assert "Env-Secret-4242" not in database_text()
    # Leaving a secret's value out keeps it.
    patched = _call(client, "PATCH", f"/apps/{data['id']}", owner, {"env": [
        {"name": "DB_PASSWORD", "secret": True}, {"name": "LOG_LEVEL", "value": "debug"}]})
    assert patched.status_code == 200, patched.content
    from moorage.apps.services import open_env

    secret = App.objects.get(id=data["id"]).env.get(name="DB_PASSWORD")
    assert open_env(secret) == "Env-Secret-4242"


def test_only_the_accounts_registry_credentials_can_be_picked(
    client: Client, owner: Member, other_owner: Member
) -> None:
    theirs = make_credential(other_owner, name="theirs", server="ghcr.io")
    git = make_credential(owner, name="gh", type="git", server="github.com")
    base = {"name": "api", "image": "ghcr.io/acme/api:1.4", "runtime_pull": "credential"}
    assert_api_error(_call(client, "POST", "/apps", owner,
                           base | {"runtime_pull_credential_id": theirs.id}), 422,
                     "pull_credential_not_found")
    assert_api_error(_call(client, "POST", "/apps", owner,
                           base | {"runtime_pull_credential_id": git.id}), 422,
                     "credential_type_mismatch")
    assert_api_error(_call(client, "POST", "/apps", owner, base), 422,
                     "pull_credential_required")
    assert not App.objects.filter(account=owner.account).exists()


@pytest.mark.parametrize(("body", "code"), [
    ({"name": "Bad Name"}, "app_name_invalid"),
    ({"image": "UPPER/Case:1"}, "image_invalid"),
    ({"image": ""}, "image_required"),
    ({"port": 70000}, "port_invalid"),
    ({"env": [{"name": "1BAD", "value": "x"}]}, "env_name_invalid"),
    ({"regions": ["mars-1"]}, "region_not_enabled"),
    ({"replicas": 0}, "replicas_invalid"),
    ({"ready_timeout": 0}, "ready_timeout_invalid"),
    ({"ready_timeout": 601}, "ready_timeout_invalid"),
    # Strict: a JSON integer, not a string, a boolean or a fraction.
    ({"ready_timeout": "30"}, "validation_error"),
    ({"ready_timeout": True}, "validation_error"),
    ({"ready_timeout": 2.5}, "validation_error"),
])
def test_bad_input(client: Client, owner: Member, body: dict[str, Any], code: str) -> None:
    base = {"name": "api", "image": "ghcr.io/acme/api:1.4"}
    assert_api_error(_call(client, "POST", "/apps", owner, base | body), 422, code)
    assert not App.objects.filter(account=owner.account).exists()


def test_pull_credential_resolution(client: Client, owner: Member) -> None:
    app_id = _app(owner)
    anonymous = _call(client, "GET", f"/apps/{app_id}/pull-credential", owner).json()
    assert anonymous["anonymous"] is True and "no default" in anonymous["message"]
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    default = _call(client, "GET", f"/apps/{app_id}/pull-credential", owner).json()
    assert default["credential_name"] == "ghcr-prod" and default["runtime_pull"] == \
        "account_default"
    assert default["message"] == \
        "Deploys will pull ghcr.io/acme/api:1.4 with 'ghcr-prod' (ghcr.io)."
    hub = make_credential(owner, name="hub", server="docker.io")
    _call(client, "PATCH", f"/apps/{app_id}", owner,
          {"runtime_pull": "credential", "runtime_pull_credential_id": hub.id})
    mismatch = _call(client, "GET", f"/apps/{app_id}/pull-credential", owner).json()
    assert mismatch["host_mismatch"] is True and "will be refused" in mismatch["message"]
    _call(client, "PATCH", f"/apps/{app_id}", owner, {"runtime_pull": "none"})
    none = _call(client, "GET", f"/apps/{app_id}/pull-credential", owner).json()
    assert none["anonymous"] is True and none["credential_name"] is None
    assert ghcr.is_default


def test_deploy_records_the_resolved_credential_and_reaches_the_agent(
    client: Client, owner: Member, eu: AgentView
) -> None:
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    app_id = _app(owner, port=8080, env=[])
    start = eu.snapshot(client)["revision"]
    deployed = _call(client, "POST", f"/apps/{app_id}/deploy", owner)
    assert deployed.status_code == 201, deployed.content
    [d] = deployed.json()
    assert (d["status"], d["credential_name"], d["credential_revision"], d["region"]) == (
        "queued", "ghcr-prod", 1, "eu-1")
    [change] = eu.changes(client, start)["changes"]
    assert change["op"] == "deployment.upsert"
    assert change["deployment"]["pull"] == {"mode": "credential", "credential_id": ghcr.id,
                                            "credential_name": "ghcr-prod",
                                            "credential_revision": 1, "default_host": None,
                                            # resolved from "Use account default": it follows
                                            # the default's moves on running services (I12)
                                            "account_default": True}
    assert change["deployment"]["image"] == "ghcr.io/acme/api:1.4"
    snapshot = eu.snapshot(client)
    assert [x["id"] for x in snapshot["deployments"]] == [d["id"]]


def test_a_chosen_credential_for_another_registry_refuses_the_deploy(
    client: Client, owner: Member, eu: AgentView
) -> None:
    hub = make_credential(owner, name="hub", server="docker.io")
    app_id = _app(owner, runtime_pull="credential", runtime_pull_credential_id=hub.id)
    body = assert_api_error(_call(client, "POST", f"/apps/{app_id}/deploy", owner), 422,
                            "credential_host_mismatch")  # an image on ghcr.io
    assert body["detail"] == {"credential": "hub", "credential_host": "docker.io",
                              "image_host": "ghcr.io"}
    assert not Deployment.objects.exists()


def test_a_default_for_another_registry_pulls_anonymously_and_says_so(
    client: Client, owner: Member, eu: AgentView
) -> None:
    """docker's and kubelet's rule: the default is only for its own registry."""
    make_credential(owner, name="hub", server="docker.io")  # the default, for docker.io
    app_id = _app(owner)  # "Use account default", an image on ghcr.io
    plan = _call(client, "GET", f"/apps/{app_id}/pull-credential", owner).json()
    assert (plan["anonymous"], plan["host_mismatch"], plan["default_host"]) == (
        True, False, "docker.io")
    assert plan["message"] == (
        "Deploys will pull ghcr.io/acme/api:1.4 anonymously: the account default 'hub' is for "
        "docker.io, and ghcr.io/acme/api:1.4 is on ghcr.io. If the image is private, choose "
        "a credential for ghcr.io.")
    start = eu.snapshot(client)["revision"]
    deployed = _call(client, "POST", f"/apps/{app_id}/deploy", owner)
    assert deployed.status_code == 201, deployed.content
    [d] = deployed.json()
    assert (d["pull_mode"], d["credential_name"], d["default_host"]) == (
        "anonymous", None, "docker.io")
    assert d["pull_summary"] == "anonymous (the default is for docker.io)"
    [change] = eu.changes(client, start)["changes"]
    assert change["deployment"]["pull"] == {"mode": "anonymous", "credential_id": None,
                                            "credential_name": None,
                                            "credential_revision": None,
                                            "default_host": "docker.io",
                                            "account_default": True}
    assert Deployment.objects.get(id=d["id"]).logs.get().line.endswith(plan["message"])
    listing = {c["name"]: c for c in _call(client, "GET", "/credentials", owner).json()}
    assert listing["hub"]["used_by_apps"] == 0  # the app does not pull with it


def test_agent_reports_move_the_status_forward(
    client: Client, owner: Member, eu: AgentView
) -> None:
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    app_id = _app(owner)
    [d] = _call(client, "POST", f"/apps/{app_id}/deploy", owner).json()

    def report(body: dict[str, Any]) -> None:
        response = client.post(f"/api/v1/agent/deployments/{d['id']}/events", json.dumps(body),
                               content_type="application/json", headers=eu.auth)
        assert response.status_code == 204, response.content

    report({"status": "pulling", "log": ["Pulling ghcr.io/acme/api:1.4 with 'ghcr-prod'"]})
    report({"status": "pulling", "log": ["Pulling ghcr.io/acme/api:1.4 with 'ghcr-prod'"]})
    report({"status": "running", "log": ["Running"], "image_digest": "sha256:" + "a" * 64,
            "credential_id": ghcr.id, "credential_revision": 1, "container_id": "c0ffee"})
    report({"status": "pulling", "log": ["late"]})  # never goes back
    got = _call(client, "GET", f"/deployments/{d['id']}", owner).json()
    assert (got["status"], got["used_revision"], got["image_digest"]) == (
        "running", 1, "sha256:" + "a" * 64)
    lines = [x["line"] for x in _call(client, "GET", f"/deployments/{d['id']}/logs",
                                      owner).json()]
    assert lines.count("Pulling ghcr.io/acme/api:1.4 with 'ghcr-prod'") == 1
    finished = AuditEvent.objects.get(action="deploy.finished")
    assert finished.details["credential_name"] == "ghcr-prod"
    assert finished.details["credential_revision"] == 1
    other = make_region("us-1")
    response = client.post(f"/api/v1/agent/deployments/{d['id']}/events",
                           json.dumps({"status": "failed"}), content_type="application/json",
                           headers=other.auth)
    assert_api_error(response, 404, "deployment_not_found")


def test_the_final_report_reads_the_credential_and_the_account_with_the_deployment(
    client: Client, owner: Member, eu: AgentView
) -> None:
    """The final report is on every deploy's critical path: the deployment row, locked,
    brings its app's account (for the audit row) and its credential (to check the revision
    reported) in one query."""
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    [d] = _call(client, "POST", f"/apps/{_app(owner)}/deploy", owner).json()
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            f"/api/v1/agent/deployments/{d['id']}/events",
            json.dumps({"status": "running", "log": ["Running"], "credential_id": ghcr.id,
                        "credential_revision": 1, "image_digest": "sha256:" + "b" * 64}),
            content_type="application/json", headers=eu.auth)
    assert response.status_code == 204, response.content
    tables = [q["sql"].split(" FROM ", 1)[1].split()[0] for q in queries.captured_queries
              if q["sql"].startswith("SELECT") and " FROM " in q["sql"]]
    assert not any("credentials_credential" in t or "accounts_account" in t for t in tables)
    assert AuditEvent.objects.get(action="deploy.finished").details["credential_revision"] == 1


def test_deleting_a_credential_apps_name_is_refused_with_their_names(
    client: Client, owner: Member
) -> None:
    hub = make_credential(owner, name="hub", server="ghcr.io")
    _app(owner, name="api", runtime_pull="credential", runtime_pull_credential_id=hub.id)
    _app(owner, name="web", runtime_pull="credential", runtime_pull_credential_id=hub.id)
    _app(owner, name="worker")  # through the default
    listing = {c["name"]: c for c in _call(client, "GET", "/credentials", owner).json()}
    assert listing["hub"]["used_by_apps"] == 3
    body = assert_api_error(_call(client, "DELETE", f"/credentials/{hub.id}", owner), 409,
                            "credential_in_use")
    assert body["detail"] == {"apps": ["api", "web"]}
    with pytest.raises(Exception, match="api, web"):
        credential_services.credential_delete(actor=owner.user, membership=owner.membership,
                                              credential_id=hub.id)


def test_the_readiness_timeout_is_kept_changed_and_sent_to_the_region(
    client: Client, owner: Member, eu: AgentView
) -> None:
    created = _call(client, "POST", "/apps", owner,
                    {"name": "api", "image": "ghcr.io/acme/api:1.4", "port": 8080})
    assert created.status_code == 201, created.content
    app = created.json()
    assert app["ready_timeout"] == 30  # the default
    changed = _call(client, "PATCH", f"/apps/{app['id']}", owner, {"ready_timeout": 90})
    assert changed.status_code == 200, changed.content
    assert changed.json()["ready_timeout"] == 90
    updated = AuditEvent.objects.filter(action="app.updated").last()
    assert updated is not None and updated.details["changed"] == ["ready_timeout"]
    # Out of bounds on a change: refused, nothing changed.
    assert_api_error(_call(client, "PATCH", f"/apps/{app['id']}", owner,
                           {"ready_timeout": 100000}), 422, "ready_timeout_invalid")
    assert App.objects.get(id=app["id"]).ready_timeout == 90
    # Null leaves it as it is (like every other unset field of a PATCH).
    same = _call(client, "PATCH", f"/apps/{app['id']}", owner, {"ready_timeout": None})
    assert same.json()["ready_timeout"] == 90
    start = eu.snapshot(client)["revision"]
    assert _call(client, "POST", f"/apps/{app['id']}/deploy", owner).status_code == 201
    [change] = eu.changes(client, start)["changes"]
    assert change["deployment"]["ready_timeout"] == 90
