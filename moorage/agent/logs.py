"""The agent's log lines: plain text on stderr, one line per event, tagged with the region.

``%(region)s`` is filled by the sync loop on its own records and by :class:`RegionFilter` for
any other record, so a line from a library never breaks the format. Nothing logged by the
agent holds a token, a key or a secret.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER_NAME = "moorage.agent"
LOG_FORMAT = "%(asctime)s %(levelname)s agent[%(region)s] %(message)s"


class RegionFilter(logging.Filter):
    """Give records that do not name a region the agent's default (``-`` before it knows)."""

    def __init__(self, default: str = "-") -> None:
        super().__init__()
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only makes sure the format can render it."""
        if not hasattr(record, "region"):
            record.region = self.default
        return True


def configure_logging(
    *, level: int = logging.INFO, stream: TextIO | None = None, region: str | None = None
) -> logging.Logger:
    """Send the agent's records to ``stream`` (stderr) in the agent's format.

    Calling it again replaces the handler it installed, so a test or a restart in the same
    process does not double every line.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_moorage_agent", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RegionFilter(region or "-"))
    handler._moorage_agent = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
