"""Builds from source (``docs/sync.md``, "Builds from source"): fetch, pre-pull, build.

The deployer calls :func:`run_build` for a deployment whose payload carries a ``build``
object; the built image is then run exactly like a pulled one. Why it looks this way:

* **The git token only ever travels in one header of one process.** The clone runs
  ``git clone`` with the credential as ``http.extraHeader=Authorization: Basic …`` given
  through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0`` in that git
  process's environment: not an argument (``/proc/*/cmdline`` is world-readable), not the
  clone's ``.git/config`` (``git clone -c`` would write it there; environment config is never
  written), not a log line. The environment is built from scratch (no inherited
  ``GIT_ASKPASS``, no ``~/.gitconfig`` or system config, ``credential.helper`` emptied,
  ``GIT_TERMINAL_PROMPT=0``), redirects are not followed (the header would go along to
  another host) and only ``http``/``https`` transports are allowed (``GIT_ALLOW_PROTOCOL``).
  The credential must be a ``git`` credential of the app's account made for the URL's host,
  and it is only sent over HTTPS, or plain HTTP to a loopback host.
* **Base images are pulled first, each with the right credential (I4, I5, I8).** The
  Dockerfile's ``FROM`` lines are parsed (:mod:`moorage.registry.dockerfile`); an image on
  the build-pull credential's registry host is pulled with it, any other anonymously, never
  with the account default nor the machine's docker login; always pulled, even when cached,
  and a refusal fails the build before it starts, naming the base image. The build then
  runs with ``pull=1`` and ``X-Registry-Config`` holding only that credential (BuildKit
  ignores the header; the pre-pull makes it work there too).
* **An uploaded source is checked before it is used.** It is downloaded from the control
  plane with the region token, must have the size and SHA-256 the deployment froze, and is
  unpacked with tarfile's ``data`` filter (nothing outside the build's temp dir).
* **Images stay on the engine.** ``moorage/<account slug>/<app>:<deployment id>``, never
  pushed; the newest :data:`~moorage.agent.runtime.docker.KEEP_BUILDS` per app are kept.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from docker.utils.build import exclude_paths

from moorage.agent.errors import DeployError
from moorage.agent.runtime.base import ImageEngine
from moorage.protocol.build import ArchiveSource, BuildSpec, GitSource
from moorage.registry import RegistryLogin
from moorage.registry.auth import scrub
from moorage.registry.dockerfile import InvalidDockerfile, base_images, pulled_base_images
from moorage.registry.hosts import (
    InvalidRegistryHost,
    hosts_match,
    is_loopback,
    normalize_registry_host,
)

GIT_TIMEOUT = 300.0
#: At most this many build output lines go into the deployment's log (the tail is kept
#: for a failure anyway).
MAX_BUILD_LINES = 500
#: A progress report goes out after this many new lines, or this many seconds.
REPORT_EVERY_LINES = 20
REPORT_EVERY_SECONDS = 1.0
MAX_DOCKERFILE_BYTES = 1024 * 1024

_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
_REF_RE = re.compile(r"^[A-Za-z0-9._/+@-]{1,255}$")
_NAME_UNSAFE = re.compile(r"[^a-z0-9._-]+")

#: How a build downloads an uploaded source: ``(archive id, file to write)``.
Download = Callable[[int, Path], None]


def image_repository(account_slug: str, app: str) -> str:
    """``moorage/<account slug>/<app>``, lower case with only characters docker accepts."""
    def clean(part: str) -> str:
        return _NAME_UNSAFE.sub("-", part.lower()).strip("-._") or "x"
    return f"moorage/{clean(account_slug)}/{clean(app)}"


# -- git ---------------------------------------------------------------------------------------


def git_host(url: str) -> str:
    """The ``host[:port]`` of an http(s) clone URL, lower case; ``DeployError`` otherwise.

    Refuses other transports (``ssh``, ``file``, ``ext::``…) and a user or password written
    into the URL (it would end up in argv, logs and ``.git/config``).
    """
    split = urlsplit(url)
    if split.scheme not in ("https", "http") or not split.hostname:
        raise DeployError("git_url_invalid",
                          f"The repository URL {_safe_url(url)} is not an http(s) URL.")
    if split.username is not None or split.password is not None or "@" in split.netloc:
        raise DeployError("git_url_invalid",
                          "The repository URL holds a user name or password; use a git "
                          "credential instead.")
    host = split.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{split.port}" if split.port else host


def _safe_url(url: str) -> str:
    split = urlsplit(url)
    if "@" in split.netloc:
        return split._replace(netloc=split.netloc.rsplit("@", 1)[1]).geturl()
    return url[:200]


def git_environment(login: RegistryLogin | None, home: Path) -> dict[str, str]:
    """The whole environment of one git process: nothing inherited but ``PATH``.

    With ``login``, the only place its token goes is ``GIT_CONFIG_VALUE_0``
    (``http.extraHeader``), read by git from its own environment (``/proc/PID/environ`` is
    readable by the same user and root only, unlike ``cmdline``).
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": "http:https",
        "GIT_LFS_SKIP_SMUDGE": "1",
    }
    if login is not None:
        basic = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}
    return env


#: Arguments before the git sub-command: no credential helper, no redirect to another host.
#: They hold no secret, and ``git -c`` (unlike ``git clone -c``) is not written to the clone.
GIT_OPTIONS = ("-c", "credential.helper=", "-c", "http.followRedirects=false",
               "-c", "advice.detachedHead=false", "-c", "core.askPass=")


def fetch_source(source: GitSource | ArchiveSource, login: RegistryLogin | None, dest: Path, *,
                 timeout: float = GIT_TIMEOUT, download: Download | None = None) -> str:
    """Fetch the source into ``dest`` (which must not exist); return what was fetched: the
    commit checked out, or ``sha256:…`` of an uploaded archive (:func:`fetch_archive`).

    For git: clone ``source.ref``.

    ``git clone --depth 1 --branch REF`` for a branch or tag; when that fails and the ref looks
    like a commit id, a full clone and a checkout of that commit. Raises :class:`DeployError`
    (``git_unauthorized``, ``git_not_found``, ``git_ref_not_found``, ``git_unreachable``,
    ``git_timeout``, ``git_failed``) with git's message scrubbed of the token.
    """
    if isinstance(source, ArchiveSource):
        if download is None:
            raise DeployError("agent_error", "This build needs its uploaded source, and the "
                              "agent was given no way to download it.")
        return fetch_archive(source, download, dest)
    if not _REF_RE.match(source.ref) or source.ref.startswith("-") or ".." in source.ref:
        raise DeployError("git_ref_not_found", f"{source.ref[:100]!r} is not a git ref.")
    home = dest.parent / "home"
    home.mkdir(exist_ok=True, mode=0o700)
    env = git_environment(login, home)
    url = source.url
    try:
        _git(["clone", "--quiet", "--depth", "1", "--branch", source.ref, "--", url,
              str(dest)], env, login, source, timeout)
    except DeployError as exc:
        if exc.code not in ("git_ref_not_found",) or not _SHA_RE.match(source.ref):
            raise
        shutil.rmtree(dest, ignore_errors=True)
        _git(["clone", "--quiet", "--no-checkout", "--", url, str(dest)], env, login, source,
             timeout)
        try:
            _git(["-C", str(dest), "checkout", "--quiet", "--detach", source.ref], env, login,
                 source, timeout)
        except DeployError:
            raise DeployError("git_ref_not_found",
                              f"The repository has no branch, tag or commit {source.ref}.")\
                from None
    return _git(["-C", str(dest), "rev-parse", "HEAD"], env, login, source, timeout).strip()


def fetch_archive(source: ArchiveSource, download: Download, dest: Path) -> str:
    """Download an uploaded source, check its size and SHA-256, unpack it into ``dest``.

    The archive is unpacked with tarfile's ``data`` filter (no absolute paths, nothing
    outside ``dest``, no device files, no set-uid bits); the control plane checked it too.
    Raises :class:`DeployError` (``source_invalid`` for an archive that is not what the
    deployment named, or :class:`DeployError` from ``download``).
    """
    archive = dest.parent / "source.tar.gz"
    try:
        download(source.id, archive)
        size = archive.stat().st_size
        digest = hashlib.sha256()
        with archive.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
        if size != source.size or digest.hexdigest() != source.sha256:
            raise DeployError("source_invalid",
                              f"The uploaded source downloaded is not the one deployed: "
                              f"expected sha256:{source.sha256[:12]} ({source.size} bytes), "
                              f"got sha256:{digest.hexdigest()[:12]} ({size} bytes).")
        dest.mkdir(mode=0o700)
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DeployError("source_invalid",
                              f"The uploaded source cannot be unpacked: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)
    return f"sha256:{source.sha256}"


def _git(args: list[str], env: dict[str, str], login: RegistryLogin | None,
         source: GitSource, timeout: float) -> str:
    try:
        done = subprocess.run(["git", *GIT_OPTIONS, *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DeployError("git_timeout", f"Fetching {source.url} took longer than "
                          f"{timeout:.0f} s.") from None
    except FileNotFoundError:
        raise DeployError("git_failed", "git is not installed on the region's agent.") \
            from None
    if done.returncode == 0:
        return done.stdout
    raise classify_git_error(scrub(done.stderr, login), source)


def classify_git_error(stderr: str, source: GitSource) -> DeployError:
    """git's message for a failed fetch as a :class:`DeployError` in the user's words."""
    lines = [line for line in stderr.strip().splitlines()
             if line and not line.startswith(("Cloning into", "hint:"))]
    said = " ".join(lines)[-300:]
    low = said.lower()
    url = source.url
    if "authentication failed" in low or "could not read username" in low \
            or "terminal prompts disabled" in low or " 401" in low or " 403" in low:
        who = "the git credential" if source.credential_id is not None else "no credential"
        return DeployError("git_unauthorized",
                           f"The git server refused {url} with {who}: choose a git credential "
                           f"with read access. git said: {said}")
    if ("remote branch" in low and "not found" in low) or "couldn't find remote ref" in low:
        return DeployError("git_ref_not_found",
                           f"The repository {url} has no branch, tag or commit {source.ref}. "
                           f"git said: {said}")
    if "not found" in low or "does not appear to be a git repository" in low or " 404" in low:
        return DeployError("git_not_found", f"There is no repository at {url}. git said: {said}")
    if any(m in low for m in ("could not resolve host", "failed to connect", "connection refused",
                              "timed out", "couldn't connect", "ssl", "unable to access")):
        return DeployError("git_unreachable",
                           f"The git server of {url} could not be reached. git said: {said}")
    return DeployError("git_failed", f"Fetching {url} failed. git said: {said}")


# -- context -----------------------------------------------------------------------------------


def _inside(root: Path, relative: str, what: str) -> Path:
    """``root/relative`` resolved, refusing anything that leaves ``root`` (``..``, symlinks)."""
    if relative.startswith("/") or "\\" in relative:
        raise DeployError("dockerfile_not_found", f"The {what} {relative!r} must be a path "
                          "relative to the repository.")
    path = (root / relative).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise DeployError("dockerfile_not_found",
                          f"The {what} {relative!r} is outside the repository.")
    return path


def context_tar(context: Path, dockerfile: str) -> io.BytesIO:
    """A tar of ``context`` honouring its ``.dockerignore`` (always keeping the Dockerfile);
    symlinks are stored as links, never followed."""
    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file() and not ignore.is_symlink():
        patterns = [line.strip() for line in ignore.read_text(errors="replace").splitlines()
                    if line.strip() and not line.startswith("#")]
        patterns = [p for p in patterns if p not in (dockerfile, ".dockerignore")]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile)):
            full = context / name
            info = tar.gettarinfo(str(full), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    buffer.seek(0)
    return buffer


# -- the build ---------------------------------------------------------------------------------


class BuildReporter(Protocol):
    """What the deployer gives a build: log lines and progress reports."""

    def line(self, text: str) -> None:
        """Add a line to the deployment's log."""

    def send(self, status: str, **fields: Any) -> None:
        """Send a progress report with the lines gathered so far."""


@dataclass(frozen=True)
class Credentials:
    """The opened logins a build uses, with their labels for log lines.

    ``pull_host`` is the build-pull credential's registry host (canonical).
    """

    git: RegistryLogin | None = None
    pull: RegistryLogin | None = None
    pull_host: str | None = None
    pull_label: str | None = None

    def __repr__(self) -> str:
        """Never the secrets (RegistryLogin hides them too)."""
        return f"Credentials(pull_host={self.pull_host!r}, pull_label={self.pull_label!r})"


@dataclass(frozen=True)
class Built:
    """A finished build: the image id and tag, and the commit it was built from (``sha256:…``
    of the archive for an uploaded source)."""

    image_id: str
    tag: str
    commit: str


def run_build(
    *,
    spec: BuildSpec,
    credentials: Credentials,
    runtime: ImageEngine,
    reporter: BuildReporter,
    repository: str,
    deployment_id: int,
    workdir: Path | None = None,
    inspect_clone: Callable[[Path], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    download: Download | None = None,
) -> Built:
    """Fetch, pre-pull the base images, build; report ``building`` progress on the way.

    ``download`` fetches an uploaded source (``ControlPlaneClient.source_archive``).
    ``inspect_clone`` (tests) is called with the clone's directory before it is removed.
    Raises :class:`DeployError`.
    """
    temp = Path(tempfile.mkdtemp(prefix="moorage-build-", dir=workdir))
    try:
        os.chmod(temp, 0o700)
        clone = temp / "src"
        source = spec.source
        if isinstance(source, ArchiveSource):
            reporter.line(f"Fetching the uploaded source sha256:{source.sha256[:12]} "
                          f"({source.size} bytes)")
        else:
            how = "with a git credential" if credentials.git is not None else "anonymously"
            reporter.line(f"Fetching {source.url} at {source.ref} {how}")
        reporter.send("building")
        commit = fetch_source(source, credentials.git, clone, download=download)
        if isinstance(source, ArchiveSource):
            reporter.line("Unpacked the uploaded source")
        else:
            reporter.line(f"Fetched commit {commit[:12]}")
        if inspect_clone is not None:
            inspect_clone(clone)
        context = _inside(clone, spec.context, "build context")
        if not context.is_dir():
            raise DeployError("dockerfile_not_found",
                              f"The build context {spec.context!r} is not a directory of the "
                              "repository.")
        dockerfile_path = _inside(context, spec.dockerfile, "Dockerfile")
        if not dockerfile_path.is_file():
            raise DeployError("dockerfile_not_found",
                              f"There is no Dockerfile {spec.dockerfile!r} in the build "
                              f"context {spec.context!r}.")
        if dockerfile_path.stat().st_size > MAX_DOCKERFILE_BYTES:
            raise DeployError("dockerfile_invalid", f"The Dockerfile {spec.dockerfile!r} is "
                              "larger than 1 MiB.")
        text = dockerfile_path.read_text(encoding="utf-8", errors="replace")
        build_args = dict(spec.build_args)
        try:
            found = base_images(text, build_args)
        except InvalidDockerfile as exc:
            raise DeployError("dockerfile_invalid",
                              f"The Dockerfile {spec.dockerfile!r}: {exc.message}") from None
        _pull_base_images(found, credentials, runtime, reporter)
        tag = f"{repository}:{deployment_id}"
        reporter.line(f"Building {tag} from {spec.dockerfile}")
        reporter.send("building")
        relative = dockerfile_path.relative_to(context.resolve()).as_posix()
        tar = context_tar(context, relative)
        registry = None
        if credentials.pull is not None and credentials.pull_host is not None:
            registry = (credentials.pull_host, credentials.pull)
        progress = _Progress(reporter, clock)
        try:
            # No labels on the image: the engine's classic builder makes each label a step of
            # its own (a second each on some engines); the tag names account, app and
            # deployment already, and the containers carry the labels.
            result = runtime.build(tar, dockerfile=relative, tag=tag, buildargs=build_args,
                                   registry=registry, on_line=progress.line)
        except DeployError as exc:
            if progress.count <= MAX_BUILD_LINES:
                exc.logs = []  # every line is in the log already
            raise
        finally:
            progress.finish()
        reporter.line(f"Built {tag} ({result.image_id})")
        return Built(image_id=result.image_id, tag=tag, commit=commit)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _pull_base_images(found: list[Any], credentials: Credentials, runtime: ImageEngine,
                      reporter: BuildReporter) -> None:
    images = pulled_base_images(found)
    for base in found:
        if base.is_scratch:
            reporter.line(f"Stage {base.stage_index}: FROM scratch (nothing to pull)")
        elif base.from_stage:
            reporter.line(f"Stage {base.stage_index}: FROM stage '{base.from_stage}' "
                          "(nothing to pull)")
    plan = []
    for ref in images:
        host = ref.registry_host
        use = credentials.pull is not None and credentials.pull_host is not None \
            and hosts_match(credentials.pull_host, host)
        plan.append((ref, use))
        if use:
            reporter.line(f"Base image {ref}: pulled with {credentials.pull_label} ({host})")
        else:
            reporter.line(f"Base image {ref}: pulled anonymously ({host})")
    if credentials.pull is not None and not any(use for _, use in plan):
        reporter.line(f"The build-pull credential {credentials.pull_label} is for "
                      f"{credentials.pull_host}; no base image is on that registry.")
    reporter.send("building")
    for ref, use in plan:
        login = credentials.pull if use else None
        label = credentials.pull_label if use else None
        try:
            pulled = runtime.pull(ref, login, None, credential_label=label)
        except DeployError as exc:
            hint = ""
            if login is None and exc.code in ("registry_unauthorized", "registry_forbidden"):
                hint = (" Builds never use the account default: choose a 'Container registry "
                        f"for build pull' credential for {ref.registry_host}.")
            message = exc.message.replace(
                ", and this app pulls anonymously: choose a registry credential for it.",
                ", and the build pulls it anonymously.")
            what, said, quoted = message.partition(" The registry said: ")
            raise DeployError(exc.code, f"Base image {ref}: {what}{hint}{said}{quoted}") \
                from None
        reporter.line(f"Base image {ref}: {pulled.digest}")


class _Progress:
    """Build output into the log: every line (up to a cap), a report every 20 lines or 1 s."""

    def __init__(self, reporter: BuildReporter, clock: Callable[[], float]) -> None:
        self.reporter = reporter
        self.clock = clock
        self.count = 0
        self.pending = 0
        self.last = clock()

    def line(self, text: str) -> None:
        self.count += 1
        if self.count <= MAX_BUILD_LINES:
            self.reporter.line(text)
            self.pending += 1
        if self.pending >= REPORT_EVERY_LINES or (
                self.pending and self.clock() - self.last >= REPORT_EVERY_SECONDS):
            self.reporter.send("building")
            self.pending = 0
            self.last = self.clock()

    def finish(self) -> None:
        if self.count > MAX_BUILD_LINES:
            self.reporter.line(f"({self.count - MAX_BUILD_LINES} more lines of build output "
                               "not shown)")


def check_git_host(credential_server: str, url_host: str) -> bool:
    """Whether a git credential made for ``credential_server`` may go to ``url_host``."""
    def canonical(value: str) -> str:
        value = value.strip().lower()
        value = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value).split("/", 1)[0]
        try:
            return normalize_registry_host(value)
        except InvalidRegistryHost:
            return value
    return bool(credential_server) and canonical(credential_server) == canonical(url_host)


def plain_http_allowed(url: str) -> bool:
    """A credential goes over plain HTTP only to a loopback host."""
    split = urlsplit(url)
    if split.scheme == "https":
        return True
    try:
        return split.scheme == "http" and is_loopback(git_host(url))
    except (InvalidRegistryHost, DeployError):
        return False
