"""Credit and settlement: CREDIT, CANCEL, ACK, NACK, RELEASE, START, EXTEND, with the
fencing of section 12.1 of PROTOCOL.md. No I/O.
"""

from __future__ import annotations

import heapq
from typing import Any

from zq.core.commits import Commits
from zq.core.model import Msg, Peer, Queue, Sub
from zq.core.state import (
    HISTORY,
)
from zq.errors import (
    InvalidArgument,
    InvalidCredit,
    StaleDelivery,
    UnknownDelivery,
)
from zq.protocol import frames as f
from zq.uplink.settings import forwarded

_NO_QUEUE = Queue("-")  # what ``queues.get`` gives for a name it lacks (not moving)


class Settlement(Commits):
    """What consumers say about their deliveries."""

    def on_credit(self, peer: Peer, frame: f.Credit) -> None:
        if self.forwards and forwarded(self.forwards, frame.queue):
            raise InvalidArgument(
                f"queue {frame.queue!r} is forwarded to the centre by this broker's uplink "
                f"(--uplink-queues): consume it there", ref=frame.queue)
        if self.moved_out or self.queues.get(frame.queue, _NO_QUEUE).moving is not None:
            moved = self.moved_away(frame.queue, frame.queue)  # consume at its new broker
            if moved is not None:
                raise moved
        sub = self._subscription(peer, frame)
        try:
            sub.window.grant(frame.n)  # a refused grant changes nothing, not even after CANCEL
        except InvalidCredit as exc:
            exc.attrs["ref"] = frame.queue
            raise
        sub.active = True
        self._follow(peer, sub, frame.queue)
        if sub not in sub.q.subs:
            sub.q.subs.append(sub)
        self._dirty.add(sub.q)

    def _subscription(self, peer: Peer, frame: f.Credit) -> Sub:
        """``peer``'s subscription to the CREDIT's queue, new if it has none (a stream's:
        in the group it joined)."""
        sub = peer.subs.get(frame.queue)
        if sub is not None and not sub.active and sub.q.group is not None and sub.q.group.gone:
            del peer.subs[frame.queue]  # it read a group deleted since: this one is new
            sub = None
        if sub is not None:
            return sub
        if frame.n <= 0 or frame.n > self.cfg.max_credit:
            raise InvalidCredit(f"credit must be 1..{self.cfg.max_credit} (broker setting "
                                f"max_credit), got {frame.n}", ref=frame.queue)
        q = self.queues.get(frame.queue) or self._new_queue(frame.queue, frame.queue, peer)
        if q.stream is not None:  # read in the group it joined (zq.core.streams)
            q = self.group_queue(peer, q.stream, frame.queue)
        sub = peer.subs[frame.queue] = Sub(peer, q, self.cfg.max_credit)
        return sub

    def _follow(self, peer: Peer, sub: Sub, name: str) -> None:
        """A subscription whose queue (or stream's group) was deleted meanwhile: to the
        queue of that name now, or an error for a group that is gone."""
        if sub.q.group is not None:
            if sub.q.group.gone:
                del peer.subs[name]
                self.group_queue(peer, None, name)  # raises
        elif self.queues.get(sub.q.name) is not sub.q:
            q = self._queue(sub.q.name)
            sub.q = q if q.stream is None else self.group_queue(peer, q.stream, name)

    def on_cancel(self, peer: Peer, frame: f.Cancel) -> None:
        sub = peer.subs.get(frame.queue)
        if sub is None:
            return
        sub.window.void()
        sub.active = False
        if sub in sub.q.subs:
            sub.q.subs.remove(sub)

    def _settle(self, peer: Peer, frame: f.Ack | f.Nack | f.Extend, op: int,
                take: bool = True, owe: list[Sub] | None = None) -> list[Msg]:
        """The named deliveries ``peer`` holds (taken off it if ``take``); report the rest.

        An id the consumer does not hold is STALE_DELIVERY if it was ever
        delivered (its lease ended: acked, timed out, or its session dropped)
        and UNKNOWN_DELIVERY if it never was. With ``owe``, the credit of the
        settled deliveries goes there (given back once their acks are stored).
        """
        held = peer.held
        track = self.track_tenants
        done: list[Msg] = []
        unknown: list[int] = []
        stale: list[int] = []
        for mid, att in zip(frame.ids, frame.attempts, strict=True):
            m = held.get(mid)
            if m is not None and m.attempts == att:
                if take:
                    del held[mid]
                    sub = peer.subs[m.q.name]
                    if owe is None:
                        sub.window.settle(1)
                    else:
                        sub.window.owe(1)
                        owe.append(sub)
                        if sub.window.waits_for_repay():
                            self.journal.starved = True  # waits for this ack's commit
                    if sub.probe is m:
                        self._unprobe(sub)
                        m.suspect = False  # its consumer lived through it
                    if track:
                        m.lane.acct.in_flight -= 1
                done.append(m)
            elif m is not None or (mid < self.next_id and att >= 1):
                stale.append(mid)
                if take:
                    self.stale_settled(peer, mid, att)
            else:
                unknown.append(mid)
        if unknown:
            self._fail(peer.identity, UnknownDelivery(
                f"{len(unknown)} id(s) never delivered to this consumer"), op, unknown)
        if stale:
            self._fail(peer.identity, StaleDelivery(
                f"{len(stale)} id(s) name an attempt that is no longer current"), op, stale)
        return done

    def stale_settled(self, peer: Peer, mid: int, attempt: int) -> None:
        """A consumer settled a delivery whose time limit ran out: its credit is back."""
        z = peer.zombies.get(mid)
        if z is not None and z[0] == attempt:
            del peer.zombies[mid]
            sub = peer.subs.get(z[1])
            if sub is not None:
                sub.window.settle(1)
                self._dirty.add(sub.q)

    def on_ack(self, peer: Peer, frame: f.Ack, data: dict[str, Any] | None = None) -> None:
        """``data``: the outcome to keep for a single acked message (``complete``)."""
        journal = self.journal
        done = self._settle(peer, frame, f.ACK, owe=journal.owed if journal.durable else None)
        if not done:
            return
        self.counters["acked"] += len(done)
        waiters = self.results.waiters
        for m in done:
            q = m.q
            q.acked += 1
            q.mem_bytes -= len(m.body)
            if q.keeps or (waiters and m.id in waiters):
                self.outcome(m, "succeeded", {
                    "result": None, "attempt": m.attempts, "worker": peer.name,
                    "history": (m.headers or {}).get(HISTORY) or [], **(data or {})},
                    self.now)
        self.journal.forget(done)  # (a group's entries are not messages: no row goes)
        if self.streams:
            self.groups_done(done)

    def on_nack(self, peer: Peer, frame: f.Nack, now: float) -> None:
        done = self._settle(peer, frame, f.NACK)
        if not done:
            return
        self.counters["nacked"] += len(done)
        reason = frame.reason
        delay = frame.delay_ms / 1000.0 if frame.delay_ms else None
        back: list[Msg] = []
        for m in done:
            m.q.nacked += 1
            self._record(m, "nacked", reason, peer.name, now)
            if not frame.requeue:
                self._dead(m, reason or "nacked without requeue", now)
            else:
                self._retry(m, reason or "nacked", now, delay, back)
        self._requeue_front(back)

    def on_release(self, peer: Peer, frame: f.Release) -> None:
        held = peer.held
        back: list[Msg] = []
        unknown: list[int] = []
        stale: list[int] = []
        for mid in frame.ids:
            m = held.pop(mid, None)
            if m is None:
                z = peer.zombies.pop(mid, None)
                if z is None:
                    unknown.append(mid)
                    continue
                stale.append(mid)  # its time ran out: it was retried; the credit comes back
                sub = peer.subs.get(z[1])
                if sub is not None:
                    sub.window.settle(1)
                    self._dirty.add(sub.q)
                continue
            sub = peer.subs[m.q.name]
            sub.window.settle(1)
            if sub.probe is m:
                self._unprobe(sub)
            self.untrack(m)
            self._undeliver(m)  # a released delivery is not an attempt
            back.append(m)
        if unknown:
            self._fail(peer.identity, UnknownDelivery(
                f"{len(unknown)} id(s) not held by this consumer"), f.RELEASE, unknown)
        if stale:
            self._fail(peer.identity, StaleDelivery(
                f"{len(stale)} id(s) ran past their time limit and were retried"), f.RELEASE,
                stale)
        self.counters["released"] += len(back)
        self._requeue_front(back)

    def on_start(self, peer: Peer, frame: f.Start) -> None:
        """Work on these deliveries began: if the session is lost, they count as attempts.

        Advisory: ids that do not name a current delivery of the session are ignored.
        """
        held = peer.held
        for mid, att in zip(frame.ids, frame.attempts, strict=True):
            m = held.get(mid)
            if m is not None and m.attempts == att:
                m.started = att
                if m.suspect:
                    sub = peer.subs.get(m.q.name)
                    if sub is not None and sub.probe is m:
                        self._unprobe(sub)  # begun: if it dies now, the mark says so

    def on_extend(self, peer: Peer, frame: f.Extend, now: float) -> None:
        """Move the time limit of these attempts to ``ms`` from now."""
        for m in self._settle(peer, frame, f.EXTEND, take=False):
            m.deadline = now + frame.ms / 1000.0
            heapq.heappush(self._limits, (m.deadline, next(self._tie), m, peer))
