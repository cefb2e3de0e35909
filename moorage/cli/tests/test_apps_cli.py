"""``moorage apps`` against a live server; region agents are played by a fake in a thread.

The fake (:class:`FakeAgents`) is the one thing not real here: it posts the reports a region
agent would, through the real agent endpoint with the region's real token, so the CLI follows
a deploy the way it follows one run by ``moorage agent``.
"""

from __future__ import annotations

import hashlib
import secrets
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result

from moorage.apps.models import App, SourceArchive
from moorage.apps.services import open_env
from moorage.cli import apps as apps_cli
from moorage.cli.tests.conftest import Cli
from moorage.credentials import services as credential_services
from moorage.deployments.models import Deployment
from moorage.regions import services as region_services
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region
from moorage.testing.secrets_search import database_text

SECRET = "Walrus-" + secrets.token_hex(8) + "-ochre"
IMAGE = "ghcr.io/acme/api:1.4"
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64


@pytest.fixture
def regions(logged_in: Member) -> dict[str, AgentView]:
    """Two regions the account deploys to."""
    made = {slug: make_region(slug) for slug in ("eu-1", "us-1")}
    region_services.account_regions_set(actor=logged_in.user, membership=logged_in.membership,
                                        slugs=list(made))
    return made


def _row(table: str, *words: str) -> str:
    """The one table line that holds every word."""
    rows = [line for line in table.splitlines() if all(w in line.split() for w in words)]
    assert len(rows) == 1, (words, table)
    return rows[0]


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def _fails(result: Result, code: str) -> str:
    assert result.exit_code == 1, result.output
    assert f"({code})" in result.stderr, result.stderr
    return result.stderr


# ----- the fake region agents


class FakeAgents(threading.Thread):
    """Plays each region's agent for deploy ``number`` of an app: waits for the deployment
    to exist, then posts one report per step and region, a pause apart (long enough for
    the CLI, polling every 0.5 s, to see each step)."""

    PAUSE = 1.5

    def __init__(self, url: str, owner: Member, app_id: int, number: int,
                 steps: dict[str, tuple[AgentView, list[dict[str, Any]]]]) -> None:
        super().__init__(daemon=True)
        self.url, self.owner, self.app_id, self.number = url, owner, app_id, number
        self.steps = steps
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            ids = self._wait_for_deployments()
            for index in range(max(len(s) for _, s in self.steps.values())):
                time.sleep(self.PAUSE)
                for region, (view, reports) in self.steps.items():
                    if index < len(reports):
                        response = httpx.post(
                            f"{self.url}/api/v1/agent/deployments/{ids[region]}/events",
                            json=reports[index], headers=view.auth, timeout=10)
                        assert response.status_code == 204, response.text
        except BaseException as exc:  # handed to the test thread by finish()
            self.error = exc

    def _wait_for_deployments(self) -> dict[str, int]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.url}/api/v1/apps/{self.app_id}/deployments",
                                 headers=self.owner.auth, timeout=10)
            found = {d["region"]: d["id"] for d in response.json()
                     if d["number"] == self.number}
            if set(found) >= set(self.steps):
                return found
            time.sleep(0.05)
        raise AssertionError(f"deploy #{self.number} never appeared")

    def finish(self) -> None:
        self.join(timeout=30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def _running(digest: str, revision: int | None, name: str) -> list[dict[str, Any]]:
    return [
        {"status": "pulling", "log": [f"Pulling {IMAGE}"], "progress": {"l1": [5, 10]}},
        {"status": "running", "log": [f"Started {name}"], "image_digest": digest,
         "credential_revision": revision},
    ]


# ----- create and update: how the app pulls


@pytest.mark.django_db(transaction=True)
def test_create_pull_choices_and_list(
    run: Cli, logged_in: Member, regions: dict[str, AgentView], other_owner: Member
) -> None:
    make_credential(logged_in, name="ghcr-prod", server="ghcr.io", secret=SECRET)
    ci = make_credential(logged_in, name="ghcr-ci", server="ghcr.io", secret=SECRET)
    make_credential(logged_in, name="quay-ci", server="quay.io", secret=SECRET)
    make_credential(logged_in, name="gh-git", type="git", server="github.com", secret=SECRET)
    make_credential(other_owner, name="globex-ghcr", server="ghcr.io", secret=SECRET)

    default = _ok(run("apps", "create", "web", "--image", "ghcr.io/acme/web:1"))
    assert "Created app web running ghcr.io/acme/web:1 in eu-1, us-1." in default.stdout
    assert "Deploys will pull ghcr.io/acme/web:1 with 'ghcr-prod' (ghcr.io)." in default.stdout
    explicit = _ok(run("apps", "create", "api", "--image", IMAGE, "--pull-credential",
                       "ghcr-ci", "--region", "eu-1", "--port", "8080"))
    assert f"Deploys will pull {IMAGE} with 'ghcr-ci' (ghcr.io)." in explicit.stdout
    public = _ok(run("apps", "create", "box", "--image", "busybox:1", "--no-pull-credential"))
    assert "without a credential (public image)" in public.stdout
    # A credential for another registry: saved, but the user is told deploys will be refused.
    mismatch = _ok(run("apps", "create", "odd", "--image", IMAGE, "--pull-credential",
                       "quay-ci"))
    assert "Warning:" in mismatch.stderr and "deploys will be refused" in mismatch.stderr

    apps = {a["name"]: a for a in run.json("apps", "list")}
    assert sorted(apps) == ["api", "box", "odd", "web"]
    assert (apps["web"]["runtime_pull"], apps["web"]["runtime_pull_credential_id"]) == (
        "account_default", None)
    assert (apps["api"]["runtime_pull"], apps["api"]["runtime_pull_credential_id"]) == (
        "credential", ci.pk)
    assert apps["api"]["regions"] == ["eu-1"] and apps["api"]["port"] == 8080
    assert apps["box"]["runtime_pull"] == "none"
    table = _ok(run("apps", "list")).stdout
    assert "(ghcr-prod)" in _row(table, "web")
    assert "ghcr-ci" in _row(table, "api").split()
    assert "none" in _row(table, "box").split()
    assert "never" in _row(table, "web")

    # Only the account's own container-registry credentials can be chosen (I7).
    git = _fails(run("apps", "create", "nope", "--image", IMAGE, "--pull-credential",
                     "gh-git"), "credential_type_mismatch")
    assert "'gh-git' is a git credential" in git
    other = _fails(run("apps", "create", "nope", "--image", IMAGE, "--pull-credential",
                       "globex-ghcr"), "credential_not_found")
    assert "No container-registry credential named 'globex-ghcr'" in other
    _fails(run("apps", "create", "nope", "--image", IMAGE, "--pull-credential", "ghcr-ci",
               "--no-pull-credential"), "pull_options_conflict")
    _fails(run("apps", "create", "web", "--image", IMAGE), "app_name_taken")
    _fails(run("apps", "create", "nope", "--image", IMAGE, "--region", "mars-1"),
           "region_not_enabled")
    assert not App.objects.filter(name="nope").exists()

    # update moves between the three choices.
    _ok(run("apps", "update", "box", "--pull-credential", "ghcr-prod"))
    box = App.objects.get(name="box")
    assert box.runtime_pull == "credential" and box.runtime_pull_credential is not None
    assert box.runtime_pull_credential.name == "ghcr-prod"
    back = _ok(run("apps", "update", "box", "--use-account-default"))
    # busybox is on docker.io, so the default (for ghcr.io) is not sent: an anonymous pull.
    assert "with 'ghcr-prod' (ghcr.io)" not in back.stdout and back.stderr == ""
    assert ("Deploys will pull busybox:1 anonymously: the account default 'ghcr-prod' is for "
            "ghcr.io, and busybox:1 is on docker.io.") in " ".join(back.stdout.split())
    box.refresh_from_db()
    assert (box.runtime_pull, box.runtime_pull_credential) == ("account_default", None)
    _ok(run("apps", "update", "box", "--no-pull-credential", "--image", "busybox:2"))
    box.refresh_from_db()
    assert (box.runtime_pull, box.image) == ("none", "busybox:2")
    _fails(run("apps", "update", "box"), "nothing_to_change")
    _fails(run("apps", "update", "ghost", "--port", "1"), "app_not_found")
    for output in run.outputs:
        assert SECRET not in output


# ----- env, secret env and the command


@pytest.mark.django_db(transaction=True)
def test_env_secrets_come_from_stdin_or_a_prompt_and_stay_sealed(
    run: Cli, logged_in: Member, regions: dict[str, AgentView]
) -> None:
    created = _ok(run(
        "apps", "create", "api", "--image", IMAGE, "--env", "LOG_LEVEL=info",
        "--env", "GREETING=a=b", "--secret-env-stdin",
        "--command", "sh -c 'echo hi; sleep 1'",
        input=f"DB_PASSWORD={SECRET}\n\nAPI_KEY={SECRET}-2\n",
    ))
    assert "API_KEY (secret)" in created.stdout and "DB_PASSWORD (secret)" in created.stdout
    app = App.objects.get(name="api")
    assert app.command == ["sh", "-c", "echo hi; sleep 1"]
    env = {v.name: v for v in app.env.all()}
    assert sorted(env) == ["API_KEY", "DB_PASSWORD", "GREETING", "LOG_LEVEL"]
    assert env["DB_PASSWORD"].secret and open_env(env["DB_PASSWORD"]) == SECRET
    assert open_env(env["API_KEY"]) == SECRET + "-2"
    assert (env["GREETING"].value, env["GREETING"].secret) == ("a=b", False)

    # Changing plain variables keeps the secrets; --unset-env removes one.
    _ok(run("apps", "update", "api", "--env", "LOG_LEVEL=debug", "--unset-env", "API_KEY"))
    env = {v.name: v for v in App.objects.get(name="api").env.all()}
    assert sorted(env) == ["DB_PASSWORD", "GREETING", "LOG_LEVEL"]
    assert env["LOG_LEVEL"].value == "debug" and open_env(env["DB_PASSWORD"]) == SECRET

    # A hidden prompt, asked twice.
    prompted = _ok(run("apps", "update", "api", "--secret-env", "DB_PASSWORD",
                       input=f"{SECRET}-3\n{SECRET}-3\n"))
    assert "Value of DB_PASSWORD" in prompted.stderr
    assert "Repeat the value of DB_PASSWORD" in prompted.stderr
    rotated = App.objects.get(name="api").env.get(name="DB_PASSWORD")
    assert open_env(rotated) == SECRET + "-3"

    status = _ok(run("apps", "status", "api")).stdout
    assert "Command:  sh -c 'echo hi; sleep 1'" in status
    assert "DB_PASSWORD (secret)" in status and "LOG_LEVEL" in status

    # Never a value on the command line; a bad stdin line is named by number, not quoted.
    _fails(run("apps", "update", "api", "--secret-env", "TOKEN=abc"), "secret_env_invalid")
    bad = _fails(run("apps", "update", "api", "--secret-env-stdin", input=SECRET + "\n"),
                 "secret_env_invalid")
    assert "Line 1 of standard input is not KEY=VALUE" in bad
    _fails(run("apps", "update", "api", "--secret-env", "OTHER", "--secret-env-stdin",
               input=f"DB_PASSWORD={SECRET}\n"), "secret_env_missing")
    _fails(run("apps", "update", "api", "--command", "sh -c 'unclosed"), "command_invalid")
    _fails(run("apps", "update", "api", "--env", "NOEQUALS"), "env_invalid")
    _fails(run("apps", "update", "api", "--unset-env", "MISSING"), "env_not_found")
    assert open_env(App.objects.get(name="api").env.get(name="DB_PASSWORD")) == SECRET + "-3"

    listed = run("apps", "list", "--json")
    assert _ok(listed) and SECRET not in listed.stdout
    for output in run.outputs:
        assert SECRET not in output
    assert SECRET not in database_text()


# ----- deploy, follow, status


@pytest.mark.django_db(transaction=True)
def test_deploy_follow_until_running_then_a_failure_then_status(
    run: Cli, logged_in: Member, regions: dict[str, AgentView], live_server: Any
) -> None:
    prod = make_credential(logged_in, name="ghcr-prod", server="ghcr.io", secret=SECRET)
    # A rotation, so the revision shown is one the deploy really recorded.
    credential_services.credential_update(actor=logged_in.user,
                                          membership=logged_in.membership,
                                          credential_id=prod.pk, secret=SECRET + "-r2")
    _ok(run("apps", "create", "api", "--image", IMAGE))
    app_id = App.objects.get(name="api").pk
    eu, us = regions["eu-1"], regions["us-1"]

    agents = FakeAgents(str(live_server.url), logged_in, app_id, 1, {
        "eu-1": (eu, _running(DIGEST_1, 2, "eu")),
        "us-1": (us, _running(DIGEST_1, 2, "us")),
    })
    agents.start()
    started = time.monotonic()
    first = run("apps", "deploy", "api", "--follow")
    agents.finish()
    assert first.exit_code == 0, first.output
    assert time.monotonic() - started < 15
    out = first.stdout
    assert "Deploy #1 of api to eu-1" in out and "Deploy #1 of api to us-1" in out
    assert "will be pulled with 'ghcr-prod' revision 2." in out
    assert "Deploy #1 queued for eu-1" in out  # the server's own first log line
    assert f"eu-1 Pulling {IMAGE}" in out and "us-1 Started us" in out
    assert "eu-1 status: pulling" in out and "us-1 status: running" in out
    assert "eu-1 l1" in out and "10/10" in out  # the layer bar, complete once running
    assert (f"eu-1: running {IMAGE} ({DIGEST_1}), pulled with 'ghcr-prod' revision 2."
            in out)
    assert Deployment.objects.filter(app_id=app_id, status="running").count() == 2

    # Deploy #2: eu-1 runs a new digest, us-1 fails; the command exits 1 with the error.
    agents = FakeAgents(str(live_server.url), logged_in, app_id, 2, {
        "eu-1": (eu, _running(DIGEST_2, 2, "eu")),
        "us-1": (us, [{"status": "pulling", "log": ["Pulling"], "progress": {"l1": [1, 10]}},
                      {"status": "failed", "log": ["Pull refused"],
                       "error": {"code": "registry_unauthorized",
                                 "message": "ghcr.io rejected 'ghcr-prod'."}}]),
    })
    agents.start()
    second = run("apps", "deploy", "api", "--follow")
    agents.finish()
    assert second.exit_code == 1, second.output
    assert "us-1 Pull refused" in second.stdout
    assert "us-1: failed registry_unauthorized: ghcr.io rejected 'ghcr-prod'." in second.stdout
    assert f"eu-1: running {IMAGE} ({DIGEST_2})" in second.stdout

    status = _ok(run("apps", "status", "api")).stdout
    assert "Deploys will pull ghcr.io/acme/api:1.4 with 'ghcr-prod' (ghcr.io)." in status
    eu_row, us_row = _row(status, "eu-1", "#2"), _row(status, "us-1", "#2")
    assert "running" in eu_row.split() and DIGEST_2[:19] in eu_row.split()
    assert "ghcr-prod rev 2" in eu_row
    assert "failed" in us_row.split() and "sha256" not in us_row
    assert DIGEST_1[:19] not in status  # deploy #1 is no longer the latest anywhere
    assert "us-1 failed registry_unauthorized: ghcr.io rejected 'ghcr-prod'." in status
    listed = _row(_ok(run("apps", "list")).stdout, "api")
    assert listed.rstrip().endswith("#2 1 failed, 1 running"), listed
    for output in run.outputs:
        assert SECRET not in output


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_following_but_not_the_deploy(
    run: Cli, logged_in: Member, regions: dict[str, AgentView],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ok(run("apps", "create", "box", "--image", "busybox:1", "--no-pull-credential",
            "--region", "eu-1"))

    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(apps_cli, "_pause", interrupt)
    stopped = run("apps", "deploy", "box", "--follow")
    assert stopped.exit_code == apps_cli.INTERRUPTED, stopped.output
    assert "will be pulled anonymously" in stopped.stdout
    assert "the deploy was not cancelled and goes on" in stopped.stderr
    assert Deployment.objects.get(app__name="box").status == "queued"
    status = _ok(run("apps", "status", "box")).stdout
    assert "queued" in _row(status, "eu-1", "#1")


@pytest.mark.django_db(transaction=True)
def test_errors_and_delete(run: Cli, logged_in: Member) -> None:
    for args in (("status", "ghost"), ("deploy", "ghost"), ("delete", "ghost", "--yes")):
        assert "No app named 'ghost'" in _fails(run("apps", *args), "app_not_found")
    assert "No apps yet" in _ok(run("apps", "list")).stdout
    # No region enabled for the account: the app is created, a deploy is refused.
    created = _ok(run("apps", "create", "lonely", "--image", "busybox:1"))
    assert "in no region yet" in created.stdout
    assert "Never deployed" in _ok(run("apps", "status", "lonely")).stdout
    _fails(run("apps", "deploy", "lonely"), "app_has_no_region")
    # Names are shown as typed, never as markup.
    _fails(run("apps", "status", "[/x]"), "app_not_found")

    declined = run("apps", "delete", "lonely", input="n\n")
    assert declined.exit_code == 1 and "Delete app 'lonely'?" in declined.stderr
    assert App.objects.filter(name="lonely").exists()
    _ok(run("apps", "delete", "lonely", input="y\n"))
    assert run.json("apps", "list") == []


@pytest.mark.django_db(transaction=True)
def test_the_readiness_timeout_is_set_on_create_and_update(run: Cli, logged_in: Member) -> None:
    _ok(run("apps", "create", "slow", "--image", "busybox:1", "--port", "8080",
            "--ready-timeout", "120"))
    assert App.objects.get(name="slow").ready_timeout == 120
    assert "Ready in: 120 s at most" in _ok(run("apps", "status", "slow")).stdout
    _ok(run("apps", "update", "slow", "--ready-timeout", "5"))
    assert run.json("apps", "list")[0]["ready_timeout"] == 5
    assert "between 1 and 600" in _fails(run("apps", "update", "slow", "--ready-timeout", "0"),
                                         "ready_timeout_invalid")
    assert App.objects.get(name="slow").ready_timeout == 5
    _ok(run("apps", "create", "quick", "--image", "busybox:1"))
    assert App.objects.get(name="quick").ready_timeout == 30


# ----- builds from source

REPO = "https://git.example.com/acme/api.git"


@pytest.mark.django_db(transaction=True)
def test_create_and_update_a_build_app(
    run: Cli, logged_in: Member, regions: dict[str, AgentView], other_owner: Member
) -> None:
    make_credential(logged_in, name="hub-default", server="docker.io", secret=SECRET)
    base = make_credential(logged_in, name="ghcr-base", server="ghcr.io", secret=SECRET)
    git = make_credential(logged_in, name="gh-git", type="git", server="git.example.com",
                          secret=SECRET)
    make_credential(other_owner, name="globex-git", type="git", server="git.example.com",
                    secret=SECRET)

    created = _ok(run("apps", "create", "api", "--git", REPO, "--ref", "v1.4",
                      "--git-credential", "gh-git", "--dockerfile", "docker/Dockerfile",
                      "--context", "svc", "--build-arg", "VERSION=1.4",
                      "--build-arg", "EXTRA=a=b", "--build-pull-credential", "ghcr-base",
                      "--port", "8080"))
    assert f"Created app api built from {REPO}@v1.4 in eu-1, us-1." in created.stdout
    assert f"Source: {REPO}@v1.4 (git credential 'gh-git')" in created.stdout
    assert "Build: docker/Dockerfile in svc with EXTRA=a=b VERSION=1.4" in created.stdout
    assert ("Pull: Base images on ghcr.io are pulled with 'ghcr-base', others without a "
            "credential; builds never use the account default.") in created.stdout
    app = App.objects.get(name="api")
    assert (app.source, app.git_url, app.git_ref, app.dockerfile, app.context) == (
        "build", REPO, "v1.4", "docker/Dockerfile", "svc")
    assert app.git_credential == git and app.build_pull_credential == base
    assert app.build_args == {"VERSION": "1.4", "EXTRA": "a=b"} and app.port == 8080

    # No build-pull credential: anonymous, never the account default (I5).
    public = _ok(run("apps", "create", "web", "--git", REPO))
    assert ("Base images are pulled without a credential; builds never use the account "
            "default.") in public.stdout
    web = App.objects.get(name="web")
    assert (web.git_ref, web.git_credential, web.build_pull_credential) == ("main", None, None)

    table = _ok(run("apps", "list")).stdout
    assert "base images: with 'ghcr-base'" in _row(table, "api")
    assert "base images: without a credential" in _row(table, "web")
    assert "hub-default" not in table
    assert "never the account default" in table
    # The source column folds on a narrow terminal: join the api row's pieces back.
    lines = table.splitlines()
    first = lines.index(_row(table, "api"))
    last = lines.index(_row(table, "web"))
    cells = "".join(line.split("│")[1].strip() for line in lines[first:last])
    assert cells == f"{REPO}@v1.4", table
    status = _ok(run("apps", "status", "api")).stdout
    assert f"Source:   {REPO}@v1.4 (git credential 'gh-git')" in status
    assert "Pull:     Base images on ghcr.io are pulled with 'ghcr-base'" in status
    assert "Image:" not in status

    # Wrong type, another account's, conflicting and misplaced options: clear errors.
    wrong = _fails(run("apps", "create", "x", "--git", REPO, "--git-credential", "ghcr-base"),
                   "credential_type_mismatch")
    assert "'ghcr-base' is a container-registry credential; cloning a repository needs a " \
           "git credential." in " ".join(wrong.split())
    wrong = _fails(run("apps", "create", "x", "--git", REPO, "--build-pull-credential",
                       "gh-git"), "credential_type_mismatch")
    assert "'gh-git' is a git credential; pulling a build's base images needs a " \
           "container-registry credential." in " ".join(wrong.split())
    other = _fails(run("apps", "create", "x", "--git", REPO, "--git-credential",
                       "globex-git"), "credential_not_found")
    assert "No git credential named 'globex-git'" in other
    _fails(run("apps", "create", "x", "--git", REPO, "--image", IMAGE),
           "source_options_conflict")
    _fails(run("apps", "create", "x"), "source_required")
    _fails(run("apps", "create", "x", "--image", IMAGE, "--ref", "main"),
           "build_options_without_source")
    _fails(run("apps", "create", "x", "--git", REPO, "--pull-credential", "ghcr-base"),
           "pull_options_conflict")
    _fails(run("apps", "create", "x", "--git", REPO, "--build-arg", "NOVALUE"),
           "build_arg_invalid")
    _fails(run("apps", "create", "x", "--git", "ssh://git.example.com/a.git"),
           "git_url_invalid")
    assert not App.objects.filter(name="x").exists()

    # update changes what is given and keeps the rest; build args merge like env.
    _ok(run("apps", "update", "api", "--ref", "release", "--build-arg", "VERSION=1.5",
            "--unset-build-arg", "EXTRA", "--no-build-pull-credential"))
    app.refresh_from_db()
    assert (app.git_ref, app.build_args, app.build_pull_credential) == (
        "release", {"VERSION": "1.5"}, None)
    assert app.git_credential == git and app.dockerfile == "docker/Dockerfile"
    _ok(run("apps", "update", "api", "--no-git-credential", "--build-pull-credential",
            "ghcr-base"))
    app.refresh_from_db()
    assert (app.git_credential, app.build_pull_credential) == (None, base)
    _fails(run("apps", "update", "api", "--build-pull-credential", "ghcr-base",
               "--no-build-pull-credential"), "build_options_conflict")
    _fails(run("apps", "update", "api", "--unset-build-arg", "NOPE"), "build_arg_not_found")
    _fails(run("apps", "update", "api", "--use-account-default"), "pull_options_conflict")

    # From a build to an image and back.
    _ok(run("apps", "update", "web", "--image", IMAGE, "--no-pull-credential"))
    web.refresh_from_db()
    assert (web.source, web.image, web.runtime_pull) == ("image", IMAGE, "none")
    _fails(run("apps", "update", "web", "--ref", "main"), "build_options_without_source")
    moved = _ok(run("apps", "update", "web", "--git", REPO, "--ref", "dev"))
    assert f"Source: {REPO}@dev" in moved.stdout
    web.refresh_from_db()
    assert (web.source, web.git_ref) == ("build", "dev")
    for output in run.outputs:
        assert SECRET not in output


@pytest.mark.django_db(transaction=True)
def test_deploy_follow_shows_the_build(
    run: Cli, logged_in: Member, regions: dict[str, AgentView], live_server: Any
) -> None:
    make_credential(logged_in, name="hub-default", server="docker.io", secret=SECRET)
    make_credential(logged_in, name="ghcr-base", server="ghcr.io", secret=SECRET)
    _ok(run("apps", "create", "api", "--git", REPO, "--ref", "v1.4", "--region", "eu-1",
            "--build-pull-credential", "ghcr-base"))
    app_id = App.objects.get(name="api").pk
    building: list[dict[str, Any]] = [
        {"status": "building", "log": [f"Fetching {REPO} at v1.4 anonymously"]},
        {"status": "building", "log": ["Base image ghcr.io/acme/base:1: pulled with "
                                       "'ghcr-base' (revision 1) (ghcr.io)"]},
        {"status": "building", "log": ["Step 1/2 : FROM ghcr.io/acme/base:1",
                                       "Step 2/2 : RUN make"]},
        {"status": "starting", "log": ["Built moorage/acme/api:1"]},
        {"status": "running", "log": ["Started"], "image_digest": DIGEST_1,
         "credential_revision": 1},
    ]
    agents = FakeAgents(str(live_server.url), logged_in, app_id, 1,
                        {"eu-1": (regions["eu-1"], building)})
    agents.start()
    followed = run("apps", "deploy", "api", "--follow")
    agents.finish()
    assert followed.exit_code == 0, followed.output
    out = followed.stdout
    assert (f"will build {REPO}@v1.4, base images pulled with 'ghcr-base' revision 1."
            in out)
    assert "status: building" in out and out.count("status: building") == 1
    for line in (f"Fetching {REPO} at v1.4", "pulled with 'ghcr-base' (revision 1)",
                 "Step 1/2 : FROM ghcr.io/acme/base:1", "Step 2/2 : RUN make",
                 "status: starting", "Built moorage/acme/api:1"):
        assert line in out, line
    assert out.index("Step 1/2") < out.index("status: starting")
    assert (f"eu-1: running the image {DIGEST_1} built from {REPO}@v1.4, base images "
            "pulled with 'ghcr-base' revision 1.") in out
    status = _ok(run("apps", "status", "api")).stdout
    assert "running" in _row(status, "eu-1", "#1") and "ghcr-base rev 1" in status

    # Without a build-pull credential the deploy says so: never the account default.
    _ok(run("apps", "update", "api", "--no-build-pull-credential"))
    queued = _ok(run("apps", "deploy", "api")).stdout
    assert (f"will build {REPO}@v1.4, base images pulled without a credential (never the "
            "account default).") in queued
    [second] = Deployment.objects.filter(app_id=app_id, number=2)
    assert second.credential is None and second.build is not None


@pytest.mark.django_db(transaction=True)
def test_source_dir_is_uploaded_and_deployed(
    run: Cli, logged_in: Member, regions: dict[str, AgentView], tmp_path: Path,
    settings: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.DATA_DIR = tmp_path / "data"
    src = tmp_path / "src"
    (src / ".git").mkdir(parents=True)
    (src / ".git" / "config").write_text("[remote]\n")
    (src / "lib").mkdir()
    (src / "Dockerfile").write_text("FROM busybox:1\nCOPY . /app\n")
    (src / "lib" / "run.sh").write_text("echo hi\n")
    (src / "secret.txt").write_text("not for the build\n")
    (src / ".dockerignore").write_text("# local only\nsecret.txt\n")

    created = _ok(run("apps", "create", "api", "--source", str(src), "--region", "eu-1"))
    archive = SourceArchive.objects.get(app__name="api")
    out = " ".join(created.stdout.split())
    assert f"Uploaded {src}: 3 files," in out and f"sha256:{archive.sha256}" in out
    assert f"built from uploaded source sha256:{archive.sha256[:12]}" in out
    stored = settings.DATA_DIR / "sources" / str(archive.app_id) / f"{archive.sha256}.tar.gz"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == archive.sha256
    with tarfile.open(stored) as tar:
        names = sorted(tar.getnames())
    assert names == [".dockerignore", "Dockerfile", "lib", "lib/run.sh"], names
    app = App.objects.get(name="api")
    assert (app.source, app.git_url, app.source_archive) == ("build", "", archive)
    status = _ok(run("apps", "status", "api")).stdout
    assert f"uploaded source sha256:{archive.sha256[:12]}" in status

    deployed = _ok(run("apps", "deploy", "api")).stdout
    assert f"will build the uploaded source sha256:{archive.sha256[:12]}" in deployed
    [deployment] = Deployment.objects.filter(app=app)
    assert deployment.build is not None
    assert deployment.build["archive"] == {"id": archive.pk, "sha256": archive.sha256,
                                           "size": archive.size}

    # The same directory again is the same archive; a change is a new one.
    _ok(run("apps", "update", "api", "--source", str(src)))
    assert SourceArchive.objects.filter(app=app).count() == 1
    (src / "lib" / "run.sh").write_text("echo changed\n")
    _ok(run("apps", "update", "api", "--source", str(src), "--build-arg", "V=2"))
    app.refresh_from_db()
    assert SourceArchive.objects.filter(app=app).count() == 2
    assert app.source_archive != archive and app.build_args == {"V": "2"}
    # A git repository replaces it; options that only fit one source are refused.
    _ok(run("apps", "update", "api", "--git", REPO))
    app.refresh_from_db()
    assert (app.git_url, app.source_archive) == (REPO, None)
    _fails(run("apps", "update", "api", "--source", str(src), "--ref", "main"),
           "build_options_conflict")
    _fails(run("apps", "update", "api", "--source", str(src), "--git", REPO),
           "source_options_conflict")

    # A refused upload leaves no app behind.
    monkeypatch.setattr(apps_cli, "MAX_ARCHIVE_BYTES", 10)
    big = _fails(run("apps", "create", "big", "--source", str(src)), "source_too_large")
    assert "gzipped; at most" in big
    assert not App.objects.filter(name="big").exists()
