"""Writing files that hold secrets (keys, tokens): owner-only and never half-written.

No Django here: the keyring, the CLI and the agent's helpers use it alike.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600), atomically.

    The text goes to a fresh temp file beside it, created 0600 and chmod-ed again whatever the
    umask, then renamed over ``path``: a reader never sees half a secret, and a file that was
    readable by others is replaced, not reused. The parent is created 0700 when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
