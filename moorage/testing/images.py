"""Tiny test images built from Debian's ``busybox-static``; nothing comes from the internet.

An image is a tar of a root filesystem holding ``/bin/busybox`` and its applet links, imported
through the Engine API (``POST /images/create?fromSrc=-``) and pushed to a test registry.
A ``marker`` adds ``/etc/marker`` so that two images differ in content and digest.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import tarfile
from typing import Any, Protocol

import docker
import docker.errors

from moorage.testing.programs import require_binary

BUSYBOX_PATH = "/bin/busybox"

#: Applets the tests rely on; the image links every applet busybox offers, these must be there.
REQUIRED_APPLETS: frozenset[str] = frozenset(
    {"sh", "echo", "cat", "sleep", "ls", "nc", "httpd", "true", "wget"}
)

#: Fixed mtime so the same marker yields the same layer bytes (and diff id).
_MTIME = 1_700_000_000


class RegistryLike(Protocol):
    """What :func:`push_busybox_image` needs of a registry (``RegistryServer`` fits)."""

    @property
    def host(self) -> str:
        """``HOST:PORT`` as used in image references."""
        ...

    admin_username: str
    admin_password: str


class ImagePushError(RuntimeError):
    """The engine reported an error while importing or pushing a test image."""


@functools.cache
def _busybox() -> tuple[bytes, tuple[str, ...]]:
    """The static busybox binary and its applet names (read once per process)."""
    path = require_binary(BUSYBOX_PATH)
    with open(path, "rb") as f:
        data = f.read()
    listing = subprocess.run([path, "--list"], capture_output=True, text=True, check=True)
    applets = tuple(sorted({a for a in listing.stdout.split() if a and a != "busybox"}))
    missing = REQUIRED_APPLETS - set(applets)
    if missing:
        raise RuntimeError(f"{path} lacks applets {sorted(missing)}; is it busybox-static?")
    return data, applets


def build_busybox_rootfs_tar(marker: str | None = None) -> bytes:
    """Return a tar of a minimal root filesystem: ``/bin/busybox``, applet links, ``/etc``.

    Every applet is a symlink ``/bin/NAME -> busybox``; ``/etc/passwd`` and ``/etc/group``
    know root; ``/tmp`` is world-writable. With ``marker``, ``/etc/marker`` holds it (plus a
    newline), which makes the image's content and digest differ from other markers'.
    """
    binary, applets = _busybox()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.mtime = _MTIME
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = _MTIME
            tar.addfile(info, io.BytesIO(data))

        for directory in ("bin", "etc", "dev", "proc", "sys", "root", "var", "usr", "usr/bin"):
            add_dir(directory, 0o700 if directory == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", binary, 0o755)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            link.mtime = _MTIME
            tar.addfile(link)
        add_file(
            "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        )
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        if marker is not None:
            add_file("etc/marker", marker.encode() + b"\n")
    return buffer.getvalue()


def push_busybox_image(
    docker_client: docker.DockerClient,
    registry: RegistryLike,
    repository: str,
    tag: str = "latest",
    *,
    username: str | None = None,
    password: str | None = None,
    marker: str | None = None,
) -> str:
    """Import a busybox image, push it to ``registry`` and drop the local tag.

    Returns the full reference ``HOST:PORT/REPOSITORY:TAG``. Credentials default to the
    registry's admin. The push gets an explicit ``auth_config`` (docker-py would otherwise
    consult the host's docker config). The local tag is removed afterwards so that a later
    pull of the reference really goes to the registry. Raises :class:`ImagePushError` on an
    error line in the engine's import or push stream.
    """
    name = f"{registry.host}/{repository}"
    reference = f"{name}:{tag}"
    api = docker_client.api
    result = api.import_image_from_data(
        build_busybox_rootfs_tar(marker),
        repository=name,
        tag=tag,
        changes=['CMD ["/bin/sh"]'],
    )
    _raise_on_errors(_json_lines(result), f"import of {reference}")
    auth_config = {
        "username": username if username is not None else registry.admin_username,
        "password": password if password is not None else registry.admin_password,
        "serveraddress": registry.host,
    }
    try:
        stream = api.push(name, tag=tag, auth_config=auth_config, stream=True, decode=True)
        _raise_on_errors(stream, f"push of {reference}")
    finally:
        try:
            api.remove_image(reference)
        except docker.errors.NotFound:
            pass
    return reference


def _json_lines(text: Any) -> list[dict[str, Any]]:
    """Parse the newline-separated JSON objects of a non-streamed Engine API answer."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines: list[dict[str, Any]] = []
    for raw in str(text).splitlines():
        raw = raw.strip()
        if raw:
            lines.append(json.loads(raw))
    return lines


def _raise_on_errors(lines: Any, what: str) -> list[dict[str, Any]]:
    """Consume a progress stream; raise on its first ``error``/``errorDetail`` line."""
    seen: list[dict[str, Any]] = []
    for line in lines:
        seen.append(line)
        if "error" in line or "errorDetail" in line:
            detail = line.get("errorDetail") or {}
            message = line.get("error") or detail.get("message") or json.dumps(line)
            raise ImagePushError(f"{what} failed: {message}")
    return seen
