"""Latency histograms and the open-loop schedule of ``python -m perf latency``.

Values are kept in an HdrHistogram (the ``hdrhistogram`` package, ``hdrh``) in
whole microseconds with 3 significant digits, from 1 µs to one hour: any
reported percentile is within 0.1 % of the exact one.

Coordinated omission: a producer that waits for its own sends cannot send while
the system stalls, so a closed-loop measurement records one slow message where a
real client at that rate would have seen hundreds. Here message ``i`` has an
*intended* send time ``t0 + i / rate`` fixed before the run starts, every
latency is measured from that time (not from when the send really happened), and
a producer that falls behind sends everything that is due at once when it can.
The time a message waited for its late send counts, as it would for a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SUMMARY_KEYS = ("p50", "p90", "p99", "p99.9", "max")

# The first 16 bytes of a latency body: its index in the run and its intended send time
# (time.monotonic(), one clock for every process on Linux).
HEAD = struct.Struct(">Qd")


class LatencyHistogram:
    """Latencies in microseconds; record in seconds, read percentiles in microseconds."""

    def __init__(self) -> None:
        self.h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record(self, seconds: float) -> None:
        us = round(seconds * 1e6)
        self.h.record_value(min(max(us, LOWEST_US), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self.h.get_total_count())

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100), in µs; 0 when nothing was recorded."""
        if not self.count:
            return 0
        return int(self.h.get_value_at_percentile(p))

    def count_at_least(self, seconds: float) -> int:
        """How many recorded values are at least ``seconds`` (to the histogram's precision)."""
        floor = self.h.get_lowest_equivalent_value(max(LOWEST_US, round(seconds * 1e6)))
        return sum(int(item.count_at_value_iterated_to)
                   for item in self.h.get_recorded_iterator()
                   if item.value_iterated_to >= floor)

    def max(self) -> int:
        return int(self.h.get_max_value()) if self.count else 0

    def summary(self) -> dict[str, Any]:
        """``count``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` and ``mean`` in µs."""
        out: dict[str, Any] = {"count": self.count}
        for p in PERCENTILES:
            out[f"p{p:g}"] = self.percentile(p)
        out["max"] = self.max()
        out["mean"] = round(float(self.h.get_mean_value()), 1) if self.count else 0.0
        return out

    def spectrum(self, ticks_per_half: int = 5) -> list[tuple[float, int]]:
        """``(percentile, µs)`` points of the whole distribution, denser towards the tail
        (HdrHistogram's percentile iteration); empty when nothing was recorded."""
        if not self.count:
            return []
        return [(float(item.percentile_level_iterated_to), int(item.value_iterated_to))
                for item in self.h.get_percentile_iterator(ticks_per_half)]

    def add(self, other: LatencyHistogram) -> None:
        self.h.add(other.h)

    def encode(self) -> bytes:
        """A compact form to send between processes (HdrHistogram's own encoding)."""
        return bytes(self.h.encode())

    @classmethod
    def decode(cls, data: bytes) -> LatencyHistogram:
        out = cls()
        if data:
            out.h.add(HdrHistogram.decode(data))
        return out


class Schedule:
    """Open-loop send times: message ``i`` is due at ``t0 + i / rate``."""

    def __init__(self, t0: float, rate: float, messages: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.t0 = t0
        self.rate = rate
        self.messages = messages

    def due(self, i: int) -> float:
        return self.t0 + i / self.rate

    def due_by(self, now: float) -> int:
        """How many messages are due at ``now``: indexes ``0 .. due_by(now) - 1``."""
        if now < self.t0:
            return 0
        k = math.floor((now - self.t0) * self.rate)  # the last index due, give or take a ulp
        while k + 1 < self.messages and self.due(k + 1) <= now:
            k += 1
        while k >= 0 and self.due(k) > now:
            k -= 1
        return min(self.messages, k + 1)


class OpenLoop:
    """A producer's record of one open-loop run.

    ``take_due(upto, now)`` when the producer wakes: the indexes to send now,
    every message due by ``now`` that was not sent yet; the gap between ``now``
    and each one's intended time is the load generator's own lag.
    ``confirmed(i, now)`` when message ``i``'s confirm arrives: the latency
    recorded is ``now - due(i)``, so time spent waiting behind a stall, in the
    system or in the producer, counts (the coordinated-omission correction).
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.lag = LatencyHistogram()
        self.confirm = LatencyHistogram()
        self.next = 0  # the lowest index not sent yet
        self.n_confirmed = 0
        self.t_last_sent = 0.0
        self.t_last_confirm = 0.0

    def take_due(self, upto: int, now: float) -> range:
        """Indexes to send at ``now``: all due by then, and at least those below ``upto``."""
        due = self.schedule.due
        todo = range(self.next, max(upto, self.schedule.due_by(now)))
        for i in todo:
            self.lag.record(now - due(i))
        if todo:
            self.next = todo.stop
            self.t_last_sent = now
        return todo

    def confirmed(self, i: int, now: float) -> None:
        self.confirm.record(now - self.schedule.due(i))
        self.n_confirmed += 1
        if now > self.t_last_confirm:
            self.t_last_confirm = now

    @property
    def done(self) -> bool:
        return self.n_confirmed >= self.schedule.messages


def make_body(i: int, due: float, size: int) -> bytes:
    """A body of ``size`` bytes that carries its index and its intended send time."""
    return HEAD.pack(i, due) + b"x" * (size - HEAD.size)


def read_body(body: bytes) -> tuple[int, float]:
    """``(index, intended send time)`` from a body made by :func:`make_body`."""
    i, due = HEAD.unpack_from(body)
    return int(i), float(due)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1  # the clock of time.monotonic()
_TFD_TIMER_ABSTIME = 1


class Pacer:
    """Calls ``fire(upto)`` on an asyncio loop whenever messages fall due.

    ``upto`` is the count of messages due when the loop woke. The loop's own
    timers have millisecond steps (uvloop's) or round their wait up to one, so
    the pacer arms a Linux timerfd on CLOCK_MONOTONIC at the next intended time,
    with nanosecond resolution, and the loop wakes on its descriptor. Without
    timerfd (not Linux) it falls back to ``loop.call_at``. If the loop wakes
    late, everything due by then goes at once and keeps its intended time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, schedule: Schedule,
                 fire: Callable[[int], None]) -> None:
        self.loop = loop
        self.schedule = schedule
        self.fire = fire
        self.handed = 0
        self.stopped = False
        self._fd = -1
        self._libc: Any = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._libc, self._fd = libc, fd
                self.loop.add_reader(fd, self._on_timer)
        self._arm(self.schedule.due(0))

    def _arm(self, when: float) -> None:
        if self._fd < 0:
            delay = max(0.0, when - time.monotonic())
            self._handle = self.loop.call_at(self.loop.time() + delay, self._on_timer)
            return
        sec = int(when)
        nsec = max(1, int((when - sec) * 1e9))  # all zero would disarm the timer
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    def _on_timer(self) -> None:
        if self.stopped:
            return
        if self._fd >= 0:
            try:
                os.read(self._fd, 8)
            except BlockingIOError:  # woken by a stale edge: nothing expired
                return
        s = self.schedule
        upto = s.due_by(time.monotonic())
        if upto > self.handed:
            self.handed = upto
            self.fire(upto)
        if self.handed >= s.messages:
            self.stop()
        elif not self.stopped:
            self._arm(s.due(self.handed))

    def stop(self) -> None:
        self.stopped = True
        if self._handle is not None:
            self._handle.cancel()
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
