"""Reading a blocking stream (an Engine API answer) with an overall deadline.

docker-py streams a pull or a build without any timeout of its own, and the agent runs
deploys inline in its sync loop, so every such stream is read in a worker thread and handed
to the caller's thread through a queue, with one deadline for the whole of it. On a timeout
the caller closes the client, which cuts the abandoned worker's connection.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
