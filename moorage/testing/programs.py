"""The system programs the real-component fixtures run, and the Debian package of each.

:data:`PROGRAMS` is the one place that says which package a program comes from.
:func:`require_binary` only accepts programs listed there, so a fixture that starts using a new
program has to name its package here; ``moorage/testing/tests/test_system_packages.py`` then
checks that the package is on ``scripts/system-packages.txt``, the list ``scripts/install.sh``
installs, and that ``dpkg`` agrees the package provides the program. That is how a fresh
machine gets everything the tests need, instead of what a developer happened to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

#: Program (an absolute path, or a command name looked up on ``PATH`` and the sbin
#: directories) → the Debian package that installs it. A program reached through another
#: package's dependency is listed with the package the install list names (``pg_dump`` comes
#: with ``postgresql``).
PROGRAMS: Mapping[str, str] = {
    # A private Docker Engine (moorage.testing.dockerd).
    "dockerd": "docker.io",
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "umount": "mount",
    # Registries (moorage.testing.registry) and tools that must accept what Moorage writes.
    "docker-registry": "docker-registry",
    "/usr/bin/skopeo": "skopeo",
    # Test images (moorage.testing.images).
    "/bin/busybox": "busybox-static",
    # The browser tests (moorage.testing.browser).
    "/usr/bin/chromium": "chromium",
    # The git server of the build tests (moorage.testing.gitserver); the agent clones with git.
    "git": "git",
    "/usr/lib/git-core/git-http-backend": "git",
    # The database dump searched for clear secrets on PostgreSQL.
    "pg_dump": "postgresql",
}


class MissingSystemBinary(RuntimeError):
    """A program the real-component fixtures need is not installed.

    The message names the Debian package to install, so a failing CI run says what the
    setup script is missing instead of skipping the tests silently.
    """


def find_program(program: str) -> str | None:
    """The absolute path of ``program`` if it is installed, else ``None``.

    An absolute path is checked as is; a command name is looked up on ``PATH`` plus the sbin
    directories, which a non-login root shell may lack.
    """
    if os.path.isabs(program):
        return program if os.access(program, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(program, path=search)


def require_binary(program: str, *, programs: Mapping[str, str] = PROGRAMS) -> str:
    """Return the absolute path of ``program``, or raise :class:`MissingSystemBinary`.

    ``program`` must be a key of :data:`PROGRAMS` (``programs`` replaces it in the tests of
    this function): a program without a known package would pass here and fail on the next
    fresh machine.
    """
    package = programs.get(program)
    if package is None:
        raise KeyError(
            f"{program!r} is not in moorage.testing.programs.PROGRAMS: add it with the Debian "
            "package that provides it, and add that package to scripts/system-packages.txt"
        )
    found = find_program(program)
    if found:
        return found
    raise MissingSystemBinary(
        f"{program!r} is not installed: the real-component test fixtures need the Debian "
        f"package {package!r} (apt-get install -y {package}; scripts/install.sh installs "
        "every package of scripts/system-packages.txt)"
    )
