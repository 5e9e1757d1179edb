"""Backoff: how long to wait before retrying a message that failed without a given delay.

Used for a nack that names no delay and for a message that hit its time limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar, Protocol


class BackoffPolicy(Protocol):
    kind: ClassVar[str]
    name: ClassVar[str]

    def delay(self, attempt: int, base: float, cap: float) -> float:
        """Seconds to wait; ``attempt`` is the one that just failed (1 = the first)."""
        ...


class Fixed:
    """The same delay every time: ``min(base, cap)``."""

    kind: ClassVar[str] = "backoff"
    name: ClassVar[str] = "fixed"

    def delay(self, attempt: int, base: float, cap: float) -> float:
        return max(0.0, min(base, cap))


class RandomSource(Protocol):
    """Where jitter comes from: the ``random`` module, or a ``random.Random``."""

    def uniform(self, a: float, b: float) -> float: ...


class Exponential:
    """``min(cap, base * 2 ** (attempt - 1))`` times a jitter factor in [0.9, 1.1].

    The jitter stays within +-10% so schedules are predictable; a delay at the cap may
    therefore exceed it by up to 10%. Never negative; base 0 gives 0. The jitter is
    drawn from ``rng``: by default the ``random`` module (so ``random.seed`` fixes
    it), or a ``random.Random`` of the caller's for a test to fix on its own.
    """

    kind: ClassVar[str] = "backoff"
    name: ClassVar[str] = "exponential"

    def __init__(self, rng: RandomSource | None = None) -> None:
        self._rng: RandomSource = rng if rng is not None else random

    def delay(self, attempt: int, base: float, cap: float) -> float:
        steps = max(attempt, 1) - 1
        # 2.0 ** 1024 overflows a float; by then any finite cap has long been reached.
        raw = cap if steps >= 1024 else min(cap, base * 2.0**steps)
        return max(0.0, raw * self._rng.uniform(0.9, 1.1))


BACKOFF_POLICIES: dict[str, Callable[[], BackoffPolicy]] = {
    Fixed.name: Fixed,
    Exponential.name: Exponential,
}
