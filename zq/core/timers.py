"""Time: heartbeats, delayed messages and their attempts stored ahead, time limits,
expiry, schedules, rates. The shell passes ``now`` in. No I/O.
"""

from __future__ import annotations

import heapq

from zq.core.journal import PendingPublish
from zq.core.leases import Leases
from zq.core.model import Msg, Peer, Queue
from zq.core.state import (
    Extra,
    log,
)
from zq.persistence.base import ALL_SEQS
from zq.protocol import codec, limits
from zq.protocol import frames as f


class Timers(Leases):
    """Everything that happens because time passed."""

    def tick(self, now: float) -> None:
        """Heartbeats, dead peers, due delayed messages, time limits, expiry, rates."""
        self.now = now
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        delayed = self._delayed
        if delayed and delayed[0][0] <= now:
            self._due(now)
        limits = self._limits
        while limits and limits[0][0] <= now:
            deadline, _, m, peer = heapq.heappop(limits)
            if m.deadline != deadline or peer.held.get(m.id) is not m:
                continue  # settled, extended, or lost meanwhile
            self._time_limited(m, peer, now)
        if self.results._timeouts and self.results.next_timeout() <= now:
            self._answer_timed_out(now)
        if self.schedules:
            self._fire_schedules(now)
        if now >= self._next_second:
            self._every_second(now)

    def _heartbeat(self, now: float) -> None:
        """Drop the peers silent past their liveness; tell the others we are here."""
        self._next_heartbeat = now + self.cfg.heartbeat
        beat = codec.encode(f.Heartbeat())
        for peer in list(self.peers.values()):
            if now - peer.last_seen > peer.liveness_s:
                self.drop_peer(peer, f"no sign of life for {now - peer.last_seen:.2f}s")
            else:
                self._send(peer.identity, beat)

    def _due(self, now: float) -> None:
        """Delayed messages whose time has come join the tail of their lanes."""
        heap = self._delayed
        while heap and heap[0][0] <= now:
            _, _, m = heapq.heappop(heap)
            q = m.q
            q.delayed -= 1
            if (self.queues.get(q.name) is not q if q.group is None else q.group.gone):
                continue  # its queue (or its stream's group) was deleted
            m.lane.msgs.append(m)
            m.t = now  # ready from now on: its age, and its wait to be delivered, count from here
            self._dirty.add(q)

    def _fire_schedules(self, now: float) -> None:
        """Publish a message for each schedule that is due, and store its next due time."""
        wall = now + self.wall_offset
        for s in list(self.schedules.values()):
            if s.next_due > wall or self.stopping:
                continue
            due = s.next_due
            q = self._queue(s.queue)
            headers = dict(s.headers or {})
            headers[limits.SCHEDULE] = s.name
            headers[limits.DUE] = round(due, 3)
            opts = f.Options(**s.options) if s.options else None
            mid = self.take_ids(q, 1)
            extra: Extra | None = None
            if opts is not None:
                ttl = opts.ttl_ms / 1000.0 if opts.ttl_ms else q.settings.ttl
                extra = (opts, 0.0, now + ttl if ttl else 0.0)
            self.journal.publish(PendingPublish(None, q, 0, mid, [s.body], [headers], extra))
            if extra is not None:
                self._stage_placed(q, mid, 1, extra)
            self._fired_due[mid] = (s.name, due)  # until stored: a failed commit undoes it
            q.staged += 1
            s.fired += 1
            s.last_fired = wall
            nxt = s.after(due)
            s.next_due = nxt if nxt > wall else s.after(wall)  # late: no second message
            self.stage_schedule(s)
            self.counters["scheduled"] += 1

    def _time_limited(self, m: Msg, peer: Peer, now: float) -> None:
        del peer.held[m.id]
        sub = peer.subs.get(m.q.name)
        if sub is not None and sub.probe is m:
            self._unprobe(sub)
        peer.zombies[m.id] = (m.attempts, m.q.name)
        self.untrack(m)
        self.counters["time_limited"] += 1
        limit = m.deadline - m.start
        self._record(m, "time limit", f"ran past its time limit of {limit:.3f}s", peer.name,
                     now)
        self._retry(m, "time limit", now)

    def _every_second(self, now: float) -> None:
        """Rates, expired messages at lane heads, forgotten dedup ids."""
        elapsed = now - (self._next_second - 1.0)
        self._next_second = now + 1.0
        self.flush_logs()  # sum up the drops not logged one by one
        alpha = min(1.0, elapsed / 5.0)  # about a 5 s moving average
        idle: list[str] = []
        for q in list(self.queues.values()):  # expiry may create dead-letter queues
            if q.settings.idle_ttl and self._idle(q, now):
                idle.append(q.name)
            r = q.rates
            for key, total in (("publish", q.published), ("deliver", q.delivered),
                               ("ack", q.acked)):
                last = r.get("_" + key, float(total))
                rate = (total - last) / elapsed if elapsed > 0 else 0.0
                r[key] += alpha * (rate - r[key])
                r["_" + key] = float(total)
            if q.ttl_seen and not q.forward:  # forwarded: the TTL travels with it
                for lane in q.order:
                    while lane.msgs and lane.msgs[0].exp and lane.msgs[0].exp <= now:
                        self._expire(lane.msgs.popleft(), now)
        for name in idle:
            self._expire_idle(name, now)
        self.results.expire(now)
        order = self._dedup_order
        while order and order[0][0] <= now:
            _, dkey = order.popleft()
            hit = self._dedup.get(dkey)
            if hit is not None and hit[1] <= now:
                del self._dedup[dkey]
        self._forget_idle(now)

    @staticmethod
    def _idle(q: Queue, now: float) -> bool:
        """Whether ``q`` has had no consumer for its idle_ttl (sampled every second)."""
        if q.subs or not q.idle_since:
            q.idle_since = now
            return False
        return now - q.idle_since >= q.settings.idle_ttl

    def _expire_idle(self, name: str, now: float) -> None:
        """Delete a queue idle past its idle_ttl, as MANAGE delete does, and its bindings."""
        delete = self.operations.handlers.get("delete")
        q = self.queues.get(name)
        if delete is None or q is None:
            return
        gone = delete(self, {"queue": name}, now, None, 0) or {}
        log.info("queue %s deleted: no consumer for its idle_ttl of %g s (%s message(s))",
                 name, q.settings.idle_ttl, gone.get("deleted", 0))

    def _forget_idle(self, now: float) -> None:
        """Routes of clients behind routers that left, and idle producers' seqs."""
        if self.routes:  # clients behind routers that left, at the sweep before this one:
            # their last frames (an ERROR, a reply) went out in the pass they left in.
            peers = self.peers
            gone = {i for i in self.routes if i not in peers}
            for inner in gone & self._routes_left:
                link_id = self.routes.pop(inner)[0]
                link = self.links.get(link_id)
                if link is not None and link.inner is not None:
                    link.inner.discard(inner)
            self._routes_left = gone - self._routes_left
        else:
            self._routes_left = set()
        journal = self.journal
        for pid in self.producers.expire(now):
            journal.trim(pid, ALL_SEQS)
        for pid, below in self.producers.trims():
            journal.trim(pid, below)

    def next_deadline(self) -> float:
        t = min(self._next_heartbeat, self._next_second)
        if self._delayed and self._delayed[0][0] < t:
            t = self._delayed[0][0]
        if self._limits and self._limits[0][0] < t:
            t = self._limits[0][0]
        if self.results._timeouts:
            t = min(t, self.results.next_timeout())
        if self.schedules:
            t = min(t, min(s.next_due for s in self.schedules.values()) - self.wall_offset)
        return t

    def _answer_timed_out(self, now: float) -> None:
        """``wait`` requests whose time ran out get the message's status now."""
        status = self.operations.status
        for mid, w in self.results.timed_out(now):
            if w.identity in self.peers and status is not None:
                self._after_commit(w.identity, codec.encode(f.ManageReply(
                    w.req, status(self, w.queue, mid, now))))
