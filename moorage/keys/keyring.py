"""The control plane's keyring: ``MOORAGE_KEYS`` when set, else the key file in the data dir.

A process keeps the keyring in memory and looks at the key file's identity (inode, size,
modification time) on every use, so a rotation by another process (``moorage keys rotate``
while the server serves) is seen at once: new values are sealed with the new primary key
from then on, never with a key that is about to be retired. An unknown key id met while
opening still forces one reload, for the case where the file changed within the clock's
resolution.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from moorage.sealing import Keyring, SealedDataError, open_sealed, seal
from moorage.sealing.keyring import KeyFile

_lock = threading.Lock()
_cached: tuple[object, Keyring] | None = None


def key_file() -> KeyFile | None:
    """The key file in charge of the keyring, or ``None`` when ``MOORAGE_KEYS`` is."""
    if settings.MOORAGE_KEYS:
        return None
    return KeyFile(Path(settings.MOORAGE_KEY_FILE))


def describe_source() -> str:
    """Where the keyring comes from, for people: ``MOORAGE_KEYS`` or ``key file PATH``."""
    file = key_file()
    return "MOORAGE_KEYS" if file is None else f"key file {file.path}"


def _source() -> object:
    file = key_file()
    if file is None:
        return ("env", tuple(k.encoded() for k in settings.MOORAGE_KEYS or ()))
    try:
        stat = file.path.stat()
    except FileNotFoundError:
        return ("file", str(file.path), None)
    return ("file", str(file.path), (stat.st_ino, stat.st_size, stat.st_mtime_ns))


def keyring(*, reload: bool = False) -> Keyring:
    """The control plane's keyring (primary key first), re-read when its source changed."""
    global _cached
    with _lock:
        source = _source()
        if reload or _cached is None or _cached[0] != source:
            file = key_file()
            ring = Keyring(settings.MOORAGE_KEYS or ()) if file is None else file.load()
            # Creating the file on first use changes what it looks like: note it after.
            _cached = (_source(), ring)
        return _cached[1]


def seal_bytes(plaintext: bytes, associated_data: bytes) -> str:
    """Seal ``plaintext`` with the primary key, bound to ``associated_data``."""
    return seal(keyring().primary, plaintext, associated_data)


def open_bytes(sealed: str, associated_data: bytes) -> bytes:
    """Open a value sealed under the keyring; raise :class:`~moorage.sealing.SealedDataError`
    (whose message holds nothing secret) when it cannot be."""
    try:
        return open_sealed(keyring(), sealed, associated_data)
    except SealedDataError as exc:
        if exc.code != "sealed_key_unknown":
            raise
        return open_sealed(keyring(reload=True), sealed, associated_data)
