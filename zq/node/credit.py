"""How much credit a worker asks for, with no I/O and no clock: the worker passes
the seconds it measured.

Credit starts at ``concurrency`` per queue and grows only while handling is
short compared with the broker's round trip, so a worker does not hoard
messages that another idle worker could run.
"""

from __future__ import annotations

import math

MAX_PREFETCH = 1000  # automatic credit never grows past this (or concurrency, if larger)
MIN_SAMPLES = 8  # completions measured before the credit may grow
_EWMA = 0.2  # weight of the newest sample in the moving averages


def auto_prefetch(concurrency: int, handle_time: float, round_trip: float) -> int:
    """Credit that keeps ``concurrency`` slots busy without hoarding.

    While a slot's next message travels (one round trip), a slot finishing
    every ``handle_time`` seconds needs ``round_trip / handle_time`` more in the
    buffer. Below half a task per slot the extra is not worth holding messages
    other workers could take, so the credit stays at ``concurrency``.
    """
    cap = max(concurrency, MAX_PREFETCH)
    if handle_time <= 0:
        return cap
    ratio = round_trip / handle_time
    if ratio < 0.5:
        return concurrency
    return min(cap, concurrency + math.ceil(concurrency * ratio))


class CreditSizer:
    """Moving averages of a task's handling time and of its completion's round trip."""

    __slots__ = ("concurrency", "handle_time", "round_trip")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.handle_time = 0.0  # seconds, moving average
        self.round_trip = 0.0  # seconds for a completion's reply, moving average

    def fold(self, took: float, round_trip: float) -> None:
        """Take in one handling time and one round trip (the first sets both averages)."""
        if self.handle_time == 0.0:
            self.handle_time, self.round_trip = took, round_trip
        else:
            self.handle_time += _EWMA * (took - self.handle_time)
            self.round_trip += _EWMA * (round_trip - self.round_trip)

    def grow_to(self, current: int, max_credit: int, completed: int) -> int | None:
        """The credit to grow a consumer to from ``current`` (None: keep it).

        Not before ``MIN_SAMPLES`` completions, and never past the broker's
        ``max_credit`` (unless the credit is already beyond it).
        """
        if completed < MIN_SAMPLES:
            return None
        target = auto_prefetch(self.concurrency, self.handle_time, self.round_trip)
        target = min(target, max(current, max_credit))
        return target if target > current else None
