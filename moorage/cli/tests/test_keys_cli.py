"""``moorage keys``: generate, list, rotate and retire against a real key file and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from django.test import override_settings

from moorage.cli.main import cli
from moorage.credentials import vault
from moorage.keys import keyring
from moorage.keys.services import keyring_usage
from moorage.credentials.models import Credential
from moorage.sealing import generate_key, key_id_of, parse_keys
from moorage.sealing.keyring import KeyFile
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member

SECRETS = [f"key-test-password-{n}" for n in range(3)]


@pytest.fixture
def key_file(tmp_path: Path) -> Iterator[Path]:
    """The embedded default: a key file in the data dir is in charge of the keyring."""
    path = tmp_path / "keys"
    with override_settings(MOORAGE_KEYS=None, MOORAGE_KEY_FILE=path):
        yield path
    keyring.keyring(reload=True)


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
