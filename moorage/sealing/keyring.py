"""Keys and keyrings: which keys can open sealed values, and which one seals new ones."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from moorage.private_files import write_private

KEY_BYTES = 32  # AES-256
KEY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
_KEY_ID = re.compile(KEY_ID_PATTERN)


class KeyringError(ValueError):
    """A key or keyring is malformed or misused; the message says which and how to fix it."""


@dataclass(frozen=True)
class Key:
    """One AES-256 key with the id that sealed values carry."""

    id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.id):
            raise KeyringError(
                f"Key id {self.id!r} is not valid: use 1-32 lower-case letters, digits or "
                "hyphens, starting with a letter or digit."
            )
        if len(self.material) != KEY_BYTES:
            raise KeyringError(f"Key {self.id!r} must be {KEY_BYTES} bytes (AES-256).")

    def encoded(self) -> str:
        """``id:base64`` as in ``MOORAGE_KEYS`` and the key file."""
        return f"{self.id}:{base64.b64encode(self.material).decode()}"


def generate_key(key_id: str | None = None) -> Key:
    """A fresh random key; without an id, one is made from the date and randomness."""
    if key_id is None:
        key_id = "k" + secrets.token_hex(4)
    return Key(key_id, secrets.token_bytes(KEY_BYTES))


def parse_keys(text: str) -> list[Key]:
    """Parse ``id:base64key`` entries separated by commas or newlines, primary first.

    Blank entries and ``#`` comments are ignored. Raises :class:`KeyringError` for a malformed
    entry (without echoing key material) or a repeated id.
    """
    keys: list[Key] = []
    uncommented = ",".join(line.split("#", 1)[0] for line in text.splitlines())
    for number, raw in enumerate(uncommented.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise KeyringError(f"Entry {number} is not of the form id:base64key.")
        try:
            material = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError(f"Key {key_id.strip()!r} is not valid base64.") from None
        keys.append(Key(key_id.strip(), material))
    ids = [k.id for k in keys]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise KeyringError(f"Key ids must be unique; repeated: {', '.join(duplicates)}.")
    return keys


class Keyring:
    """An ordered set of keys: the first seals, all of them open."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self._keys = list(keys)
        if not self._keys:
            raise KeyringError("A keyring needs at least one key.")
        self._by_id = {k.id: k for k in self._keys}
        if len(self._by_id) != len(self._keys):
            raise KeyringError("Key ids in a keyring must be unique.")

    @property
    def primary(self) -> Key:
        return self._keys[0]

    @property
    def keys(self) -> list[Key]:
        return list(self._keys)

    def get(self, key_id: str) -> Key | None:
        return self._by_id.get(key_id)

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary.id!r}, ids={[k.id for k in self._keys]!r})"


class KeyFile:
    """The embedded default's keyring: a file of ``id:base64`` lines, mode 0600, primary first.

    Created with one key on first use. Rotation prepends a key; retiring removes one. Writes
    replace the file atomically so a reader never sees half a keyring.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, *, create: bool = True) -> Keyring:
        if not self.path.exists():
            if not create:
                raise KeyringError(f"No key file at {self.path}.")
            self._create()
        return Keyring(parse_keys(self.path.read_text()))

    def add_primary(self, key: Key) -> Keyring:
        keyring = self.load()
        if keyring.get(key.id) is not None:
            raise KeyringError(f"A key {key.id!r} is already in the keyring.")
        self._write([key, *keyring.keys])
        return self.load()

    def remove(self, key_id: str) -> Keyring:
        keyring = self.load()
        if keyring.get(key_id) is None:
            raise KeyringError(f"No key {key_id!r} in the keyring.")
        if keyring.primary.id == key_id:
            raise KeyringError(f"Key {key_id!r} is the primary key; rotate before retiring it.")
        self._write([k for k in keyring.keys if k.id != key_id])
        return self.load()

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = generate_key()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process created it first; use theirs
        with os.fdopen(fd, "w") as handle:
            handle.write(_file_text([key]))

    def _write(self, keys: list[Key]) -> None:
        write_private(self.path, _file_text(keys))


def _file_text(keys: list[Key]) -> str:
    header = "# Moorage keyring: id:base64-key, primary first. Keep secret, keep backed up.\n"
    return header + "".join(k.encoded() + "\n" for k in keys)
