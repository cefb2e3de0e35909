"""Sealing credential secrets at rest (I2): no plaintext in the database, ciphertexts bound to
their row. Rotation of the keyring is tested in ``moorage/keys/tests``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.db import connection

from moorage.credentials import vault
from moorage.credentials.models import Credential
from moorage.keys.errors import SecretUnavailable
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
    with pytest.raises(SecretUnavailable) as exc:
        vault.open_secret(Credential.objects.get(id=mine.id))
    assert exc.value.code == "secret_unavailable"
    assert exc.value.detail == {"reason": "sealed_tampered", "credential_id": mine.id}
    assert exc.value.message.startswith(f"The secret of credential {mine.name!r} (id {mine.id})"
                                        " cannot be opened: The sealed value does not belong "
                                        "here or was altered")
    assert SECRET not in exc.value.message
    # Same account, another credential: still refused (the id is bound too).
    sibling = make_credential(owner, secret="sibling-password")
    Credential.objects.filter(id=sibling.id).update(secret=victim.secret)
    with pytest.raises(SecretUnavailable):
        vault.open_secret(Credential.objects.get(id=sibling.id))


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
