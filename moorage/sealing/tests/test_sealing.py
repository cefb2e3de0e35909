"""Sealing: round trips, binding to associated data, key ids, keyring parsing, key files."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.sealing import (
    Keyring,
    KeyringError,
    SealedDataError,
    generate_key,
    key_id_of,
    open_sealed,
    parse_keys,
    seal,
)
from moorage.sealing.keyring import KeyFile

AAD = b"account=1|credential=2|field=secret"


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=200))
def test_round_trip_for_any_value(plaintext: bytes, aad: bytes) -> None:
    key = generate_key("k1")
    assert open_sealed(Keyring([key]), seal(key, plaintext, aad), aad) == plaintext


def test_sealed_text_holds_no_plaintext_and_differs_each_time() -> None:
    key = generate_key("k1")
    first, second = seal(key, b"hunter2-hunter2", AAD), seal(key, b"hunter2-hunter2", AAD)
    assert first != second  # random nonce
    assert "hunter2" not in first
    assert first.startswith("v1.k1.") and key_id_of(first) == "k1"


def test_other_associated_data_does_not_open() -> None:
    key = generate_key("k1")
    sealed = seal(key, b"secret", AAD)
    with pytest.raises(SealedDataError) as exc:
        open_sealed(Keyring([key]), sealed, b"account=1|credential=3|field=secret")
    assert exc.value.code == "sealed_tampered"
    assert "secret" not in str(exc.value).replace("sealed", "")


def test_altered_ciphertext_does_not_open() -> None:
    key = generate_key("k1")
    sealed = seal(key, b"secret", AAD)
    prefix, encoded = sealed.rsplit(".", 1)
    blob = bytearray(base64.urlsafe_b64decode(encoded))
    blob[-1] ^= 1  # one bit of the authentication tag
    flipped = f"{prefix}.{base64.urlsafe_b64encode(bytes(blob)).decode()}"
    with pytest.raises(SealedDataError) as exc:
        open_sealed(Keyring([key]), flipped, AAD)
    assert exc.value.code == "sealed_tampered"


@pytest.mark.parametrize("value", ["", "plain", "v1.k1", "v2.k1.AAAA", "v1.k1.!!!", "v1.k1.AAAA"])
def test_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(SealedDataError) as exc:
        open_sealed(Keyring([generate_key("k1")]), value, AAD)
    assert exc.value.code == "sealed_malformed"


def test_unknown_key_is_named() -> None:
    old, new = generate_key("old"), generate_key("new")
    with pytest.raises(SealedDataError, match="'old'") as exc:
        open_sealed(Keyring([new]), seal(old, b"x", AAD), AAD)
    assert exc.value.code == "sealed_key_unknown"
    assert open_sealed(Keyring([new, old]), seal(old, b"x", AAD), AAD) == b"x"


def test_parse_keys_orders_primary_first_and_rejects_bad_entries() -> None:
    a, b = generate_key("a"), generate_key("b")
    ring = Keyring(parse_keys(f"{a.encoded()}, {b.encoded()}\n# comment\n"))
    assert ring.primary.id == "a" and [k.id for k in ring.keys] == ["a", "b"]
    for bad, message in [
        ("nocolon", "id:base64key"),
        ("a:%%%", "not valid base64"),
        ("a:" + "QUJD", "32 bytes"),
        ("UPPER:" + a.encoded().split(":")[1], "not valid"),
        (f"{a.encoded()},{a.encoded()}", "repeated: a"),
    ]:
        with pytest.raises(KeyringError, match=message) as exc:
            parse_keys(bad)
        assert a.encoded().split(":")[1] not in str(exc.value)


def test_key_repr_hides_material() -> None:
    key = generate_key("k1")
    assert key.encoded().split(":")[1] not in repr(key)
    assert "material" not in repr(key)


def test_key_file_is_created_once_private_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys"
    ring = KeyFile(path).load()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyFile(path).load().primary == ring.primary
    new = generate_key("second")
    rotated = KeyFile(path).add_primary(new)
    assert [k.id for k in rotated.keys] == ["second", ring.primary.id]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyringError, match="primary"):
        KeyFile(path).remove("second")
    assert [k.id for k in KeyFile(path).remove(ring.primary.id).keys] == ["second"]


def test_the_package_does_not_import_django() -> None:
    code = "import sys, moorage.sealing; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
