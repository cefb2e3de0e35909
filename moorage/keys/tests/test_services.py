"""Re-sealing every sealed value under a new primary key, and a running process seeing a
rotated key file at once. The whole rotation through ``moorage keys`` (rotate, retire, a fresh
keyring, a deploy) is in ``moorage/cli/tests/test_keys_cli.py``; with real processes and a
restart in ``moorage/regions/tests/test_faults.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from moorage.keys import keyring
from moorage.keys.services import sealed_values_reseal
from moorage.sealing import generate_key, key_id_of
from moorage.sealing.keyring import KeyFile
from moorage.testing.sealed import SealedWorld, key_ids_in_use, open_everything

pytestmark = pytest.mark.django_db


def test_reseal_works_in_batches_and_reports_progress(
    sealed_world: SealedWorld, key_file: Path
) -> None:
    total = len(sealed_world.plain)
    KeyFile(key_file).add_primary(generate_key("rotated"))
    progress: list[tuple[int, int]] = []
    result = sealed_values_reseal(batch_size=2,
                                  progress=lambda done, of: progress.append((done, of)))
    assert result.resealed == total == 10 and result.unopenable == []
    # Field by field, two rows at a time: 3 credentials, 1 login token, 2 env values, 2 region
    # keys (eu-1, sw-1), 1 next key, 1 region registry password.
    assert progress == [(2, 10), (3, 10), (4, 10), (6, 10), (8, 10), (9, 10), (10, 10)]
    assert key_ids_in_use() == {"rotated"}
    assert sealed_values_reseal().resealed == 0  # nothing left to do
    assert open_everything() == sealed_world.plain


def test_a_running_process_seals_with_a_new_primary_at_once(key_file: Path) -> None:
    stale = keyring.keyring()
    KeyFile(key_file).add_primary(generate_key("fresh"))  # another process rotated
    assert keyring.keyring() is not stale
    assert keyring.keyring().primary.id == "fresh"
    assert key_id_of(keyring.seal_bytes(b"value", b"aad")) == "fresh"


