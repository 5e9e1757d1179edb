"""Message outcomes for queues that keep results (``result_ttl`` > 0), and waiters on them.

An outcome is ``succeeded`` (with the consumer's result), ``failed`` (the last
attempt failed and the message waits to be retried, with the error), or ``dead``
(with the last error). The broker keeps each for its queue's ``result_ttl`` seconds,
in memory and in the store. ``wait`` requests are answered when an outcome becomes
final or their time is up. No I/O: the core stages what to store and send.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"succeeded", "dead"})


@dataclass(slots=True)
class Outcome:
    state: str
    queue: str
    data: dict[str, Any]  # result, error, attempt, worker
    expires: float  # monotonic


@dataclass(slots=True)
class Waiter:
    identity: bytes
    req: int
    queue: str
    deadline: float  # monotonic
    done: bool = False


@dataclass
class Results:
    by_id: dict[int, Outcome] = field(default_factory=dict)
    waiters: dict[int, list[Waiter]] = field(default_factory=dict)
    _expiry: list[tuple[float, int]] = field(default_factory=list)
    _timeouts: list[tuple[float, int, int, Waiter]] = field(default_factory=list)
    _tie: itertools.count[int] = field(default_factory=itertools.count)

    def put(self, mid: int, outcome: Outcome) -> None:
        self.by_id[mid] = outcome
        heapq.heappush(self._expiry, (outcome.expires, mid))

    def get(self, mid: int, now: float) -> Outcome | None:
        o = self.by_id.get(mid)
        return o if o is not None and o.expires > now else None

    def wait(self, mid: int, w: Waiter) -> None:
        self.waiters.setdefault(mid, []).append(w)
        heapq.heappush(self._timeouts, (w.deadline, next(self._tie), mid, w))

    def take_waiters(self, mid: int) -> list[Waiter]:
        ws = self.waiters.pop(mid, [])
        for w in ws:
            w.done = True
        return ws

    def timed_out(self, now: float) -> list[tuple[int, Waiter]]:
        out: list[tuple[int, Waiter]] = []
        t = self._timeouts
        while t and t[0][0] <= now:
            _, _, mid, w = heapq.heappop(t)
            if w.done:
                continue
            w.done = True
            ws = self.waiters.get(mid)
            if ws is not None:
                ws.remove(w)
                if not ws:
                    del self.waiters[mid]
            out.append((mid, w))
        return out

    def next_timeout(self) -> float:
        t = self._timeouts
        while t and t[0][3].done:
            heapq.heappop(t)
        return t[0][0] if t else float("inf")

    def expire(self, now: float) -> None:
        e = self._expiry
        while e and e[0][0] <= now:
            _, mid = heapq.heappop(e)
            o = self.by_id.get(mid)
            if o is not None and o.expires <= now:
                del self.by_id[mid]

    def drop_peer(self, identity: bytes) -> None:
        for mid in list(self.waiters):
            ws = [w for w in self.waiters[mid] if w.identity != identity]
            for w in self.waiters[mid]:
                if w.identity == identity:
                    w.done = True
            if ws:
                self.waiters[mid] = ws
            else:
                del self.waiters[mid]
