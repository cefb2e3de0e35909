"""Capped exponential backoff with full jitter, shared by the sync loop and the reports."""

from __future__ import annotations

import random
from collections.abc import Callable

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: The sync loop's first retries wait up to this long: after a control-plane restart, a fleet
#: of agents that lost their long polls at the same instant comes back spread over it.
RECONNECT_SPREAD = 5.0


class Backoff:
    """Capped exponential backoff with full jitter.

    Retry ``n`` (from 0, counted since the last success) waits a uniform random time in
    ``[0, min(maximum, max(spread, initial · 2ⁿ)))``. Full jitter (rather than ±20 % around the
    doubling) is what keeps agents that failed together from retrying together: after an
    outage of the control plane, a thousand agents arrive spread over the whole window instead
    of in waves. ``spread`` sets the smallest window, for the first retries after a success.
    ``rand`` is injectable so tests can check delays without sleeping.
    """

    def __init__(
        self, *, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX,
        spread: float = 0.0, rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.spread = spread
        self.rand = rand
        self.attempts = 0

    def ceiling(self) -> float:
        """The longest the next delay can be."""
        return min(self.maximum, max(self.spread, self.initial * 2 ** min(self.attempts, 32)))

    def next_delay(self, *, retry_after: float | None = None) -> float:
        """The wait before the next attempt; each call doubles the window up to the maximum.

        ``retry_after`` (a server's ``Retry-After``) is a floor, plus up to as much again at
        random, so that the agents a busy server turned away do not all come back at once.
        """
        delay = self.ceiling() * self.rand()
        self.attempts += 1
        if retry_after is not None and retry_after > 0:
            delay = max(delay, retry_after * (1 + self.rand()))
        return delay

    def reset(self) -> None:
        """After a success, the next failure starts again from the first window."""
        self.attempts = 0
