"""Uploaded source archives on disk: received in full, checked, then put in place.

An archive is ``DATA_DIR/sources/<app id>/<sha256>.tar.gz``, mode 0600. An upload is
streamed to a temp file in that directory while its size is counted, checked (a gzip tar whose
members are plain files, directories and links that all stay inside the archive), and only
then renamed to its final name: a failed or refused upload leaves nothing.

A zip (what people make on a desktop) is accepted too: its entries are copied, as they are,
into a gzipped tar, which is then checked by the same rules as an uploaded one, so both
formats meet the same limits and errors, and the agents only ever receive a gzipped tar.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
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
#: The longest symbolic link target a zip entry may hold (Linux's PATH_MAX).
MAX_LINK_TARGET = 4096
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
    """Write ``chunks`` (a gzipped tar or a zip) to the app's sources directory, check them,
    and keep them as a gzipped tar named by its SHA-256."""
    directory = sources_dir(app_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    size = 0
    fd, temp_name = tempfile.mkstemp(prefix=".upload-", dir=directory)
    temp = Path(temp_name)
    kept = temp
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise too_large()
                out.write(chunk)
        if size == 0:
            raise _invalid("The upload is empty: send the gzipped tar or the zip of the "
                           "source.")
        if _is_zip(temp):
            kept = _zip_to_targz(temp, directory)
            size = kept.stat().st_size
            if size > MAX_ARCHIVE_BYTES:
                raise too_large()
        check_archive(kept)
        sha256 = _sha256(kept)
        final = archive_path(app_id, sha256)
        created = not final.exists()
        os.chmod(kept, 0o600)
        os.replace(kept, final)
    except BaseException:
        kept.unlink(missing_ok=True)
        raise
    finally:
        temp.unlink(missing_ok=True)
    return Received(path=final, sha256=sha256, size=size, created=created)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _zip_to_targz(path: Path, directory: Path) -> Path:
    """Copy a zip's entries into a new gzipped tar beside it (checked afterwards by
    :func:`check_archive`, like any upload). Nothing is extracted to disk."""
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".tar.gz", dir=directory)
    target = Path(name)
    try:
        # gzip's header time fixed: the same zip always makes the same archive (and SHA-256).
        with os.fdopen(fd, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, \
                zipfile.ZipFile(path) as archive, tarfile.open(fileobj=gz, mode="w") as tar:
            entries = archive.infolist()
            if len(entries) > MAX_MEMBERS or \
                    sum(e.file_size for e in entries) > MAX_UNPACKED_BYTES:
                raise _too_much()
            for entry in entries:
                _copy_zip_entry(archive, entry, tar)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            OSError, UnicodeDecodeError, ValueError) as exc:
        target.unlink(missing_ok=True)
        raise _invalid(f"The upload is not a readable zip archive ({type(exc).__name__}).") \
            from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _copy_zip_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo,
                    tar: tarfile.TarFile) -> None:
    mode = entry.external_attr >> 16
    info = tarfile.TarInfo(entry.filename.rstrip("/") if entry.is_dir() else entry.filename)
    info.mtime = int(_zip_time(entry))
    if entry.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, (stat.S_IMODE(mode) or 0o755)
        tar.addfile(info)
    elif stat.S_ISLNK(mode):
        if entry.file_size > MAX_LINK_TARGET:
            raise _invalid(f"The symbolic link {entry.filename[:200]!r} is not a link.")
        info.type, info.mode = tarfile.SYMTYPE, 0o777
        info.linkname = archive.read(entry).decode("utf-8")
        tar.addfile(info)
    else:
        info.size, info.mode = entry.file_size, (stat.S_IMODE(mode) or 0o644)
        with archive.open(entry) as data:
            tar.addfile(info, data)


def _zip_time(entry: zipfile.ZipInfo) -> float:
    try:
        return datetime.datetime(*entry.date_time).timestamp()
    except (ValueError, OverflowError):
        return 0.0


def _too_much() -> ValidationFailed:
    return _invalid("The archive unpacks to more than 2 GiB or 100000 entries.")


def check_archive(path: Path) -> None:
    """Refuse anything but a gzip tar of files, directories and links that stay inside."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            count = unpacked = 0
            for member in tar:
                count += 1
                unpacked += max(member.size, 0)
                if count > MAX_MEMBERS or unpacked > MAX_UNPACKED_BYTES:
                    raise _too_much()
                _check_member(member)
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise _invalid(f"The upload is not a gzipped tar archive, nor a zip "
                       f"({type(exc).__name__}).") from None


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
