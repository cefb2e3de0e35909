"""Exponential backoff with jitter, shared by the sync loop and the deployer's reports."""

from __future__ import annotations

import random
from collections.abc import Callable

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.2


class Backoff:
    """Exponential backoff with jitter, so many agents do not retry in lockstep after an
    outage of the control plane."""

    def __init__(
        self, *, initial: float = BACKOFF_INITIAL, maximum: float = BACKOFF_MAX,
        jitter: float = BACKOFF_JITTER, rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rand = rand
        self.attempts = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call doubles the base up to the maximum."""
        base = min(self.maximum, self.initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return base * (1 + self.jitter * (2 * self.rand() - 1))

    def reset(self) -> None:
        """After a success, the next failure starts again from the initial delay."""
        self.attempts = 0
