"""A local directory as the gzipped tar ``moorage apps … --source DIR`` uploads.

What goes in is what ``docker build`` would send of that directory: its ``.dockerignore``
is honoured (the Dockerfile and ``.dockerignore`` always go), ``.git`` never goes. Symbolic
links are stored as links, never followed; owners are dropped and times zeroed, so the same
files give the same archive (and the same SHA-256, which the server keeps once).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import exclude_paths

#: What the server accepts (moorage.apps.sources.MAX_ARCHIVE_BYTES).
MAX_ARCHIVE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class SourceTar:
    """The archive written to ``path`` (a temp file the caller removes)."""

    path: Path
    size: int
    sha256: str
    files: int


def _patterns(root: Path) -> list[str]:
    ignore = root / ".dockerignore"
    patterns = [".git"]
    if ignore.is_file() and not ignore.is_symlink():
        patterns += [line.strip() for line in ignore.read_text(errors="replace").splitlines()
                     if line.strip() and not line.strip().startswith("#")]
    # Like docker build: these two always go, whatever the file says.
    return [p for p in patterns if p.lstrip("/") not in (".dockerignore",)] \
        + ["!.dockerignore"]


def source_tar(root: Path, *, dockerfile: str = "Dockerfile") -> SourceTar:
    """Write ``root`` as a gzipped tar to a temp file; count its size and SHA-256."""
    fd, name = tempfile.mkstemp(prefix="moorage-source-", suffix=".tar.gz")
    path = Path(name)
    files = 0
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for relative in sorted(exclude_paths(str(root), _patterns(root),
                                                 dockerfile=dockerfile)):
                full = root / relative
                info = tar.gettarinfo(str(full), arcname=relative)
                if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
                    continue  # sockets, fifos, devices: nothing a build can use
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    files += 1
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return SourceTar(path=path, size=path.stat().st_size, sha256=digest.hexdigest(),
                     files=files)
