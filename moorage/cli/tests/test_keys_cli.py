"""``moorage keys``: generate, list, rotate and retire against a real key file and database.

Rotation then retirement never loses a value of any sealed field (I11, issue 9 item 1): the
``sealed_world`` holds credential secrets, app secret env values and region keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from django.test import Client, override_settings

from moorage import protocol
from moorage.apps import services as app_services
from moorage.apps.models import EnvVar
from moorage.cli.main import cli
from moorage.credentials import vault
from moorage.credentials.models import Credential
from moorage.keys import keyring
from moorage.keys.registry import APP_ENV_SECRET
from moorage.keys.services import keyring_usage
from moorage.sealing import Keyring, generate_key, key_id_of, open_sealed, parse_keys
from moorage.sealing.keyring import KeyFile
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import deploy_one
from moorage.testing.sealed import SealedWorld, key_ids_in_use, open_everything

SECRETS = [f"key-test-password-{n}" for n in range(3)]


def _keys(*args: str) -> Result:
    return CliRunner().invoke(cli, ["keys", *args])


def _row(table: str, key_id: str) -> list[str]:
    rows = [line.split() for line in table.splitlines() if key_id in line.split()]
    assert len(rows) == 1, table
    return rows[0]


def test_generate_prints_only_a_valid_key() -> None:
    result = _keys("generate")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    [key] = parse_keys(lines[0])
    assert len(key.material) == 32
    assert "MOORAGE_KEYS" in result.stderr
    named = _keys("generate", "--id", "spring-2026")
    assert parse_keys(named.stdout)[0].id == "spring-2026"
    assert parse_keys(named.stdout)[0].material != key.material
    bad = _keys("generate", "--id", "Not Valid")
    assert bad.exit_code == 1 and "key_id_invalid" in bad.stderr


@pytest.mark.django_db
def test_list_rotate_and_retire_with_a_key_file(owner: Member, key_file: Path) -> None:
    created = [make_credential(owner, name=f"c{n}", secret=s) for n, s in enumerate(SECRETS)]
    old = KeyFile(key_file).load().primary.id

    listed = _keys("list")
    assert listed.exit_code == 0, listed.output
    assert f"key file {key_file}" in listed.stdout
    assert _row(listed.stdout, old)[1:] == ["│", "primary", "│", "3"]

    primary = _keys("retire", old)
    assert primary.exit_code == 1 and "(key_is_primary)" in primary.stderr
    unknown = _keys("retire", "nope")
    assert unknown.exit_code == 1 and "(key_not_found)" in unknown.stderr

    # An operator added a key but the re-seal has not run (or was interrupted): the old key
    # is no longer primary, yet three secrets still need it.
    KeyFile(key_file).add_primary(generate_key("interim"))
    in_use = _keys("retire", old)
    assert in_use.exit_code == 1
    assert "3 secret(s) are still sealed with key" in in_use.stderr
    assert "(key_in_use)" in in_use.stderr
    assert old in KeyFile(key_file).path.read_text()

    # Rotating now resumes the interrupted rotation instead of adding yet another key.
    rotated = _keys("rotate")
    assert rotated.exit_code == 0, rotated.output
    new = KeyFile(key_file).load().primary.id
    assert new == "interim"
    assert "Resuming the rotation to primary key interim" in rotated.stdout
    assert f"Re-sealed 3 secret(s) with {new}." in rotated.stdout
    assert "3/3" in rotated.stderr  # the progress bar saw every batch
    assert {key_id_of(Credential.objects.get(id=c.id).secret) for c in created} == {new}

    table = _keys("list").stdout
    assert _row(table, new)[-1] == "3" and "primary" in _row(table, new)
    assert _row(table, old)[-1] == "0" and "primary" not in _row(table, old)

    retired = _keys("retire", old)
    assert retired.exit_code == 0, retired.output
    assert f"Retired key {old}" in retired.stdout
    assert [k.id for k in KeyFile(key_file).load().keys] == [new]
    for credential, secret in zip(created, SECRETS, strict=True):
        assert vault.open_secret(Credential.objects.get(id=credential.id)) == secret

    again = _keys("rotate")  # nothing left behind: a fresh rotation with a new key
    assert again.exit_code == 0 and "Re-sealed 3 secret(s)" in again.stdout
    assert "New primary key" in again.stdout
    assert KeyFile(key_file).load().primary.id != new
    for output in (table, listed.output, rotated.output, retired.output, again.output):
        assert not any(s in output for s in SECRETS)


@pytest.mark.django_db
def test_rotate_when_moorage_keys_is_in_charge(owner: Member) -> None:
    old = keyring.keyring().primary
    created = [make_credential(owner, name=f"c{n}", secret=s) for n, s in enumerate(SECRETS)]
    fresh = generate_key("fresh")
    try:
        with override_settings(MOORAGE_KEYS=[fresh, old]):
            rotated = _keys("rotate")
            assert rotated.exit_code == 0, rotated.output
            assert "MOORAGE_KEYS is in charge" in rotated.stderr
            assert "put it FIRST in MOORAGE_KEYS" in rotated.stderr
            assert "Primary key fresh (from MOORAGE_KEYS)." in rotated.stdout
            assert "Re-sealed 3 secret(s) with fresh." in rotated.stdout
            assert keyring_usage().sealed_with(old.id) == 0
            listed = _keys("list")
            assert "Keyring from MOORAGE_KEYS" in listed.stdout
            assert _row(listed.stdout, "fresh")[-1] == "3"
            env_retire = _keys("retire", old.id)
            assert env_retire.exit_code == 1
            assert "(key_in_environment)" in env_retire.stderr
            assert "remove it from MOORAGE_KEYS" in env_retire.stderr
            for credential, secret in zip(created, SECRETS, strict=True):
                assert vault.open_secret(Credential.objects.get(id=credential.id)) == secret
    finally:
        keyring.keyring(reload=True)


@pytest.mark.django_db
def test_list_warns_about_secrets_no_key_opens(owner: Member, key_file: Path) -> None:
    make_credential(owner, secret=SECRETS[0])
    # As if the key file had been replaced by one without the key these were sealed with.
    key_file.unlink()
    keyring.keyring(reload=True)
    listed = _keys("list")
    assert listed.exit_code == 0, listed.output
    assert "1 secret(s) are sealed with a key that is not in this keyring" in listed.stderr


@pytest.mark.django_db
def test_rotate_then_retire_never_loses_a_value(
    sealed_world: SealedWorld, key_file: Path, client: Client
) -> None:
    total = len(sealed_world.plain)
    old = KeyFile(key_file).load().primary.id
    assert key_ids_in_use() == {old}
    listed = _keys("list")
    assert _row(listed.stdout, old)[-1] == str(total)

    rotated = _keys("rotate")
    assert rotated.exit_code == 0, rotated.output
    new = KeyFile(key_file).load().primary.id
    assert new != old
    assert f"Re-sealed {total} secret(s) with {new}." in rotated.stdout
    assert key_ids_in_use() == {new}
    table = _keys("list").stdout
    assert _row(table, new)[-1] == str(total) and _row(table, old)[-1] == "0"

    retired = _keys("retire", old)
    assert retired.exit_code == 0, retired.output
    assert [k.id for k in KeyFile(key_file).load().keys] == [new]
    # As a fresh process would: the keyring read from the file again (a real fresh process
    # and a server restart: regions/tests/test_faults.py).
    keyring.keyring(reload=True)
    assert open_everything() == sealed_world.plain
    after = _keys("list")
    assert after.exit_code == 0 and "not in this keyring" not in after.output
    for output in (listed.output, rotated.output, table, retired.output, after.output):
        assert not any(secret in output for secret in sealed_world.secrets())

    # Every app still deploys: its agent receives its secret env values, re-sealed for it.
    deployment = deploy_one(sealed_world.owner, sealed_world.app.pk)
    [sent] = [d for d in sealed_world.region.snapshot(client)["deployments"]
              if d["id"] == deployment.pk]
    assert sent["status"] == "queued"
    opened = {}
    for item in sent["env"]:
        if "secret" in item:
            aad = protocol.region_env_aad(region="eu-1", account_id=sent["account_id"],
                                          app_id=sent["app_id"], deployment_id=deployment.pk,
                                          name=item["name"])
            opened[item["name"]] = open_sealed(Keyring([sealed_world.region.key]),
                                               item["secret"], aad).decode()
    assert opened == {"API_KEY": "Sealed-World-Api-Key", "DB_PASSWORD": "Sealed-World-Db-Pw"}


@pytest.mark.django_db
def test_a_value_that_does_not_open_is_named_and_its_key_kept(
    sealed_world: SealedWorld, key_file: Path
) -> None:
    old = KeyFile(key_file).load().primary.id
    # A ciphertext copied to another variable does not open there (it is bound to its name).
    db, api = (EnvVar.objects.get(app=sealed_world.app, name=n)
               for n in ("DB_PASSWORD", "API_KEY"))
    EnvVar.objects.filter(pk=api.pk).update(sealed=db.sealed)
    rotated = _keys("rotate")
    assert rotated.exit_code == 1
    assert "1 secret(s) could not be opened" in rotated.stderr
    assert "the secret value of API_KEY in app 'web'" in rotated.stderr
    assert "(secret_unavailable)" in rotated.stderr
    new = KeyFile(key_file).load().primary.id
    assert f"Re-sealed {len(sealed_world.plain) - 1} secret(s) with {new}." in rotated.stdout
    refused = _keys("retire", old)
    assert refused.exit_code == 1 and "(key_in_use)" in refused.stderr
    assert "1 secret(s) are still sealed with key" in refused.stderr
    # Setting the value again repairs it; then the old key can go.
    app_services.app_update(
        actor=sealed_world.owner.user, membership=sealed_world.owner.membership,
        app_id=sealed_world.app.pk,
        env=[app_services.EnvInput("DB_PASSWORD", None, secret=True),
             app_services.EnvInput("API_KEY", "Sealed-World-Api-Key-2", secret=True),
             app_services.EnvInput("LOG_LEVEL", "info")])
    assert _keys("retire", old).exit_code == 0
    assert APP_ENV_SECRET.open_text(EnvVar.objects.select_related("app").get(pk=api.pk)) \
        == "Sealed-World-Api-Key-2"


@pytest.mark.django_db
def test_list_counts_what_no_key_opens_over_every_sealed_field(
    sealed_world: SealedWorld, key_file: Path
) -> None:
    # As if the key file had been replaced by one without the key all this was sealed with.
    key_file.unlink()
    listed = _keys("list")
    assert listed.exit_code == 0, listed.output
    total = len(sealed_world.plain)
    assert f"{total} secret(s) are sealed with a key that is not in this keyring" \
        in listed.stderr
    assert "apps.EnvVar.sealed: 2" in listed.stderr
    assert "credentials.Credential.secret: 3" in listed.stderr
    assert "credentials.LoginToken.token: 1" in listed.stderr
    assert _row(listed.stdout, KeyFile(key_file).load().primary.id)[-1] == "0"
    usage = keyring_usage()
    assert usage.unknown == total and all(k.sealed == 0 for k in usage.keys)
