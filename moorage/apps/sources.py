"""Uploaded source archives on disk: received in full, checked, then put in place.

An archive is ``DATA_DIR/sources/<app id>/<sha256>.tar.gz``, mode 0600. An upload is
streamed to a temp file in that directory while its size and SHA-256 are counted, checked
(a gzip tar whose members are plain files, directories and links that all stay inside the
archive), and only then renamed to its final name: a failed or refused upload leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from moorage.errors import ApplicationError, ValidationFailed
from moorage.protocol.build import MAX_SOURCE_BYTES

#: The largest archive accepted (compressed).
MAX_ARCHIVE_BYTES = MAX_SOURCE_BYTES
#: The most it may unpack to, and the most members: a small archive can expand enormously.
MAX_UNPACKED_BYTES = 2 * 1024 * 1024 * 1024
MAX_MEMBERS = 100_000
#: How many archives of an app are kept (the newest).
KEEP_ARCHIVES = 3


class SourceTooLarge(ApplicationError):
    """The upload is larger than :data:`MAX_ARCHIVE_BYTES`."""

    status = 413
    default_code = "source_too_large"


@dataclass(frozen=True)
class Received:
    """An archive received and checked, in place under its final name."""

    path: Path
    sha256: str
    size: int
    created: bool


def sources_dir(app_id: int) -> Path:
    return Path(settings.DATA_DIR) / "sources" / str(int(app_id))


def archive_path(app_id: int, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256")
    return sources_dir(app_id) / f"{sha256}.tar.gz"


def too_large() -> SourceTooLarge:
    return SourceTooLarge(
        f"A source archive is at most {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB (gzipped); "
        "leave build outputs and dependencies out with a .dockerignore.",
        detail={"max_bytes": MAX_ARCHIVE_BYTES})


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="source_invalid")


def receive(app_id: int, chunks: Iterable[bytes]) -> Received:
    """Write ``chunks`` to the app's sources directory, check them, name them by SHA-256."""
    directory = sources_dir(app_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    size = 0
    fd, temp_name = tempfile.mkstemp(prefix=".upload-", dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise too_large()
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise _invalid("The request body is empty: send the gzipped tar of the source.")
        check_archive(temp)
        final = archive_path(app_id, digest.hexdigest())
        created = not final.exists()
        os.chmod(temp, 0o600)
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Received(path=final, sha256=digest.hexdigest(), size=size, created=created)


def check_archive(path: Path) -> None:
    """Refuse anything but a gzip tar of files, directories and links that stay inside."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            count = unpacked = 0
            for member in tar:
                count += 1
                unpacked += max(member.size, 0)
                if count > MAX_MEMBERS or unpacked > MAX_UNPACKED_BYTES:
                    raise _invalid("The archive unpacks to more than 2 GiB or 100000 entries.")
                _check_member(member)
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"The upload is not a gzipped tar archive ({type(exc).__name__}).") \
            from None


def _escapes(name: str) -> bool:
    """Whether a member name is absolute or has a ``..`` component."""
    return name.startswith("/") or ".." in name.split("/")


def _outside(path: str) -> bool:
    """Whether a relative path, once normalised, leaves the archive's root."""
    normal = posixpath.normpath(path)
    return path.startswith("/") or normal == ".." or normal.startswith("../")


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    shown = name[:200]
    if not name or "\x00" in name or "\\" in name or _escapes(name):
        raise _invalid(f"The archive member {shown!r} is not a relative path inside it.")
    if member.isdev() or member.isfifo() or not (
            member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _invalid(f"The archive member {shown!r} is a device or special file.")
    if member.issym():
        target = member.linkname
        if target.startswith("/") or _outside(posixpath.join(posixpath.dirname(name), target)):
            raise _invalid(f"The symbolic link {shown!r} points outside the archive.")
    if member.islnk() and (_escapes(member.linkname) or _outside(member.linkname)):
        raise _invalid(f"The hard link {shown!r} points outside the archive.")


def remove(app_id: int, sha256s: Iterable[str]) -> None:
    """Remove these archive files of an app (no longer kept)."""
    for sha in sha256s:
        archive_path(app_id, sha).unlink(missing_ok=True)


def remove_all(app_id: int) -> None:
    """Remove every archive of a deleted app."""
    shutil.rmtree(sources_dir(app_id), ignore_errors=True)
