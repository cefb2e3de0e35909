"""App logs on the wire (``docs/sync.md``, "App logs"): the request an agent is handed, the
bounds both sides enforce, and the cursor that lets a follow resume where it stopped.

A member asks the control plane for an app's output; the control plane cannot call an agent,
so it writes a short-lived *log request* and announces it in the region's ``changes`` answer
(op ``logs.request``). The agent reads the engine's log, masks the app's secret values, and
uploads the lines in numbered chunks to ``POST /agent/logs/{id}``; the last chunk is ``final``
and carries the ``cursor`` to ask for what comes next.

The cursor is the engine's own timestamp of the last line sent: RFC 3339 in UTC with up to nine
fractional digits (``2026-11-29T10:11:12.123456789Z``), exactly as the Docker Engine stamps a
line. ``since`` is exclusive: a request with ``since=C`` gets the lines stamped after ``C``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Lines of a tail when none is asked for, and at most.
DEFAULT_TAIL = 100
MAX_TAIL = 1000
#: A line longer than this is cut (after masking, so a secret is never half shown).
MAX_LINE_CHARS = 2000
#: The text of one request's answer (UTF-8 bytes of its lines) stops here: a tail keeps the
#: newest lines that fit and says it was truncated; a follow ends its window early.
MAX_ANSWER_BYTES = 256 * 1024
#: How long one request may keep streaming new lines; a follow is a chain of such windows,
#: of FOLLOW_WINDOW seconds each when the CLI or the App page follows.
MAX_FOLLOW_SECONDS = 30
FOLLOW_WINDOW = 20
#: The most lines one uploaded chunk may carry.
MAX_CHUNK_LINES = 500
#: What a cut line ends with.
CUT_MARK = " …"

_TIMESTAMP_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp; ``ValueError`` if it is not one.

    Python's ``datetime`` keeps microseconds only, and two lines an app prints within a
    microsecond must still be told apart, so the fraction is read by hand.
    """
    match = _TIMESTAMP_RE.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def format_timestamp(ns: int) -> str:
    """The RFC 3339 UTC form of ``ns`` nanoseconds since the epoch, with all nine digits."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


@dataclass(frozen=True)
class LogLine:
    """One line an app printed: the engine's timestamp (RFC 3339, UTC, nanoseconds: the
    follow cursor) and the text without its newline."""

    at: str
    text: str


def cut_line(text: str) -> str:
    """``text`` storable anywhere and no longer than :data:`MAX_LINE_CHARS` (plus the cut
    mark): NUL (which PostgreSQL refuses in text and JSON) becomes U+FFFD, as undecodable
    bytes already are, and a lone surrogate (which UTF-8 cannot encode) a ``?``."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    text = text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text
    if len(text) <= MAX_LINE_CHARS:
        return text
    return text[:MAX_LINE_CHARS] + CUT_MARK


@dataclass(frozen=True)
class LogRequestSpec:
    """The ``request`` of a ``logs.request`` op: which app, and which of its lines.

    ``tail`` is the number of newest lines (``None``: every line after ``since``, which is
    then required); ``since`` a cursor (exclusive); ``follow`` the seconds to keep streaming
    new lines after those (0: answer once).
    """

    id: int
    account_id: int
    app_id: int
    app: str
    tail: int | None = DEFAULT_TAIL
    since: str | None = None
    follow: int = 0

    def to_payload(self) -> dict[str, Any]:
        """The op's ``request`` object."""
        return {"id": self.id, "account_id": self.account_id, "app_id": self.app_id,
                "app": self.app, "tail": self.tail, "since": self.since,
                "follow": self.follow}

    @classmethod
    def from_payload(cls, value: Any) -> LogRequestSpec:
        """Check the shape and the bounds; ``ValueError`` naming the field that is wrong."""
        if not isinstance(value, dict):
            raise ValueError("request is not an object")
        ints = {}
        for name in ("id", "account_id", "app_id", "follow"):
            item = value.get(name)
            if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise ValueError(f"request.{name} is not a non-negative integer")
            ints[name] = item
        app = value.get("app")
        if not isinstance(app, str) or not app:
            raise ValueError("request.app is empty")
        tail, since = value.get("tail"), value.get("since")
        if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool)
                                 or not 0 <= tail <= MAX_TAIL):
            raise ValueError(f"request.tail is not between 0 and {MAX_TAIL}")
        if since is not None:
            if not isinstance(since, str):
                raise ValueError("request.since is not a timestamp")
            timestamp_ns(since)
        if tail is None and since is None:
            raise ValueError("request has neither a tail nor a since")
        if ints["follow"] > MAX_FOLLOW_SECONDS:
            raise ValueError(f"request.follow is more than {MAX_FOLLOW_SECONDS} seconds")
        return cls(id=ints["id"], account_id=ints["account_id"], app_id=ints["app_id"],
                   app=app, tail=tail, since=since, follow=ints["follow"])
