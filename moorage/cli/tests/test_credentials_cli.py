"""``moorage credentials``: the remote commands against a live server and real registries, and
``export`` on the server side, checked with skopeo."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result

from moorage.audit.models import AuditEvent
from moorage.cli.credentials import credentials as credentials_group
from moorage.cli.tests.conftest import Cli
from moorage.credentials import vault
from moorage.credentials.models import Credential
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.programs import require_binary
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

SECRET = "Zebra-" + secrets.token_hex(8) + "-quartz"


def _row(table: str, *words: str) -> str:
    """The one table line that holds every word."""
    rows = [line for line in table.splitlines() if all(w in line.split() for w in words)]
    assert len(rows) == 1, (words, table)
    return rows[0]


def _by_name(items: list[dict[str, Any]], name: str, kind: str = "container_registry"
             ) -> dict[str, Any]:
    return next(c for c in items if c["name"] == name and c["type"] == kind)


# ----- no option ever takes a secret


def test_no_credentials_option_takes_a_secret() -> None:
    sensitive = ("password", "secret", "token", "auth")
    for command in credentials_group.commands.values():
        for param in command.params:
            takes_value = isinstance(param, click.Argument) or not getattr(param, "is_flag", False)
            if takes_value:
                assert not any(s in (param.name or "") for s in sensitive), (command.name, param)
    add_options = {p.name for p in credentials_group.commands["add"].params}
    assert "password_stdin" in add_options


# ----- the remote commands against a live server


@pytest.mark.django_db(transaction=True)
def test_add_list_update_default_and_delete(run: Cli, logged_in: Member) -> None:
    added = run("credentials", "add", "hub", "--server", "https://index.docker.io/v1/",
                "--username", "alice", "--email", "alice@example.com", "--password-stdin",
                input=SECRET + "\n")
    assert added.exit_code == 0, added.output
    assert "Added registry credential hub for docker.io as alice" in added.stdout
    assert "It is the account default." in added.stdout

    # A hidden prompt, asked twice.
    prompted = run("credentials", "add", "ghcr", "--server", "ghcr.io", "--username", "bob",
                   input=f"{SECRET}-2\n{SECRET}-2\n")
    assert prompted.exit_code == 0, prompted.output
    assert "It is not the account default (the default is hub)" in prompted.stdout
    assert "Password" in prompted.stderr and "Repeat the password" in prompted.stderr
    mismatch = run("credentials", "add", "nope", "--server", "quay.io", "--username", "c",
                   input="one-password\nanother-one\n")
    assert mismatch.exit_code != 0 and "do not match" in mismatch.stderr

    git = run("credentials", "add", "hub", "--type", "git", "--server", "https://github.com/",
              "--username", "alice", "--password-stdin", input=SECRET + "-git")
    assert git.exit_code == 0, git.output
    assert "Added git credential hub for github.com" in git.stdout

    listed = run("credentials", "list")
    assert listed.exit_code == 0, listed.output
    assert "Default" in _row(listed.stdout, "hub", "registry", "docker.io", "alice")
    assert "Default" not in _row(listed.stdout, "ghcr", "registry", "ghcr.io", "bob")
    assert "Default" not in _row(listed.stdout, "hub", "git", "github.com")
    items = run.json("credentials", "list")
    assert sorted((c["name"], c["type"]) for c in items) == [
        ("ghcr", "container_registry"), ("hub", "container_registry"), ("hub", "git")]
    assert all("secret" not in c and "password" not in c for c in items)
    assert [c["name"] for c in run.json("credentials", "list", "--type", "git")] == ["hub"]
    hub = _by_name(items, "hub")
    assert hub["is_default"] and hub["revision"] == 1 and hub["email"] == "alice@example.com"

    ambiguous = run("credentials", "update", "hub", "--replace-password", "--password-stdin",
                    input="whatever\n")
    assert ambiguous.exit_code == 1
    assert "--type container_registry or --type git" in ambiguous.stderr
    assert "credential_name_ambiguous" in ambiguous.stderr

    rotated = run("credentials", "update", "hub", "--type", "container_registry",
                  "--replace-password", "--password-stdin", input=SECRET + "-rotated\n")
    assert rotated.exit_code == 0, rotated.output
    assert "Rotated hub (revision 1 → 2)." in rotated.stdout
    prompted_rotation = run("credentials", "update", "ghcr", "--replace-password",
                            input=f"{SECRET}-3\n{SECRET}-3\n")
    assert prompted_rotation.exit_code == 0, prompted_rotation.output
    assert "revision 1 → 2" in prompted_rotation.stdout
    stored = Credential.objects.get(account=logged_in.account, name="hub",
                                    type="container_registry")
    assert vault.open_secret(stored) == SECRET + "-rotated"

    # PATCH sends only what was given: the username and e-mail of hub stay.
    renamed = run("credentials", "update", "ghcr", "--name", "github-registry",
                  "--email", "bob@example.com")
    assert renamed.exit_code == 0, renamed.output
    assert "Updated github-registry (revision 2 → 3)." in renamed.stdout
    items = run.json("credentials", "list")
    ghcr = _by_name(items, "github-registry")
    assert (ghcr["username"], ghcr["server"], ghcr["email"]) == ("bob", "ghcr.io",
                                                                 "bob@example.com")
    assert _by_name(items, "hub")["revision"] == 2
    nothing = run("credentials", "update", "github-registry")
    assert nothing.exit_code == 1 and "nothing_to_change" in nothing.stderr

    moved = run("credentials", "set-default", "github-registry")
    assert moved.exit_code == 0, moved.output
    assert "github-registry is now the account default (was hub)." in moved.stdout
    table = run("credentials", "list").stdout
    assert "Default" in _row(table, "github-registry")
    assert "Default" not in _row(table, "hub", "registry")

    time.sleep(0.01)  # created_at decides the successor: make quay clearly the youngest
    assert run("credentials", "add", "quay", "--server", "quay.io", "--username", "q",
               "--password-stdin", input=SECRET + "-q").exit_code == 0
    # Deleting the default: the oldest remaining registry credential (hub) takes over.
    declined = run("credentials", "delete", "github-registry", input="n\n")
    assert declined.exit_code == 1
    assert "github-registry is the default; hub will become the default." in declined.stdout
    assert "Delete credential 'github-registry'?" in declined.stderr
    assert Credential.objects.filter(name="github-registry").exists()
    deleted = run("credentials", "delete", "github-registry", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "github-registry is the default; hub will become the default." in deleted.stdout
    assert "hub is now the account default." in deleted.stdout
    assert "Default" in _row(run("credentials", "list").stdout, "hub", "registry")

    not_default = run("credentials", "delete", "quay", "--yes")
    assert "quay is not the default; hub stays the default." in not_default.stdout
    assert run("credentials", "delete", "hub", "--type", "git", "--yes").exit_code == 0
    last = run("credentials", "delete", "hub", "--yes")
    assert "the account will have no default" in last.stdout
    assert run.json("credentials", "list") == []
    missing = run("credentials", "delete", "hub", "--yes")
    assert missing.exit_code == 1 and "No credential named 'hub'" in missing.stderr

    for output in run.outputs:
        assert SECRET not in output
    assert SECRET not in database_text()


@pytest.mark.django_db(transaction=True)
def test_names_are_shown_as_typed_not_as_markup(run: Cli, logged_in: Member) -> None:
    name = "ops [/red] [bold]team"
    added = run("credentials", "add", name, "--server", "quay.io", "--username", "u",
                "--password-stdin", input=SECRET)
    assert added.exit_code == 0, added.output
    assert f"Added registry credential {name} for quay.io" in added.stdout
    assert name in run("credentials", "list").stdout
    missing = run("credentials", "test", "[/x]")
    assert missing.exit_code == 1 and "No registry credential named '[/x]'" in missing.stderr
    deleted = run("credentials", "delete", name, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert f"Deleted {name}." in deleted.stdout


@pytest.mark.django_db(transaction=True)
def test_a_multi_line_key_from_stdin_in_a_real_process(
    logged_in: Member, tmp_path: Path
) -> None:
    """The real entry point: the key keeps its newlines and is never in the argument list."""
    key = json.dumps({"type": "service_account", "client_email": "ci@p.iam.gserviceaccount.com",
                      "private_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END-----\n"},
                     indent=2)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    process = subprocess.Popen(
        [sys.executable, "-m", "moorage", "credentials", "add", "gcr", "--server", "gcr.io",
         "--username", "_json_key", "--password-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        text=True,
    )
    try:
        # Right after fork the child's cmdline is still empty, until exec: wait for it.
        deadline = time.monotonic() + 10
        argv = b""
        while b"moorage" not in argv and time.monotonic() < deadline:
            argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            time.sleep(0.01)
        out, err = process.communicate(key + "\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert b"--password-stdin" in argv and SECRET.encode() not in argv
    assert SECRET not in out + err
    stored = Credential.objects.get(account=logged_in.account, name="gcr")
    assert vault.open_secret(stored) == key  # only the final newline was dropped
    assert SECRET not in database_text()


@pytest.mark.django_db(transaction=True)
def test_test_connection_against_a_real_registry(
    run: Cli, logged_in: Member, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    user = "cli-" + secrets.token_hex(3)
    registry_basic.add_user(user, SECRET)
    image = busybox_image(registry_basic, f"cli/test-{secrets.token_hex(3)}")
    for name, secret in (("good", SECRET), ("bad", "wrong-" + SECRET)):
        added = run("credentials", "add", name, "--server", registry_basic.host,
                    "--username", user, "--password-stdin", input=secret)
        assert added.exit_code == 0, added.output

    ok = run("credentials", "test", "good", "--image", image)
    assert ok.exit_code == 0, ok.output
    assert "ok (accepted)" in ok.stdout
    login_only = run("credentials", "test", "good")
    assert login_only.exit_code == 0 and "ok" in login_only.stdout
    rejected = run("credentials", "test", "bad")
    assert rejected.exit_code == 1
    assert "unauthorized (credential rejected)" in rejected.stdout
    assert registry_basic.host in rejected.stdout
    table = run("credentials", "list").stdout
    assert "ok" in _row(table, "good").split()
    assert "unauthorized" in _row(table, "bad").split()
    elsewhere = run("credentials", "test", "good", "--image", "ghcr.io/octo/app:1")
    assert elsewhere.exit_code == 1 and "host_mismatch" in elsewhere.stdout
    assert "was not sent there" in elsewhere.stdout
    for output in run.outputs:
        assert SECRET not in output
    assert SECRET not in database_text()


@pytest.mark.django_db(transaction=True)
def test_import_docker_config(run: Cli, logged_in: Member, tmp_path: Path) -> None:
    def auth(user: str, password: str) -> str:
        return base64.b64encode(f"{user}:{password}".encode()).decode()

    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({
        "auths": {
            "https://index.docker.io/v1/": {"auth": auth("hubuser", SECRET)},
            "127.0.0.1:5000": {"username": "local", "password": SECRET + "-local",
                               "email": "local@example.com"},
            "ghcr.io": {},
            "registry.example.com": {"identitytoken": "an-oauth-token"},
            "quay.io": {"auth": "***not base64***"},
        },
        "credsStore": "desktop",
    }))
    # One name exists already: the import leaves it alone.
    assert run("credentials", "add", "127.0.0.1:5000", "--server", "127.0.0.1:5000",
               "--username", "mine", "--password-stdin", input="keep-me").exit_code == 0

    first = run("credentials", "import-docker-config", str(docker_dir / "config.json"))
    assert first.exit_code == 0, first.output
    out = first.stdout
    assert "docker.io: created as hubuser." in out
    assert "127.0.0.1:5000: a credential with this name already exists" in out
    assert "ghcr.io: skipped" in out and "docker-credential-desktop" in out
    assert "registry.example.com: skipped, it holds only an identity token" in out
    assert "quay.io: skipped" in out and "not base64" in out
    assert "1 created, 4 skipped." in out

    items = run.json("credentials", "list")
    assert sorted(c["name"] for c in items) == ["127.0.0.1:5000", "docker.io"]
    hub = Credential.objects.get(account=logged_in.account, name="docker.io")
    assert (hub.server, hub.username) == ("docker.io", "hubuser")
    assert vault.open_secret(hub) == SECRET
    kept = Credential.objects.get(account=logged_in.account, name="127.0.0.1:5000")
    assert kept.username == "mine" and vault.open_secret(kept) == "keep-me"

    # The default path ($DOCKER_CONFIG/config.json), a second time: nothing new.
    again = run("credentials", "import-docker-config", env={"DOCKER_CONFIG": str(docker_dir)})
    assert again.exit_code == 0, again.output
    assert "0 created, 5 skipped." in again.stdout
    assert "docker.io: a credential with this name already exists" in again.stdout
    assert Credential.objects.filter(account=logged_in.account).count() == 2

    # Without the kept one, the loopback entry is imported under its host name.
    assert run("credentials", "delete", "127.0.0.1:5000", "--yes").exit_code == 0
    third = run("credentials", "import-docker-config", str(docker_dir / "config.json"))
    assert "127.0.0.1:5000: created as local." in third.stdout
    assert vault.open_secret(Credential.objects.get(name="127.0.0.1:5000")) == SECRET + "-local"

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    invalid = run("credentials", "import-docker-config", str(broken))
    assert invalid.exit_code == 1 and "docker_config_invalid" in invalid.stderr
    for output in run.outputs:
        assert SECRET not in output
    assert SECRET not in database_text()


# ----- export, on the server side, proven with skopeo


SKOPEO = "/usr/bin/skopeo"


def _skopeo_inspect(image: str, authfile: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``skopeo inspect`` with only ``authfile`` to authenticate (no other auth it could find)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run"),
           "XDG_CONFIG_HOME": str(home / "config"), "DOCKER_CONFIG": str(home / "docker"),
           "REGISTRY_AUTH_FILE": str(authfile)}
    return subprocess.run(
        [require_binary(SKOPEO), "inspect", "--tls-verify=false", "--authfile", str(authfile),
         f"docker://{image}"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def _export(run: Cli, *args: str) -> Result:
    return run("credentials", "export", *args)


@pytest.fixture
def staff_owner(db: None) -> Member:
    """A platform staff user owning an account: whom ``export`` acts as by default."""
    return factories.make_account("Harbour", owner=factories.make_user(staff=True))


@pytest.mark.django_db
def test_export_writes_files_skopeo_accepts(
    run: Cli, staff_owner: Member, owner: Member, tmp_path: Path,
    registry_basic: RegistryServer, registry_token: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    basic_user, token_user = "exp-" + secrets.token_hex(3), "exp-" + secrets.token_hex(3)
    registry_basic.add_user(basic_user, SECRET)
    registry_token.add_user(token_user, SECRET + "-t")
    basic_image = busybox_image(registry_basic, f"export/basic-{secrets.token_hex(3)}")
    token_repo = f"export/token-{secrets.token_hex(3)}"
    token_image = busybox_image(registry_token, token_repo)
    registry_token.grant(token_user, token_repo)
    make_credential(staff_owner, name="basic", server=registry_basic.host,
                    username=basic_user, secret=SECRET, email="ops@example.com")
    make_credential(staff_owner, name="token", server=registry_token.host,
                    username=token_user, secret=SECRET + "-t")
    home = tmp_path / "home"
    home.mkdir()
    empty = tmp_path / "empty.json"
    empty.write_text("{}")

    for image in (basic_image, token_image):
        denied = _skopeo_inspect(image, empty, home)
        assert denied.returncode != 0, f"{image} is readable without credentials"

    config_file = tmp_path / "out" / "config.json"
    config_file.parent.mkdir()
    exported = _export(run, "basic", "token", "--output", str(config_file))
    assert exported.exit_code == 0, exported.output
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert exported.stdout == ""
    assert "basic (" in exported.stderr and "mode 0600" in exported.stderr
    for image in (basic_image, token_image):
        accepted = _skopeo_inspect(image, config_file, home)
        assert accepted.returncode == 0, accepted.stderr
        assert json.loads(accepted.stdout)["Name"] == image.rsplit(":", 1)[0]
    assert json.loads(config_file.read_text())["auths"][registry_basic.host]["email"] == (
        "ops@example.com")

    exported_rows = AuditEvent.objects.filter(action="credential.exported",
                                              account=staff_owner.account)
    assert sorted(e.details["name"] for e in exported_rows) == ["basic", "token"]
    assert all(e.actor == staff_owner.user for e in exported_rows)
    assert all(SECRET not in json.dumps(e.details) for e in exported_rows)

    # An existing file is not overwritten, unless told; nothing is exported then.
    config_file.write_text("keep")
    refused = _export(run, "basic", "--output", str(config_file))
    assert refused.exit_code == 1 and "output_exists" in refused.stderr
    assert config_file.read_text() == "keep"
    assert exported_rows.count() == 2
    config_file.chmod(0o644)
    forced = _export(run, "basic", "--output", str(config_file), "--force")
    assert forced.exit_code == 0, forced.output
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert _skopeo_inspect(basic_image, config_file, home).returncode == 0
    assert _skopeo_inspect(token_image, config_file, home).returncode != 0  # only basic now

    secret_file = tmp_path / "secret.json"
    k8s = _export(run, "basic", "token", "--format", "k8s-secret", "--k8s-name", "pull-me",
                  "--namespace", "apps", "-o", str(secret_file))
    assert k8s.exit_code == 0, k8s.output
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    manifest = json.loads(secret_file.read_text())
    assert manifest["type"] == "kubernetes.io/dockerconfigjson"
    assert manifest["kind"] == "Secret"
    assert manifest["metadata"] == {"name": "pull-me", "namespace": "apps"}
    decoded = tmp_path / "decoded.json"
    decoded.write_bytes(base64.b64decode(manifest["data"][".dockerconfigjson"]))
    for image in (basic_image, token_image):
        assert _skopeo_inspect(image, decoded, home).returncode == 0

    # Standard output, on request only, as another user of another account.
    make_credential(owner, name="acme-registry", server=registry_basic.host,
                    username=basic_user, secret=SECRET)
    to_stdout = _export(run, "acme-registry", "-o", "-", "--user", owner.user.email,
                        "--account", "acme")
    assert to_stdout.exit_code == 0, to_stdout.output
    auths = json.loads(to_stdout.stdout)["auths"]
    assert auths[registry_basic.host]["password"] == SECRET
    assert AuditEvent.objects.filter(action="credential.exported", account=owner.account,
                                     actor=owner.user).count() == 1


@pytest.mark.django_db
def test_export_errors_write_nothing(run: Cli, staff_owner: Member, tmp_path: Path) -> None:
    make_credential(staff_owner, name="one", server="ghcr.io", secret=SECRET)
    make_credential(staff_owner, name="two", server="ghcr.io", secret=SECRET + "2")
    make_credential(staff_owner, name="git", type="git", server="github.com", secret=SECRET)
    target = tmp_path / "config.json"

    def fails(args: Sequence[str], code: str) -> str:
        result = _export(run, *args, "-o", str(target))
        assert result.exit_code == 1, result.output
        assert f"({code})" in result.stderr
        assert not target.exists()
        return result.stderr

    assert "'missing'" in fails(["one", "missing"], "credential_not_found")
    fails(["git"], "credential_not_found")  # a git credential is no registry login
    assert "ghcr.io" in fails(["one", "two"], "export_duplicate_registry")
    fails(["one", "--format", "k8s-secret", "--k8s-name", "Not_Valid"], "k8s_name_invalid")
    fails(["one", "--account", "nowhere"], "account_not_found")
    fails(["one", "--user", "nobody@example.com"], "user_not_found")
    assert not AuditEvent.objects.filter(action="credential.exported").exists()
    for output in run.outputs:
        assert SECRET not in output
