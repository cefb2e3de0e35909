"""Where the CLI keeps the server URL and API token of ``moorage login``.

``~/.config/moorage/config.toml`` (or under ``$XDG_CONFIG_HOME``), written with mode 0600
because it holds a token.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from moorage.private_files import write_private


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "moorage" / "config.toml"


def load() -> ClientConfig | None:
    """The stored login, or ``None`` when there is none."""
    path = config_path()
    if not path.exists():
        return None
    data = tomllib.loads(path.read_text())
    url, token = data.get("url"), data.get("token")
    if not isinstance(url, str) or not isinstance(token, str):
        return None
    return ClientConfig(url=url, token=token)


def save(config: ClientConfig) -> Path:
    """Store the login, readable by the user only (the file is replaced atomically)."""
    return write_private(config_path(),
                         tomli_w.dumps({"url": config.url, "token": config.token}))
