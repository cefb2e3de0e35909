"""Fixtures shared by the CLI tests: an in-process ``moorage`` and a logged-in owner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from moorage.cli import clientconfig
from moorage.cli.main import cli
from moorage.testing import factories
from moorage.testing.factories import Member


class Cli:
    """Runs ``moorage`` in-process; remembers every output to search it for secrets.

    ``secret`` (the test module's ``SECRET``) must never be passed as an argument: a test
    doing so would prove nothing about the command keeping it out of argument lists.
    """

    def __init__(self, runner: CliRunner, secret: str | None) -> None:
        self.runner = runner
        self.secret = secret
        self.outputs: list[str] = []

    def __call__(self, *args: str, input: str | None = None,
                 env: dict[str, str] | None = None) -> Result:
        if self.secret is not None:
            assert not any(self.secret in a for a in args), \
                "a test passed the secret as an argument"
        result = self.runner.invoke(cli, list(args), input=input, env=env)
        self.outputs.append(result.output)
        return result

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A click runner whose stored login lives in this test's temp dir."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return CliRunner()


@pytest.fixture
def run(runner: CliRunner, request: pytest.FixtureRequest) -> Cli:
    return Cli(runner, getattr(request.module, "SECRET", None))


@pytest.fixture
def logged_in(runner: CliRunner, live_server: Any) -> Member:
    """An account owner whose token the CLI holds, as after ``moorage login``."""
    owner = factories.make_account("Acme")
    clientconfig.save(clientconfig.ClientConfig(url=str(live_server.url), token=owner.token))
    return owner
