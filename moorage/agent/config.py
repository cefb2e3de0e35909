"""The agent's configuration: built once by the caller (the CLI, a test), passed in.

Nothing in :mod:`moorage.agent` reads ``os.environ``; whoever starts the agent decides where
the token and key come from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from moorage.agent.errors import ConfigurationError
from moorage.protocol.constants import DEFAULT_WAIT, MAX_WAIT, REGION_TOKEN_PREFIX
from moorage.sealing import Key

_TOKEN = re.compile(r"^" + re.escape(REGION_TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}$")
_REGION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")

CONNECT_TIMEOUT = 5.0
# A long poll answers after at most ``wait`` seconds; this much more covers a slow answer.
READ_TIMEOUT_MARGIN = 15.0


def is_region_token(text: str) -> bool:
    """Whether ``text`` looks like a region token (``mrr_`` and 43 url-safe characters)."""
    return bool(_TOKEN.match(text))


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent process needs, validated on construction.

    ``region`` is optional: when given, it pins the region and the first answer must be for
    it; when not, the agent learns it from its first snapshot and keeps it in the replica,
    after which every answer must be for that region. (The MAC alone already ties an answer
    to the region key; the slug check catches a key shared between regions by mistake.)
    ``docker_host`` is the region's Docker Engine API, for the runtime layer
    (:mod:`moorage.agent.runtime`); the sync layer ignores it.
    The token and key are hidden from ``repr``.
    """

    url: str
    token: str = field(repr=False)
    region_key: Key
    data_dir: Path
    docker_host: str | None = None
    wait: int = DEFAULT_WAIT
    region: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        """Refuse what would only fail later, with a message naming the setting."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"The control plane URL {self.url!r} is not an http(s) URL.")
        if not is_region_token(self.token):
            raise ConfigurationError(
                f"The region token is malformed: it is {REGION_TOKEN_PREFIX!r} followed by 43 "
                "url-safe characters, as printed by 'moorage regions add'.")
        if not 0 <= self.wait <= MAX_WAIT:
            raise ConfigurationError(f"wait must be between 0 and {MAX_WAIT} seconds.")
        if self.region is not None and not _REGION.match(self.region):
            raise ConfigurationError(f"{self.region!r} is not a region slug.")

    @property
    def api_url(self) -> str:
        """Where the agent endpoints live, whatever the URL's trailing slash."""
        return self.url.rstrip("/") + "/api/v1/agent/"

    @property
    def read_timeout(self) -> float:
        """Long enough for a full long poll plus a slow answer, short enough to notice a
        dead connection."""
        return self.wait + READ_TIMEOUT_MARGIN

    @property
    def replica_path(self) -> Path:
        """The replica database in the data dir."""
        return self.data_dir / "replica.sqlite3"
