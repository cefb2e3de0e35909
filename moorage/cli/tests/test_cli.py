"""The ``moorage`` command in-process: tokens, init, login and whoami against a live server."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from moorage.accounts.models import ApiToken, User
from moorage.accounts.services import api_token_authenticate
from moorage.cli.main import cli
from moorage.testing import factories
from moorage.testing.factories import PASSWORD, Member


@pytest.mark.django_db
def test_tokens_create_prints_only_a_working_token(runner: CliRunner, owner: Member) -> None:
    result = runner.invoke(cli, ["tokens", "create", "--name", "automation",
                                 "--user", owner.user.email, "--account", "acme"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("mrg_") and "\n" not in token
    assert api_token_authenticate(token=token).user == owner.user
    assert ApiToken.objects.filter(name="automation", user=owner.user).exists()


@pytest.mark.django_db
def test_tokens_create_errors_are_clear(runner: CliRunner, owner: Member) -> None:
    result = runner.invoke(cli, ["tokens", "create", "--name", "x", "--user", "no@example.com"])
    assert result.exit_code == 1
    assert "No user no@example.com." in result.stderr
    result = runner.invoke(cli, ["tokens", "create", "--name", "x", "--user", owner.user.email,
                                 "--account", "globex"])
    assert result.exit_code == 1
    assert "No account 'globex' among yours." in result.stderr


@pytest.mark.django_db
def test_init_creates_the_owner_once(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["init", "--email", "ops@example.com", "--account", "Platform",
                                 "--password-stdin"], input="a fine long password 1\n")
    assert result.exit_code == 0, result.output
    user = User.objects.get(email="ops@example.com")
    assert user.is_platform_staff and not user.must_change_password
    assert "a fine long password 1" not in result.output
    again = runner.invoke(cli, ["init", "--email", "ops@example.com"])
    assert again.exit_code == 0
    assert "Nothing changed." in again.output
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_init_with_a_weak_password_fails_and_writes_nothing(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["init", "--password-stdin"], input="short\n")
    assert result.exit_code == 1
    assert "password_too_weak" in result.stderr
    assert not User.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_login_and_whoami_against_a_live_server(
    runner: CliRunner, live_server: object, tmp_path: Path
) -> None:
    owner = factories.make_account("Acme")
    url = str(live_server.url)  # type: ignore[attr-defined]
    result = runner.invoke(cli, ["login", "--url", url],
                           input=f"{owner.user.email}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Logged in as" in result.output and PASSWORD not in result.output
    path = tmp_path / "config" / "moorage" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = tomllib.loads(path.read_text())
    assert stored["url"] == url and stored["token"].startswith("mrg_")
    assert PASSWORD not in path.read_text()
    whoami = runner.invoke(cli, ["whoami"])
    assert whoami.exit_code == 0, whoami.output
    assert owner.user.email in whoami.output and "Acme (acme)" in whoami.output

    bad = runner.invoke(cli, ["login", "--url", url], input=f"{owner.user.email}\nwrong-pass-1\n")
    assert bad.exit_code == 1
    assert "The e-mail address or password is not right." in bad.stderr

    with_token = runner.invoke(cli, ["login", "--url", url, "--token-stdin"],
                               input=owner.token + "\n")
    assert with_token.exit_code == 0, with_token.output
    revoked = runner.invoke(cli, ["login", "--url", url, "--token-stdin"], input="mrg_x\n")
    assert revoked.exit_code == 1 and "token_invalid" in revoked.stderr


def test_whoami_without_login_says_what_to_do(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["whoami"])
    assert result.exit_code == 1
    assert "Not logged in. Run 'moorage login --url URL' first." in result.stderr
