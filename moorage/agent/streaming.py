"""Reading a blocking stream (an Engine API answer) with an overall deadline.

docker-py streams a pull or a build without any timeout of its own, and the agent runs
deploys inline in its sync loop, so every such stream is read in a worker thread and handed
to the caller's thread through a queue, with one deadline for the whole of it. On a timeout
the caller closes the client, which cuts the abandoned worker's connection.

:func:`read_ticking` is the other half a follow needs: items as they come, and a tick while
the source is quiet, so lines batched for an upload go out on time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any


class DeadlineExceeded(Exception):
    """The stream did not end before its deadline."""


def read_with_deadline[T](
    open_stream: Callable[[], Iterable[T]], *, timeout: float, name: str
) -> Iterator[T]:
    """Yield the items of ``open_stream()`` in the caller's thread, within ``timeout`` seconds.

    ``open_stream`` runs in a daemon thread named ``name``; whatever it (or iterating its
    result) raises is raised here, in the caller's thread. Raises :class:`DeadlineExceeded`
    once ``timeout`` seconds have passed since the call, however busy the stream is.
    """
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def worker() -> None:
        try:
            for item in open_stream():
                events.put(("item", item))
            events.put(("done", None))
        except BaseException as exc:  # handed to the caller's thread
            events.put(("error", exc))

    deadline = time.monotonic() + timeout
    threading.Thread(target=worker, name=name, daemon=True).start()
    while True:
        try:
            kind, value = events.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            raise DeadlineExceeded(name) from None
        if kind == "done":
            return
        if kind == "error":
            raise value
        yield value


#: Items a ticking reader buffers before its thread waits for the consumer.
TICKING_BUFFER = 256


def read_ticking[T](
    items: Iterator[T], *, tick: float, name: str
) -> Generator[T | None, None, None]:
    """Yield the items of ``items`` (read in a daemon thread named ``name``) as they come,
    and ``None`` whenever ``tick`` seconds pass without one, so the caller can act on time
    (flush what it batched) while the source is quiet.

    Whatever iterating ``items`` raises is raised here. Closing this generator (or leaving a
    ``for`` over it) tells the reader to stop at its next item; it then closes ``items`` in
    its own thread. The buffer between the two is bounded (:data:`TICKING_BUFFER`).
    """
    events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=TICKING_BUFFER)
    stop = threading.Event()

    def put(event: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                events.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    break
            else:
                put(("done", None))
        except BaseException as exc:  # handed to the caller's thread
            put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    threading.Thread(target=worker, name=name, daemon=True).start()
    try:
        while True:
            try:
                kind, value = events.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
