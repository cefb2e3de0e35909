"""Sealing at rest (I2): no plaintext in the database, ciphertexts bound to their row, and
re-sealing under a new primary key while old keys stay readable until retired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from moorage.credentials import services, vault
from moorage.credentials.models import Credential
from moorage.sealing import generate_key, key_id_of
from moorage.sealing.keyring import KeyFile
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.programs import require_binary
from moorage.testing.secrets_search import database_text

SECRET = "Plaintext-Must-Not-Appear-7731"


@pytest.mark.django_db
def test_database_holds_no_plaintext(owner: Member) -> None:
    credential = make_credential(owner, secret=SECRET)
    assert SECRET not in database_text()
    assert credential.secret.startswith("v1.")
    assert vault.open_secret(Credential.objects.get(id=credential.id)) == SECRET


@pytest.mark.django_db
def test_a_ciphertext_copied_to_another_row_does_not_open(
    owner: Member, other_owner: Member
) -> None:
    victim = make_credential(owner, secret=SECRET)
    mine = make_credential(other_owner, secret="my-own-password")
    Credential.objects.filter(id=mine.id).update(secret=victim.secret)
    with pytest.raises(vault.SecretUnavailable) as exc:
        vault.open_secret(Credential.objects.get(id=mine.id))
    assert exc.value.code == "sealed_tampered"
    assert "does not belong here" in exc.value.message
    assert SECRET not in exc.value.message
    # Same account, another credential: still refused (the id is bound too).
    sibling = make_credential(owner, secret="sibling-password")
    Credential.objects.filter(id=sibling.id).update(secret=victim.secret)
    with pytest.raises(vault.SecretUnavailable):
        vault.open_secret(Credential.objects.get(id=sibling.id))


@pytest.mark.django_db
def test_rotation_reseals_everything_under_the_new_key(owner: Member, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    with override_settings(MOORAGE_KEYS=None, MOORAGE_KEY_FILE=key_file):
        old = KeyFile(key_file).load().primary
        created = [make_credential(owner, name=f"c{n}", secret=f"pw-{n}") for n in range(5)]
        assert {key_id_of(c.secret) for c in created} == {old.id}
        new = generate_key("rotated")
        KeyFile(key_file).add_primary(new)
        progress: list[tuple[int, int]] = []
        count = services.credentials_reseal(
            batch_size=2, progress=lambda done, total: progress.append((done, total))
        )
        assert count == 5
        assert progress == [(2, 5), (4, 5), (5, 5)]
        assert services.credentials_sealed_with(old.id) == 0
        KeyFile(key_file).remove(old.id)
        vault.keyring(reload=True)
        for n, credential in enumerate(created):
            fresh = Credential.objects.get(id=credential.id)
            assert key_id_of(fresh.secret) == "rotated"
            assert vault.open_secret(fresh) == f"pw-{n}"
        assert services.credentials_reseal() == 0


@pytest.mark.django_db
def test_a_process_with_an_old_keyring_reloads_when_it_meets_a_new_key(
    owner: Member, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    with override_settings(MOORAGE_KEYS=None, MOORAGE_KEY_FILE=key_file):
        credential = make_credential(owner, secret=SECRET)
        stale = vault.keyring()
        KeyFile(key_file).add_primary(generate_key("fresh"))  # another process rotated
        Credential.objects.filter(id=credential.id).update(
            secret=_seal_with_file(key_file, credential)
        )
        assert vault.keyring() is stale  # not reloaded yet...
        assert vault.open_secret(Credential.objects.get(id=credential.id)) == SECRET
        assert vault.keyring().primary.id == "fresh"  # ...reloaded on the unknown key id


def _seal_with_file(key_file: Path, credential: Credential) -> str:
    from moorage.sealing import seal

    ring = KeyFile(key_file).load()
    aad = vault.associated_data(account_id=credential.account_id, credential_id=credential.pk,
                                field=vault.SECRET_FIELD)
    return seal(ring.primary, SECRET.encode(), aad)


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_plaintext(owner: Member, tmp_path: Path) -> None:
    make_credential(owner, secret=SECRET)
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        dump = subprocess.run(
            [require_binary("pg_dump"), "--data-only",
             "-h", str(settings["HOST"] or "127.0.0.1"), "-p", str(settings["PORT"] or 5432),
             "-U", str(settings["USER"] or "postgres"), str(settings["NAME"])],
            capture_output=True, text=True, check=True,
            env={"PGPASSWORD": str(settings["PASSWORD"] or ""), "PATH": "/usr/bin:/bin"},
        ).stdout
        assert "credentials_credential" in dump
    else:
        # The test database is in memory; back it up to a file as the embedded default stores it.
        path = tmp_path / "copy.sqlite3"
        import sqlite3

        target = sqlite3.connect(path)
        connection.ensure_connection()
        connection.connection.backup(target)
        target.close()
        dump = path.read_bytes().decode("latin-1")
        assert "credentials_credential" in dump
    assert "v1." in dump
    assert SECRET not in dump
