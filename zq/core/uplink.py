"""Queues forwarded to a central cluster by the uplink (docs/EDGE.md). No I/O.

An edge broker with ``--uplink`` stores every message as always; those of the queues
``--uplink-queues`` names (``q.forward``) are never delivered here. The uplink
(``zq.uplink.link``) takes them in *runs*, sends each run as one PUBLISH frame to the
centre as an idempotent producer (PROTOCOL.md 11.4: the producer id is this broker's,
the seq the run's first id), and a run is deleted here once the centre confirmed it.

A run is the messages of one PUBLISH frame received here (or the one message a
schedule fired): one queue, one set of options, consecutive ids. Each such frame of a
forwarded queue is followed by an id nobody gets (``CoreState.take_ids``), and a
restart skips one id too, so a run is also a *maximal* run of consecutive ids in its
queue. After a crash the uplink therefore finds, in what the store gives back, the
same runs it had sent, and sends each again with the same seq and the same number of
bodies: a resend, which the centre confirms without storing it twice if it had it.
Nothing published later ever joins a run.

A run is taken whole, never split. One whose last message is the last of its queue in
memory while more of the queue waits on disk may go on there: it waits for the page.
Delayed messages never wait on the broker's timers: ``Failures._delay`` puts them in the
queue's spare pool (``uplink_spare``, in id order), from which they are taken at once
(their due time travels as ``eta_ms``), and the
TTL of a message travels as what is left of it: forwarded queues expire nothing here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from zq.core.model import Msg, Queue
from zq.core.moves import Moves
from zq.persistence.base import Recovered
from zq.protocol import frames as f

_EMPTY: deque[Msg] = deque()  # the spare pool of a queue that has none


class Run:
    """One PUBLISH frame's worth of a forwarded queue: taken, not yet confirmed."""

    __slots__ = ("msgs", "q", "size")

    def __init__(self, q: Queue, msgs: list[Msg], size: int) -> None:
        self.q = q
        self.msgs = msgs
        self.size = size  # bodies and headers, in bytes

    @property
    def seq(self) -> int:
        return self.msgs[0].id

    def halves(self) -> tuple[Run, Run]:
        """This run in two (the centre refused it as too large): each half is sent with
        its own first id as seq, and the same halves come again after a crash, since the
        whole is refused again first (it was never stored)."""
        h = len(self.msgs) // 2
        a, b = self.msgs[:h], self.msgs[h:]
        size = sum(len(m.body) + m.hsize for m in a)
        return Run(self.q, a, size), Run(self.q, b, self.size - size)


class Uplinks(Moves):
    """The forwarded queues' side of the uplink: runs out, confirms and refusals in."""

    def recover(self, rec: Recovered, now: float) -> None:
        super().recover(rec, now)
        if self.forwards:
            self.next_id += 1  # the id after the last stored frame stays unused

    def forwarded_queues(self) -> list[Queue]:
        """The forwarded queues, each call starting one further along: a long backlog in
        one queue does not hold up the others."""
        live = self.queues
        qs = [q for name, q in self.uplink_queues.items() if live.get(name) is q]
        if len(qs) != len(self.uplink_queues):  # some were deleted (and maybe made again)
            self.uplink_queues = {q.name: q for q in live.values() if q.forward}
            qs = list(self.uplink_queues.values())
        if len(qs) > 1:
            self.uplink_turn = k = (self.uplink_turn + 1) % len(qs)
            qs = qs[k:] + qs[:k]
        return qs

    def uplink_take(self, max_msgs: int, max_bytes: int) -> list[Run]:
        """Whole runs of forwarded queues, oldest first within a queue, up to ``max_msgs``
        messages and ``max_bytes`` (at least one run if any is ready), taken out of their
        queues. A queue with a backlog on disk is paged in for the next call."""
        out: list[Run] = []
        n = size = 0
        for q in self.forwarded_queues():
            if q.disk:
                self.draining.add(q)  # paged in without consumers
            if q.paused:
                continue
            for pool in (*(ln.msgs for ln in q.order), self.uplink_spare.get(q, _EMPTY)):
                while pool:
                    k, cost = self._run_at(q, pool)
                    if not k:
                        self.uplink_waiting.add(q)
                        break
                    if out and (n + k > max_msgs or size + cost > max_bytes):
                        return out
                    msgs = [pool.popleft() for _ in range(k)]
                    q.mem_bytes -= sum(len(m.body) for m in msgs)
                    out.append(Run(q, msgs, cost))
                    n += k
                    size += cost
        return out

    @staticmethod
    def _run_at(q: Queue, pool: deque[Msg]) -> tuple[int, int]:
        """How many messages the run at the head of ``pool`` has, and their size; 0 if it
        may go on in the queue's backlog on disk."""
        first = pool[0].id
        k = cost = 0
        for m in pool:
            if m.id != first + k:
                break
            k += 1
            cost += len(m.body) + m.hsize
        if q.disk and first + k - 1 >= q.cursor:
            return 0, 0
        return k, cost

    def uplink_stored(self, run: Run) -> None:
        """The centre confirmed ``run``: its messages are deleted here."""
        self.journal.forget(run.msgs)
        run.q.forwarded += len(run.msgs)
        self.counters["forwarded"] += len(run.msgs)

    def uplink_refused(self, run: Run, reason: str, now: float) -> None:
        """The centre refused ``run`` for good (FRAME_TOO_LARGE, INVALID_ARGUMENT, ...): its
        messages are dead here, with the reason in their history."""
        self.counters["uplink_refused"] += len(run.msgs)
        for m in run.msgs:
            m.q.mem_bytes += len(m.body)  # taken off at uplink_take; _dead takes it off
            self._record(m, "refused", reason, "uplink", now)
            self._dead(m, f"the centre refused it: {reason}", now)

    def uplink_options(self, run: Run, now: float) -> f.Options | None:
        """The options ``run``'s PUBLISH carries: its own, what is left of its TTL (at
        least 1 ms: an expired message expires at the centre) and its due time."""
        m = run.msgs[0]
        o = m.opts
        d: dict[str, Any] = {} if o is None else {
            k: v for k, v in (("priority", o.priority), ("tenant", o.tenant),
                              ("max_attempts", o.max_attempts),
                              ("time_limit_ms", o.time_limit_ms),
                              ("dedup_id", o.dedup_id)) if v is not None}
        if m.exp:
            d["ttl_ms"] = max(1, int((m.exp - now) * 1000))
        if m.due > now:
            d["eta_ms"] = int((m.due + self.wall_offset) * 1000) + 1
        if len(run.msgs) > 1:
            d.pop("dedup_id", None)  # a dedup id comes with a frame of one body only
        return f.Options(**d) if d else None

    def uplink_backlog(self, now: float) -> dict[str, Any]:
        """What waits here to be forwarded (besides what the uplink has in flight): per
        queue and in all, and the oldest one's age in seconds."""
        queues: dict[str, int] = {}
        oldest = 0.0
        for q in self.forwarded_queues():
            spare = self.uplink_spare.get(q, _EMPTY)
            n = q.ready_count() + q.disk + q.staged + len(spare)
            if n:
                queues[q.name] = n
            for t in (q.oldest(), spare[0].t if spare else 0.0):
                if t and (not oldest or t < oldest):
                    oldest = t
        return {"backlog": sum(queues.values()), "queues": dict(sorted(queues.items())[:50]),
                "oldest": oldest}
