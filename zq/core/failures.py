"""Failed attempts: the history they leave, retries and their backoff, dead letters,
moves between queues, delays. No I/O.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from zq import history
from zq.core.model import Msg, Queue
from zq.core.results import Outcome
from zq.core.state import (
    DEAD_AT,
    HISTORY,
    ORIGIN,
    REASON,
    CoreState,
    _packb,
    pack_opts,
)
from zq.persistence.base import (
    WAITING,
    Rewrite,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import DLQ_SUFFIX


class Failures(CoreState):
    """Attempts that did not end in an ack, and where their messages go."""

    def _record(self, m: Msg, outcome: str, reason: str, consumer: str, now: float) -> None:
        """Add an attempt that did not end in an ack to the message's history header.

        The headers stay within what a DELIVER of the message can carry
        (:mod:`zq.history` trims the history when they would not).
        """
        wall = self.wall_offset
        entry: dict[str, Any] = {"attempt": m.attempts, "outcome": outcome,
                                 "end": round(now + wall, 3)}
        start = getattr(m, "start", 0.0)  # unset if it was never delivered
        if start:
            entry["start"] = round(start + wall, 3)
        if consumer:
            entry["consumer"] = consumer
        if reason:
            entry["reason"] = history.cap(reason, history.MAX_REASON)
        m.headers, m.hsize = history.append(m.headers, entry, self._budget(m))
        m.start = 0.0
        if m.deadline:
            m.deadline = 0.0

    def _retry(self, m: Msg, reason: str, now: float, delay: float | None = None,
               back: list[Msg] | None = None) -> None:
        """A failed attempt (already recorded): try again, or dead-letter if that was the last.

        A message to retry at once goes to ``back`` (the caller puts them all back
        at the head of their queues in id order), or back at once without it.
        """
        q = m.q
        if m.attempts >= self._max_attempts(m):
            self._dead(m, f"{m.attempts} attempt(s) failed; last: {reason}", now)
            return
        if delay is None:
            s = q.settings
            delay = q.backoff.delay(m.attempts, s.retry_delay, s.retry_max_delay) \
                if s.retry_delay else 0.0
        if delay > 0:
            self._rewrite(m, now + delay + self.wall_offset)
            self._delay(m, now + delay)
        else:
            self._rewrite(m)
            if back is None:
                self._requeue_front([m])
            else:
                back.append(m)

    def _dead(self, m: Msg, reason: str, now: float) -> None:
        """Move a message (taken off every structure) to its dead-letter queue, or drop it."""
        q = m.q
        if q.settings.result_ttl or m.id in self.results.waiters:
            last = self.results.get(m.id, now)
            error = last.data.get("error") if last is not None else None
            self.outcome(m, "dead", {"error": error or {"type": "Dead", "message": reason,
                                                        "traceback": ""},
                                     "attempt": m.attempts, "reason": reason,
                                     "history": (m.headers or {}).get(HISTORY) or []}, now)
        q.dead += 1
        self.counters["dead"] += 1
        q.mem_bytes -= len(m.body)
        target = q.dlq
        if target is None or target == q.name:
            self.journal.delete([m.id])
            return
        if target in self.streams:  # a stream since: its own dead-letter queue instead
            target = q.name + DLQ_SUFFIX
        d = self._queue(target)
        headers = dict(m.headers) if m.headers else {}
        headers[ORIGIN] = q.name
        headers[REASON] = history.cap(reason, history.MAX_REASON)
        headers[DEAD_AT] = round(now + self.wall_offset, 3)
        m.headers, m.hsize = history.fit(headers, self._budget(m))
        m.attempts = 0
        m.opts = None
        m.exp = 0.0
        if m.deadline:
            m.deadline = 0.0
        m.t = now
        self.move(m, d)

    def outcome(self, m: Msg, state: str, data: dict[str, Any], now: float) -> None:
        """Keep what became of ``m`` for its queue's result_ttl; answer those waiting."""
        q = m.q
        ttl = q.settings.result_ttl
        if ttl:
            self.results.put(m.id, Outcome(state, q.name, data, now + ttl))
            self.journal.result(m.id, q.name, state, _packb(data), now + ttl + self.wall_offset)
        if state in ("succeeded", "dead") and m.id in self.results.waiters:
            # Those waiting hear the final state even when the queue keeps no results.
            for w in self.results.take_waiters(m.id):
                self._after_commit(w.identity, codec.encode(f.ManageReply(
                    w.req, {"id": m.id, "queue": q.name, "state": state, **data})))

    def move(self, m: Msg, d: Queue) -> None:
        """Put a message taken off its queue at the back of queue ``d`` and stage that."""
        m.q = d
        m.lane = d.default
        if m.suspect:
            m.suspect = False  # a dead letter or a redriven one starts afresh
        self._rewrite(m)
        if d.disk and m.id > d.cursor:
            # Beyond the cursor of a backlog on disk: its row may not be committed when
            # the next page is read, so it stays in memory and paging skips it.
            d.moved_in.add(m.id)
        d.default.msgs.append(m)
        d.mem_bytes += len(m.body)
        self._dirty.add(d)

    def delayed_entries(self) -> list[tuple[float, int, Msg]]:
        """Every delayed message's (due, id, message), in no particular order."""
        return list(self._delayed)

    def remove_delayed(self, q: Queue) -> list[Msg]:
        """Take ``q``'s delayed messages out of the timer heaps."""
        taken = [e[2] for e in self.delayed_entries() if e[2].q is q]
        self._delayed = [e for e in self._delayed if e[2].q is not q]
        heapq.heapify(self._delayed)
        q.delayed = 0
        return taken

    def _delay(self, m: Msg, due: float) -> None:
        if m.q.forward:  # the uplink takes it now, its due time with it (zq.core.uplink)
            m.due = due
            spare = self.uplink_spare.get(m.q)
            if spare is None:
                spare = self.uplink_spare[m.q] = deque()
            spare.append(m)
            if len(spare) > 1 and spare[-2].id > m.id:  # rare: keep them in id order
                ordered = sorted(spare, key=lambda x: x.id)
                spare.clear()
                spare.extend(ordered)
            return
        heapq.heappush(self._delayed, (due, m.id, m))
        m.q.delayed += 1

    def _requeue_front(self, msgs: list[Msg]) -> None:
        """Put messages back at the head of their lanes, oldest first (suspects: at the
        head of their queue's suspects, which go out one at a time)."""
        if not msgs:
            return
        if len(msgs) > 1:
            msgs.sort(key=lambda m: m.id, reverse=True)
        for m in msgs:
            (m.q.suspects if m.suspect else m.lane.msgs).appendleft(m)
            self._dirty.add(m.q)

    def _expire(self, m: Msg, now: float) -> None:
        self.counters["expired"] += 1
        self._record(m, "expired", "", "", now)
        self._dead(m, "expired", now)

    def _undeliver(self, m: Msg) -> None:
        """A delivery that did not count: its attempt number goes back, stored so."""
        m.attempts -= 1
        if m.deadline:
            m.deadline = 0.0
        self.journal.attempts([m.id], [m.attempts], 0.0, WAITING)

    def _rewrite(self, m: Msg, ready_at: float = 0.0) -> None:
        """Stage a message's whole state: queue, attempts, due time, headers, options."""
        if self.journal.durable:  # (packing the options costs: only when stored)
            self.journal.rewrite(Rewrite(m.id, m.q.name, m.attempts, ready_at, m.headers,
                                         pack_opts(m, self.wall_offset)))
