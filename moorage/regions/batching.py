"""Many awaiting callers, one database round: the long polls' look-ups made together.

A change wakes every poll it concerns at once, and agents come back together after one: each
poll looking at the log (or checking its token) on its own would be several queries per poll,
thousands for a fleet. A :class:`Batcher` runs a batch function over whatever calls queued up
meanwhile instead: the first caller to arrive leads, takes every queued call into one batch,
runs it (in a database thread), gives each caller its result, then hands the lead to the next
queued caller, if any. A caller that goes away (its agent disconnected) never strands the
others.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

_LEAD = object()


class _State:
    def __init__(self) -> None:
        self.pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self.leading = False


class Batcher[In, Out]:
    """``run(items)`` returns one result per item: a value, or the exception that item's
    caller gets. ``through(run)`` makes it awaitable (in the right thread)."""

    def __init__(self, run: Callable[[list[In]], list[Out | Exception]],
                 through: Callable[[Callable[[list[In]], list[Out | Exception]]],
                                   Callable[[list[In]], Awaitable[list[Out | Exception]]]]
                 ) -> None:
        self.run = run
        self.through = through
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _State] = \
            weakref.WeakKeyDictionary()

    async def call(self, item: In) -> Out:
        """The result for ``item``, from the next batch."""
        loop = asyncio.get_running_loop()
        state = self._states.setdefault(loop, _State())
        while True:
            future: asyncio.Future[Any] = loop.create_future()
            state.pending.append((item, future))
            try:
                if not state.leading:
                    state.leading = True
                    await self._lead(state, future)
                result = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.result() is _LEAD:
                    self._hand_off(state)
                future.cancel()  # no batch answers it, no hand-off picks it
                raise
            if result is _LEAD:
                continue
            if isinstance(result, Exception):
                raise result
            out: Out = result
            return out

    async def _lead(self, state: _State, own: asyncio.Future[Any]) -> None:
        try:
            await asyncio.sleep(0)  # the other callers woken with this one join the batch
            batch, state.pending = state.pending, []
            try:
                results = await self.through(self.run)([item for item, _ in batch])
            except asyncio.CancelledError:
                # This caller went away: the others' calls go back to the queue.
                state.pending[:0] = [(i, f) for i, f in batch if f is not own and not f.done()]
                raise
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            state.leading = False
            self._hand_off(state)

    @staticmethod
    def _hand_off(state: _State) -> None:
        """The next queued caller leads the next batch."""
        while state.pending and not state.leading:
            _, future = state.pending.pop(0)
            if not future.done():
                future.set_result(_LEAD)
                return
