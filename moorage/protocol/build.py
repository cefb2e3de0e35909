"""A deployment's ``build`` object (``docs/sync.md``, "Builds from source"), checked.

The control plane writes it when it freezes a build deployment; the agent's replica checks it
when it stores the deployment and the builder reads it, all through :meth:`BuildSpec.from_payload`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: The largest uploaded source the control plane accepts (gzipped) and an agent downloads.
MAX_SOURCE_BYTES = 100 * 1024 * 1024

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class GitSource:
    """Where the source is: a clone URL, a ref (branch, tag or commit) and a git credential."""

    url: str
    ref: str
    credential_id: int | None = None
    credential_revision: int | None = None


@dataclass(frozen=True)
class ArchiveSource:
    """An uploaded source: a gzipped tar the control plane keeps, named by id, checked by its
    SHA-256 and size (frozen in the deployment when it was made)."""

    id: int
    sha256: str
    size: int


@dataclass(frozen=True)
class BuildSpec:
    """The DEPLOYMENT's ``build`` object, checked: a ``git`` source or an ``archive``."""

    git: GitSource | None
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: tuple[tuple[str, str], ...] = ()
    pull_credential_id: int | None = None
    pull_credential_name: str | None = None
    pull_credential_revision: int | None = None
    archive: ArchiveSource | None = None

    @property
    def source(self) -> GitSource | ArchiveSource:
        """Where the source comes from (exactly one of ``git`` and ``archive``)."""
        source = self.git or self.archive
        assert source is not None  # from_payload requires one
        return source

    @classmethod
    def from_payload(cls, build: Any) -> BuildSpec:
        """Check the shape; raise ``ValueError`` naming the field that is wrong."""
        if not isinstance(build, dict):
            raise ValueError("build is not an object")
        git_source = archive = None
        if build.get("archive") is not None:
            if build.get("git") is not None:
                raise ValueError("build has both a git and an archive source")
            archive = _archive_source(build["archive"])
        else:
            git_source = _git_source(build.get("git"))
        dockerfile = build.get("dockerfile") or "Dockerfile"
        context = build.get("context") or "."
        if not isinstance(dockerfile, str) or not isinstance(context, str):
            raise ValueError("build.dockerfile and build.context are paths")
        args = build.get("build_args") or {}
        if not isinstance(args, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
            raise ValueError("build.build_args is not a map of text to text")
        pull = build.get("pull")
        pull_id = pull_revision = None
        pull_name = None
        if pull is not None:
            if not isinstance(pull, dict):
                raise ValueError("build.pull is not an object")
            pull_id = _optional_int(pull, "credential_id", "build.pull")
            pull_revision = _optional_int(pull, "credential_revision", "build.pull")
            if pull_id is not None and pull_revision is None:
                raise ValueError("build.pull.credential_revision is missing")
            pull_name = pull.get("credential_name") if isinstance(
                pull.get("credential_name"), str) else None
        return cls(git=git_source, archive=archive, dockerfile=dockerfile, context=context,
                   build_args=tuple(sorted(args.items())), pull_credential_id=pull_id,
                   pull_credential_name=pull_name, pull_credential_revision=pull_revision)


def _git_source(git: Any) -> GitSource:
    if not isinstance(git, dict):
        raise ValueError("build.git is not an object")
    url, ref = git.get("url"), git.get("ref")
    if not isinstance(url, str) or not url:
        raise ValueError("build.git.url is not a URL")
    if not isinstance(ref, str) or not ref:
        raise ValueError("build.git.ref is empty")
    git_id = _optional_int(git, "credential_id", "build.git")
    git_revision = _optional_int(git, "credential_revision", "build.git")
    if git_id is not None and git_revision is None:
        raise ValueError("build.git.credential_revision is missing")
    return GitSource(url=url, ref=ref, credential_id=git_id, credential_revision=git_revision)


def _archive_source(archive: Any) -> ArchiveSource:
    if not isinstance(archive, dict):
        raise ValueError("build.archive is not an object")
    archive_id = _optional_int(archive, "id", "build.archive")
    size = _optional_int(archive, "size", "build.archive")
    sha256 = archive.get("sha256")
    if archive_id is None or size is None or size < 0:
        raise ValueError("build.archive needs an id and a size")
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise ValueError("build.archive.sha256 is not a SHA-256")
    return ArchiveSource(id=archive_id, sha256=sha256, size=size)


def _optional_int(obj: dict[str, Any], name: str, where: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}.{name} is not an integer")
    return value
