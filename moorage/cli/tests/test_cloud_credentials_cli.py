"""``moorage credentials`` with exchanged login sources: add, list, update, refresh, export.

The secret access key and the key JSON go in through standard input only; the API and every
output hold the token's state, never the key or the token.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from django.utils import timezone

from moorage.cli.tests.conftest import Cli
from moorage.credentials.models import Credential, LoginToken
from moorage.testing import factories
from moorage.testing.cloud import MOTO_ECR_PASSWORD, GoogleTokenEndpoint, MotoEcr
from moorage.testing.factories import Member

SECRET = "Cli/Canary/" + secrets.token_hex(10)


@pytest.mark.django_db(transaction=True)
def test_add_an_ecr_credential_list_update_and_ask_a_refresh(
    run: Cli, logged_in: Member, aws_ecr: MotoEcr,
) -> None:
    added = run("credentials", "add", "ecr", "--login-source", "aws_ecr",
                "--aws-access-key-id", "AKIAIOSFODNN7EXAMPLE", "--aws-region", "eu-west-1",
                "--password-stdin", input=SECRET + "\n")
    assert added.exit_code == 0, added.output
    assert "Added registry credential ecr for 123456789012.dkr.ecr.eu-west-1.amazonaws.com " \
        "as AWS (revision 1)." in added.output
    assert "ECR token, refreshed" in added.output

    listed = run("credentials", "list")
    assert "ECR token, refreshed" in listed.output

    bad = run("credentials", "update", "ecr", "--aws-region", "atlantis-1")
    assert bad.exit_code == 1 and "(aws_region_unknown)" in bad.output
    moved = run("credentials", "update", "ecr", "--aws-region", "us-east-1")
    assert moved.exit_code == 0, moved.output
    assert "revision 1 → 2" in moved.output
    assert Credential.objects.get(name="ecr").aws_region == "us-east-1"

    asked = run("credentials", "refresh", "ecr", "--wait", "0")
    assert asked.exit_code == 0, asked.output
    token = LoginToken.objects.get(credential__name="ecr")
    assert token.refresh_due_at <= timezone.now()  # due now: the worker takes it next
    static = run("credentials", "add", "hub", "--server", "docker.io", "--username", "octo",
                 "--password-stdin", input="a password\n")
    assert static.exit_code == 0
    refused = run("credentials", "refresh", "hub", "--wait", "0")
    assert refused.exit_code == 1 and "(credential_not_exchanged)" in refused.output
    for output in run.outputs:
        assert SECRET not in output and MOTO_ECR_PASSWORD not in output


@pytest.mark.django_db(transaction=True)
def test_add_a_google_credential_from_its_key_file(
    run: Cli, logged_in: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = google_tokens.new_key()
    added = run("credentials", "add", "gar", "--login-source", "gcp_service_account",
                "--server", "europe-docker.pkg.dev", "--password-stdin", input=key + "\n")
    assert added.exit_code == 0, added.output
    assert "as oauth2accesstoken" in added.output
    assert "Google access token, refreshed" in added.output
    missing = run("credentials", "add", "other", "--server", "docker.io",
                  "--password-stdin", input="x\n")
    assert missing.exit_code == 1 and "(username_required)" in missing.output
    private = json.loads(key)["private_key"].splitlines()[3]
    for output in run.outputs:
        assert private not in output


@pytest.mark.django_db
def test_export_writes_the_token_and_prints_its_expiry(
    run: Cli, tmp_path: Path, google_tokens: GoogleTokenEndpoint,
) -> None:
    from moorage.credentials import services

    staff = factories.make_account("Harbour", owner=factories.make_user(staff=True))
    key = google_tokens.new_key()
    services.credential_create(
        actor=staff.user, membership=staff.membership, type="container_registry", name="gar",
        server="europe-docker.pkg.dev", login_source="gcp_service_account", secret=key)
    [token] = google_tokens.tokens_for(json.loads(key)["client_email"])
    target = tmp_path / "config.json"
    result = run("credentials", "export", "gar", "-o", str(target))
    assert result.exit_code == 0, result.output
    config = json.loads(target.read_text())
    entry = config["auths"]["europe-docker.pkg.dev"]
    assert entry["username"] == "oauth2accesstoken" and entry["password"] == token
    assert "gar: the Google access token in the file expires at " in result.stderr
    assert json.loads(key)["private_key"] not in target.read_text()
