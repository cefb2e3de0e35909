"""Reading what the Docker Engine answers for a container's or a service's logs.

Both ``GET /containers/{id}/logs`` and ``GET /services/{id}/logs`` with ``timestamps=1`` answer
lines ``<RFC 3339 nano timestamp> <text>``, multiplexed in frames that docker-py unwraps
(``stream=True`` yields each frame's payload). A frame is usually one line, but a long line
arrives split over several frames, and a frame may hold several lines: lines are re-assembled
here, with a bound on how much of one line is buffered.

The Engine's ``since`` takes whole or fractional seconds, and a float cannot hold a
nanosecond timestamp of today exactly; so the Engine is asked from the cursor's whole second
(:func:`engine_since`) and the lines at or before the cursor itself are dropped here, which
makes ``since`` exact and exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from moorage.protocol.logs import MAX_LINE_CHARS, LogLine, timestamp_ns

#: Bytes of one line kept while waiting for its end: the rest of it is dropped (the line is
#: cut to MAX_LINE_CHARS characters later anyway; UTF-8 takes at most 4 bytes a character).
_MAX_PENDING = 4 * MAX_LINE_CHARS + 64


def engine_since(since: str | None) -> int | None:
    """The Engine's ``since`` parameter for a cursor: its whole second (``None``: no cursor)."""
    if since is None:
        return None
    return max(timestamp_ns(since) // 1_000_000_000, 1)


def engine_log_lines(frames: Iterable[bytes], *, since: str | None = None) -> Iterator[LogLine]:
    """The lines of an Engine log stream (``timestamps=1``), those after ``since`` only."""
    after = timestamp_ns(since) if since is not None else None
    pending = b""
    overflow = False
    for frame in frames:
        pending += frame
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            raw, pending = pending[:end], pending[end + 1:]
            if overflow:  # the rest of a line already sent (cut) as far as it was kept
                overflow = False
                continue
            line = _line(raw, after)
            if line is not None:
                yield line
        if len(pending) > _MAX_PENDING:
            line = _line(pending[:_MAX_PENDING], after)
            if line is not None and not overflow:
                yield line
            pending, overflow = b"", True
    if pending and not overflow:
        line = _line(pending, after)
        if line is not None:
            yield line


def _line(raw: bytes, after: int | None) -> LogLine | None:
    text = raw.decode("utf-8", "replace").removesuffix("\r")
    stamp, _, rest = text.partition(" ")
    try:
        at = timestamp_ns(stamp)
    except ValueError:
        return LogLine(at="", text=text) if after is None else None
    if after is not None and at <= after:
        return None
    return LogLine(at=stamp, text=rest)
