"""``moorage regions`` and the local region made by ``moorage init``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from moorage.cli.main import cli
from moorage.regions.models import AccountRegion, Region, RegionToken
from moorage.regions.secrets import token_digest
from moorage.sealing import parse_keys
from moorage.testing.registry import RegistryServer

pytestmark = pytest.mark.django_db


def test_add_list_rotate_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["regions", "add", "eu-1", "--runtime", "swarm"])
    assert added.exit_code == 0, added.output
    lines = dict(line.split(": ", 1) for line in added.stdout.strip().splitlines())
    token, key = lines["token"], lines["key"]
    assert RegionToken.objects.get(digest=token_digest(token)).region.slug == "eu-1"
    assert parse_keys(key)[0].id == Region.objects.get(slug="eu-1").key_id
    assert token not in str(list(Region.objects.values()))

    listed = runner.invoke(cli, ["regions", "list"])
    assert "eu-1" in listed.stdout and "Never connected" in listed.stdout

    rotated = runner.invoke(cli, ["regions", "rotate-token", "eu-1", "--agent-dir",
                                  str(tmp_path)])
    assert rotated.exit_code == 0, rotated.output
    new_token = (tmp_path / "token").read_text().strip()
    assert new_token != token and stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert RegionToken.objects.get(digest=token_digest(token)).revoked_at is not None

    duplicate = runner.invoke(cli, ["regions", "add", "eu-1"])
    assert duplicate.exit_code == 1 and "region_exists" in duplicate.stderr
    removed = runner.invoke(cli, ["regions", "remove", "eu-1", "--yes"])
    assert removed.exit_code == 0 and not Region.objects.filter(slug="eu-1").exists()
    missing = runner.invoke(cli, ["regions", "remove", "eu-1", "--yes"])
    assert missing.exit_code == 1 and "region_not_found" in missing.stderr


def test_rotate_key_prints_or_writes_the_new_key_and_list_shows_it_pending(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["regions", "add", "eu-1", "--agent-dir", str(tmp_path)])
    old = parse_keys((tmp_path / "key").read_text())[0]

    printed = runner.invoke(cli, ["regions", "rotate-key", "eu-1"])
    assert printed.exit_code == 0, printed.output
    [line] = printed.stdout.splitlines()  # only the key goes to standard output
    first = parse_keys(line.removeprefix("key: "))[0]
    assert f"New key {first.id} for region eu-1" in printed.stderr
    assert f"keeps the current key {old.id}" in printed.stderr
    assert "Restart the agent with the new key file" in printed.stderr

    written = runner.invoke(cli, ["regions", "rotate-key", "eu-1", "--agent-dir", str(tmp_path)])
    assert written.exit_code == 0, written.output
    new = parse_keys((tmp_path / "key").read_text())[0]
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert f"It replaces {first.id}, which was waiting" in written.stderr
    assert new.encoded() not in written.output
    region = Region.objects.get(slug="eu-1")
    assert (region.key_id, region.next_key_id) == (old.id, new.id)
    listed = runner.invoke(cli, ["regions", "list"])
    assert f"Key rotation pending in eu-1: {old.id} → {new.id}" in listed.stdout

    missing = runner.invoke(cli, ["regions", "rotate-key", "nowhere"])
    assert missing.exit_code == 1 and "(region_not_found)" in missing.stderr


def test_init_creates_the_local_region_for_every_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.test import override_settings

    with override_settings(DATA_DIR=tmp_path):
        runner = CliRunner()
        result = runner.invoke(cli, ["init", "--password-stdin"],
                               input="a long enough password 1\n")
        assert result.exit_code == 0, result.output
        local = Region.objects.get(slug="local")
        assert local.enabled_for_new_accounts
        assert AccountRegion.objects.filter(region=local).count() == 1
        for name in ("token", "key"):
            assert stat.S_IMODE((tmp_path / "agent" / name).stat().st_mode) == 0o600
        token = (tmp_path / "agent" / "token").read_text().strip()
        assert RegionToken.objects.get(digest=token_digest(token)).region == local
        again = runner.invoke(cli, ["init"])
        assert "Nothing changed." in again.stdout
        assert Region.objects.filter(slug="local").count() == 1


def test_a_swarm_region_with_its_registry_the_password_from_stdin_only(
    registry_basic: RegistryServer,
) -> None:
    runner = CliRunner()
    user, password = "region-cli", "Region-Cli-Pw-" + "q7" * 6
    registry_basic.add_user(user, password)
    wrong = runner.invoke(cli, ["regions", "add", "sw-1", "--runtime", "swarm", "--registry",
                                registry_basic.host, "--registry-username", user,
                                "--registry-password-stdin"], input="not-the-password\n")
    assert wrong.exit_code == 1 and "region_registry_rejected" in wrong.stderr
    assert "not-the-password" not in wrong.output
    assert not Region.objects.filter(slug="sw-1").exists()
    partial = runner.invoke(cli, ["regions", "add", "sw-1", "--runtime", "swarm",
                                  "--registry", registry_basic.host])
    assert partial.exit_code == 1 and "region_registry_incomplete" in partial.stderr
    unknown = runner.invoke(cli, ["regions", "add", "k8s-1", "--runtime", "kubernetes"])
    assert unknown.exit_code == 2 and "kubernetes" in unknown.output

    added = runner.invoke(cli, ["regions", "add", "sw-1", "--runtime", "swarm", "--registry",
                                registry_basic.host, "--registry-username", user,
                                "--registry-password-stdin"], input=password + "\n")
    assert added.exit_code == 0, added.output
    assert f"(swarm, registry {registry_basic.host}) added" in added.stderr
    region = Region.objects.get(slug="sw-1")
    assert (region.registry, region.registry_username, region.registry_revision) == (
        registry_basic.host, user, 1)
    assert password not in str(list(Region.objects.values())) and password not in added.output
    listed = runner.invoke(cli, ["regions", "list"], env={"COLUMNS": "200"})
    assert registry_basic.host in listed.stdout

    removed = runner.invoke(cli, ["regions", "update", "sw-1", "--no-registry"])
    assert removed.exit_code == 0 and "no registry" in removed.stdout
    region.refresh_from_db()
    assert (region.registry, region.registry_password_sealed, region.registry_revision) == (
        "", "", 2)
    nothing = runner.invoke(cli, ["regions", "update", "sw-1"])
    assert nothing.exit_code == 1 and "nothing_to_change" in nothing.stderr
