"""Dispatch: ready messages to consumers with credit, in batches within the frame
limits; suspects one at a time (probes). No I/O.
"""

from __future__ import annotations

import heapq

from zq import history
from zq.core.model import Lane, Msg, Peer, Queue, Sub
from zq.core.outbox import Outgoing
from zq.core.settle import Settlement
from zq.core.state import (
    log,
)
from zq.persistence.base import (
    DELIVERED,
)
from zq.protocol import codec


class Delivery(Settlement):
    """Which consumer gets which message next."""

    def dispatch(self, now: float | None = None) -> None:
        """Deliver ready messages to consumers with credit, in batches."""
        if not self._dirty:
            return
        if now is None:
            now = self.now
        dirty, self._dirty = self._dirty, set()
        for q in dirty:
            if q.paused or not q.subs:
                continue
            if q.suspects:
                self._probe(q, now)
                if q.suspects:
                    continue  # consumers finish what they hold; then each takes a suspect
            expired: list[Msg] = []
            max_batch = self.cfg.max_batch
            while True:
                cands = [s for s in q.subs if s.window.available > 0 and s.probe is None]
                if not cands:
                    break
                sub = cands[self.policy.pick(q.name, cands)] if len(cands) > 1 else cands[0]
                msgs = self._fill(q, sub, min(max_batch, sub.window.available), now, expired)
                if not msgs:
                    break
                self._send_deliver(q, sub, msgs, now)
            for m in expired:
                self._expire(m, now)

    def _fill(self, q: Queue, sub: Sub, want: int, now: float, expired: list[Msg]
              ) -> list[Msg]:
        """Take up to ``want`` messages for one DELIVER to ``sub``: lane by lane, within
        the frame's byte limits; each becomes that consumer's next attempt. Returns
        them."""
        max_frame = self.cfg.max_frame
        max_header = self.limits.max_header
        per_msg = codec.PER_MESSAGE
        held = sub.peer.held
        msgs: list[Msg] = []
        fbytes = codec.ENVELOPE + len(q.name_b)
        hbytes = codec.ENVELOPE
        check_exp = q.ttl_seen
        multi = len(q.order) > 1
        full = False
        while len(msgs) < want and not full:
            lane, quota = q.next_lane()
            if lane is None:
                break
            ready = lane.msgs
            take = min(want - len(msgs), quota, lane.room())
            before = len(msgs)
            stop = before + take
            popleft = ready.popleft
            while len(msgs) < stop and ready:
                m = popleft()
                if check_exp and m.exp and m.exp <= now:
                    expired.append(m)
                    continue
                h = per_msg + m.hsize
                if fbytes + h + len(m.body) > max_frame or hbytes + h > max_header:
                    if msgs:
                        ready.appendleft(m)
                        full = True  # the frame is full by bytes; the rest waits
                        break
                    self._too_large(m, now)  # alone: only if the limits shrank
                    continue
                fbytes += h + len(m.body)
                hbytes += h
                m.attempts += 1
                m.start = now
                held[m.id] = m
                msgs.append(m)
            self._lane_took(q, lane, len(msgs) - before, multi)
        return msgs

    def _lane_took(self, q: Queue, lane: Lane, got: int, multi: bool) -> None:
        """Tenant bookkeeping after ``got`` messages left ``lane`` for one DELIVER."""
        if self.track_tenants:
            lane.acct.in_flight += got
        if multi:
            q.selector.took(lane.tenant, got)
            if not lane.msgs:
                q.selector.idle(lane.tenant)

    def _send_deliver(self, q: Queue, sub: Sub, msgs: list[Msg], now: float) -> None:
        """One DELIVER of ``msgs`` (attempts already counted) to ``sub``'s consumer."""
        ids = [m.id for m in msgs]
        attempts = [m.attempts for m in msgs]
        headers = [m.headers for m in msgs]
        if headers.count(None) == len(headers):
            headers = []
        k = sub.window.take(len(msgs))  # == len(msgs): it was within the window
        if sub.window.waits_for_repay():
            self.journal.starved = True  # its next places come with a commit
        # Stored with the next commit, after the frame went out: a crash before that
        # commit loses nothing but the count of an attempt in flight, which a crash
        # never counts anyway (PROTOCOL.md 12.5; see _admit).
        self.journal.attempts(ids, attempts, 0.0, DELIVERED)
        if q.limited:
            self._arm_limits(q, msgs, sub.peer, now)
        q.delivered += k
        counters = self.counters
        fresh = attempts.count(1)
        if fresh < k:
            counters["redelivered"] += k - fresh
            q.redelivered += k - fresh
        if fresh and msgs[0].t:
            self.deliver_latency.observe(now - msgs[0].t, fresh)
        counters["delivered"] += k
        counters["deliver_frames"] += 1
        self.outbox.out.append(
            Outgoing(sub.peer.identity, codec.encode_deliver(q.name_b, ids, attempts, headers,
                                                             [m.body for m in msgs]), msgs))

    def _probe(self, q: Queue, now: float) -> None:
        """Hand suspects out (see :func:`charged`). A consumer that marks its starts
        gets one at a time, when all else it holds of the queue is begun, and nothing
        more until it begins or settles it: if it vanishes meanwhile holding only that
        one, that was the one. Others (charged for all they hold anyway) get them in
        ordinary batches."""
        for sub in q.subs:
            w = sub.window
            if not q.suspects or sub.probe is not None or w.available <= 0:
                continue
            alone = sub.peer.marks
            if alone and w.in_flight and not all(
                    m.started == m.attempts for m in sub.peer.held.values() if m.q is q):
                continue  # it holds work it has not begun: a crash would not name one
            msgs: list[Msg] = []
            while q.suspects and len(msgs) < (1 if alone else min(w.available,
                                                                  self.cfg.max_batch)):
                m = q.suspects.popleft()
                if q.ttl_seen and m.exp and m.exp <= now:
                    self._expire(m, now)
                    continue
                m.attempts += 1
                m.start = now
                sub.peer.held[m.id] = m
                if self.track_tenants:
                    m.lane.acct.in_flight += 1
                msgs.append(m)
            if msgs:
                if alone:
                    sub.probe = msgs[0]
                self._send_deliver(q, sub, msgs, now)

    def _too_large(self, m: Msg, now: float) -> None:
        """A ready message that cannot travel alone in a DELIVER (it was stored under
        larger limits): without its history if that is enough, else dead, and parked if
        it cannot even be a dead letter (it stays stored; a restart with a larger
        ``max_frame`` delivers it)."""
        budget = self._budget(m)
        if m.headers and m.hsize > budget:
            headers, hsize = history.fit(dict(m.headers), budget)
            if hsize <= budget:
                m.headers, m.hsize = headers, hsize
                self._rewrite(m)
                m.lane.msgs.appendleft(m)
                return
        why = (f"too large to deliver: {len(m.body)} body + {m.hsize} header bytes do not fit "
               f"max_frame = {self.cfg.max_frame} (raise the broker setting max_frame)")
        q = m.q
        if q.dlq is not None and q.dlq != q.name and budget > 0:
            self._dead(m, why, now)
            return
        self.counters["undeliverable"] += 1
        q.undeliverable += 1
        q.mem_bytes -= len(m.body)
        log.error("queue %s: message %d is %s; it stays stored and is skipped until the "
                  "broker restarts", q.name, m.id, why)

    def _arm_limits(self, q: Queue, msgs: list[Msg], peer: Peer, now: float) -> None:
        default = q.settings.time_limit
        limits = self._limits
        for m in msgs:
            o = m.opts
            limit = o.time_limit_ms / 1000.0 if o is not None and o.time_limit_ms else default
            if limit:
                m.deadline = now + limit
                heapq.heappush(limits, (m.deadline, next(self._tie), m, peer))
        if len(limits) > self._limits_compact_at:
            self._compact_limits()

    def _compact_limits(self) -> None:
        """Drop time-limit entries of attempts that ended (acked, nacked, lost) early.

        Entries are removed lazily when they come due; with long limits and fast
        acks the heap would otherwise hold one entry per delivery of the last
        ``time_limit`` seconds. Rebuilt when it doubles, so the cost is amortized.
        """
        live = [e for e in self._limits
                if e[2].deadline == e[0] and e[3].held.get(e[2].id) is e[2]]
        heapq.heapify(live)
        self._limits = live
        self._limits_compact_at = max(10_000, 2 * len(live))
