"""Build-from-source apps through the API: their settings, and a build's pull credential,
which is the app's choice or none — never the account default (I5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from moorage.regions import services as region_services
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region

pytestmark = pytest.mark.django_db

REPO = "https://git.example.com/acme/api.git"


def _call(client: Client, method: str, path: str, member: Member, body: Any = None) -> Any:
    return client.generic(method, API + path, json.dumps(body) if body is not None else "",
                          content_type="application/json", headers=member.auth)


@pytest.fixture
def eu(owner: Member) -> AgentView:
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    return region


def _deployment_sent(client: Client, eu: AgentView, since: int) -> dict[str, Any]:
    [change] = eu.changes(client, since)["changes"]
    assert change["op"] == "deployment.upsert"
    sent: dict[str, Any] = change["deployment"]
    return sent


def test_a_build_app_deploys_with_its_build_pull_credential(
    client: Client, owner: Member, eu: AgentView
) -> None:
    make_credential(owner, name="hub-default", server="docker.io")  # the account default
    base = make_credential(owner, name="ghcr-base", server="ghcr.io")
    git = make_credential(owner, name="gh", type="git", server="git.example.com")
    created = _call(client, "POST", "/apps", owner, {
        "name": "api", "source": "build", "git_url": REPO, "git_ref": "v1.4",
        "git_credential_id": git.id, "dockerfile": "docker/Dockerfile", "context": ".",
        "build_args": {"VERSION": "1.4"}, "build_pull_credential_id": base.id, "port": 8080,
    })
    assert created.status_code == 201, created.content
    app = created.json()
    assert (app["source"], app["build_pull_credential_name"], app["git_ref"]) == (
        "build", "ghcr-base", "v1.4")
    start = eu.snapshot(client)["revision"]
    [deployment] = _call(client, "POST", f"/apps/{app['id']}/deploy", owner).json()
    assert (deployment["credential_name"], deployment["credential_revision"]) == ("ghcr-base", 1)
    sent = _deployment_sent(client, eu, start)
    assert sent["image"] is None and sent["account_slug"] == "acme"
    assert sent["pull"]["mode"] == "anonymous"  # nothing is pulled by image name
    assert sent["build"] == {
        "git": {"url": REPO, "ref": "v1.4", "credential_id": git.id, "credential_revision": 1},
        "dockerfile": "docker/Dockerfile", "context": ".", "build_args": {"VERSION": "1.4"},
        "pull": {"credential_id": base.id, "credential_name": "ghcr-base",
                 "credential_revision": 1},
    }


def test_an_empty_build_pull_select_never_falls_back_to_the_default(
    client: Client, owner: Member, eu: AgentView
) -> None:
    default = make_credential(owner, name="hub-default", server="docker.io")
    assert default.is_default
    created = _call(client, "POST", "/apps", owner,
                    {"name": "api", "source": "build", "git_url": REPO})
    assert created.status_code == 201, created.content
    app = created.json()
    assert app["build_pull_credential_id"] is None
    start = eu.snapshot(client)["revision"]
    [deployment] = _call(client, "POST", f"/apps/{app['id']}/deploy", owner).json()
    assert deployment["credential_name"] is None
    assert _deployment_sent(client, eu, start)["build"]["pull"] is None


@pytest.mark.parametrize(("body", "code"), [
    ({"git_url": ""}, "git_url_required"),
    ({"git_url": "https://user:ghp_token@github.com/acme/api.git"}, "git_url_invalid"),
    ({"git_url": "ssh://git@github.com/acme/api.git"}, "git_url_invalid"),
    ({"git_ref": "main; rm -rf /"}, "git_ref_invalid"),
    ({"dockerfile": "../../etc/passwd"}, "dockerfile_invalid"),
    ({"context": "/abs"}, "context_invalid"),
    ({"build_args": {"1BAD": "x"}}, "build_args_invalid"),
])
def test_bad_build_settings(client: Client, owner: Member, body: dict[str, Any],
                            code: str) -> None:
    base = {"name": "api", "source": "build", "git_url": REPO}
    assert_api_error(_call(client, "POST", "/apps", owner, base | body), 422, code)


def test_credentials_of_the_wrong_type_or_account_are_refused(
    client: Client, owner: Member, other_owner: Member
) -> None:
    registry = make_credential(owner, name="reg", server="ghcr.io")
    git = make_credential(owner, name="gh", type="git", server="github.com")
    theirs = make_credential(other_owner, name="theirs", server="ghcr.io")
    base = {"name": "api", "source": "build", "git_url": REPO}
    for body, code in [
        ({"git_credential_id": registry.id}, "credential_type_mismatch"),
        ({"build_pull_credential_id": git.id}, "credential_type_mismatch"),
        ({"build_pull_credential_id": theirs.id}, "credential_not_found"),
    ]:
        assert_api_error(_call(client, "POST", "/apps", owner, base | body), 422, code)


def test_a_credential_builds_use_cannot_be_deleted_and_counts_as_used(
    client: Client, owner: Member
) -> None:
    base = make_credential(owner, name="ghcr-base", server="ghcr.io")
    git = make_credential(owner, name="gh", type="git", server="github.com")
    _call(client, "POST", "/apps", owner, {
        "name": "api", "source": "build", "git_url": REPO, "git_credential_id": git.id,
        "build_pull_credential_id": base.id})
    listing = {c["name"]: c for c in _call(client, "GET", "/credentials", owner).json()}
    # A build app does not use the default: only its explicit build-pull credential.
    assert listing["ghcr-base"]["used_by_apps"] == 1 and listing["gh"]["used_by_apps"] == 1
    for credential in (base, git):
        body = assert_api_error(_call(client, "DELETE", f"/credentials/{credential.id}", owner),
                                409, "credential_in_use")
        assert body["detail"] == {"apps": ["api"]}


def test_patch_changes_one_build_setting_and_keeps_the_rest(
    client: Client, owner: Member
) -> None:
    base = make_credential(owner, name="ghcr-base", server="ghcr.io")
    app = _call(client, "POST", "/apps", owner, {
        "name": "api", "source": "build", "git_url": REPO, "dockerfile": "Dockerfile.prod",
        "build_pull_credential_id": base.id}).json()
    patched = _call(client, "PATCH", f"/apps/{app['id']}", owner, {"git_ref": "release"})
    assert patched.status_code == 200, patched.content
    data = patched.json()
    assert (data["git_ref"], data["dockerfile"], data["build_pull_credential_id"]) == (
        "release", "Dockerfile.prod", base.id)
    cleared = _call(client, "PATCH", f"/apps/{app['id']}", owner,
                    {"build_pull_credential_id": None}).json()
    assert cleared["build_pull_credential_id"] is None
