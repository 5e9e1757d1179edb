"""Publishing: admission (dedup, max length), staging, and queueing once stored. No I/O.
"""

from __future__ import annotations

import heapq
from itertools import repeat

from zq.core.failures import Failures
from zq.core.journal import PendingPublish
from zq.core.model import Msg, Peer, Queue, Sub
from zq.core.state import (
    Extra,
    _with_ref,
    pack_opts,
)
from zq.errors import (
    FrameTooLarge,
    QueueFull,
    ShuttingDown,
    StorageError,
    ZqError,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import DLQ_SUFFIX, check_publishable
from zq.protocol.session import State


class Intake(Failures):
    """PUBLISH frames in, confirmed and queued once their commit returns."""

    def on_publish(self, peer: Peer, frame: f.Publish, now: float) -> None:
        if peer.producer and self._resent(peer, frame):
            return
        q = self._admitted(peer, frame)
        n = len(frame.bodies)
        opts = frame.opts
        extra: Extra | None = None
        if opts is not None:
            if opts.dedup_id is not None and self._deduplicated(peer, q, frame, opts, now):
                return
            due = now + opts.delay_ms / 1000.0 if opts.delay_ms else 0.0
            if opts.eta_ms:
                due = max(due, opts.eta_ms / 1000.0 - self.wall_offset)  # wall -> monotonic
            ttl = opts.ttl_ms / 1000.0 if opts.ttl_ms else q.settings.ttl
            extra = (opts, due, now + ttl if ttl else 0.0)
        s = q.settings
        if s.max_length:
            self._make_room(q, n, frame.seq)
        first = self.take_ids(q, n)
        self.journal.publish(PendingPublish(peer, q, frame.seq, first, frame.bodies,
                                            frame.headers or None, extra, at=now))
        q.staged += n
        if peer.producer:
            self.producers.put(peer.producer, frame.seq, first, n, now)
            self.journal.produced(peer.producer, frame.seq, first, n)
        if opts is not None and opts.dedup_id is not None and s.dedup_window:
            self._remember(q.name, opts.dedup_id, first, now + s.dedup_window)
            self.journal.dedup(q.name, opts.dedup_id, first,
                               now + s.dedup_window + self.wall_offset)
        if extra is not None:
            self._stage_placed(q, first, n, extra)

    def repay(self, subs: list[Sub]) -> None:
        """Credit of acks now stored goes back to their consumers' windows."""
        dirty = self._dirty
        for sub in subs:
            sub.window.repay(1)
            dirty.add(sub.q)

    def _admitted(self, peer: Peer, frame: f.Publish) -> Queue:
        """The queue a PUBLISH goes to, or the error that refuses it."""
        if self.stopping:
            raise ShuttingDown("broker is shutting down; message not stored", ref=frame.seq)
        n = len(frame.bodies)
        if n > self.cfg.max_publish_batch:
            raise FrameTooLarge(f"{n} bodies exceed {self.cfg.max_publish_batch}",
                                ref=frame.seq, limit=self.cfg.max_publish_batch)
        if frame.queue.endswith(DLQ_SUFFIX):  # only the broker writes to dead-letter queues
            _with_ref(check_publishable, frame.queue, frame.seq)
        q = self.queues.get(frame.queue) or self._new_queue(frame.queue, frame.seq, peer)
        if q.moving is not None:  # MOVED once its target takes publishes (section 17.5)
            moved = self.moved_away(q.name, frame.seq)
            if moved is not None:
                raise moved
        return q

    def _deduplicated(self, peer: Peer, q: Queue, frame: f.Publish, opts: f.Options,
                      now: float) -> bool:
        """A publish whose dedup id a stored message has within its window: answered
        with that message's id once the commit under way is done."""
        hit = self._dedup.get((q.name, str(opts.dedup_id)))
        if hit is None or hit[1] <= now:
            return False
        self.counters["deduplicated"] += 1
        self.journal.publish(PendingPublish(peer, q, frame.seq, hit[0], [], None,
                                            (opts, 0.0, 0.0), 1))
        return True

    def _resent(self, peer: Peer, frame: f.Publish) -> bool:
        """A frame this producer had stored already (resent after a reconnect): answered,
        once its commit is done, with the ids it got then; nothing is stored again."""
        hit = self.producers.get(peer.producer, frame.seq)
        if hit is None or hit[1] != len(frame.bodies):
            return False
        q = self.queues.get(frame.queue)
        if q is None:  # deleted since: the answer stands, the queue is made again
            q = self._queue(frame.queue)
        self.counters["resent"] += 1
        self.journal.publish(PendingPublish(peer, q, frame.seq, hit[0], [], None, None,
                                            hit[1]))
        return True

    def _stage_placed(self, q: Queue, first: int, n: int, extra: Extra) -> None:
        """Store the options and due time of new messages that have any."""
        if not self.journal.durable:
            return
        probe = Msg(first, q, b"", None)
        probe.opts, probe.exp = extra[0], extra[2]
        blob = pack_opts(probe, self.wall_offset)
        if blob is not None or extra[1]:
            self.journal.place(first, first + n - 1,
                               extra[1] + self.wall_offset if extra[1] else 0.0, blob)

    @staticmethod
    def _make_room(q: Queue, n: int, seq: int) -> None:
        """``n`` more for ``q`` at its max_length: its overflow rule decides (QUEUE_FULL,
        or the oldest to drop once the publish is stored)."""
        s = q.settings
        length = q.ready_count() + q.disk + q.delayed + q.staged
        if length + n <= s.max_length:
            return
        drop = q.overflow.on_full(length, s.max_length, n)
        if drop < 0:
            what = (f"holds {length} of its maximum length of {s.max_length}"
                    if n == 1 or length >= s.max_length else
                    f"holds {length} of {s.max_length}: no room for {n} more")
            raise QueueFull(f"queue {q.name!r} {what}", ref=seq, queue=q.name,
                            limit=s.max_length)
        q.to_drop += drop

    def _remember(self, queue: str, key: str, mid: int, until: float) -> None:
        self._dedup[(queue, key)] = (mid, until)
        self._dedup_order.append((until, (queue, key)))

    def committed(self, pending: list[PendingPublish] | None = None) -> None:
        """A batch is stored: queue its messages, confirm its publishes.

        ``pending`` comes from :meth:`take_commit`; without it, everything
        published so far counts as stored (the memory store, and tests).
        """
        if pending is None:
            pending, self.journal.pending = self.journal.pending, []
        self.repay(self.journal.done(stored=True))
        self._queue_stored(pending)

    def stored_awaiting(self, pending: list[PendingPublish]) -> None:
        """A replicated broker's batch is stored here (the commit under way is over);
        its publishes wait for the standby's ack (:meth:`replicated`) to be queued and
        confirmed."""
        self.repay(self.journal.done(stored=True))
        self.journal.awaiting += pending

    def replicated(self, pending: list[PendingPublish], error: ZqError | None = None) -> None:
        """The standby has the batch of ``pending`` (the oldest awaiting): queue its
        messages, confirm its publishes. ``error``: the standby was lost first (and
        the broker may not confirm alone): the messages stay, stored here, and their
        publishes are answered with ``error``, not confirmed."""
        j = self.journal
        if pending and (not j.awaiting or j.awaiting[0] is not pending[0]):
            raise AssertionError("replicated batches must be released in order")
        del j.awaiting[:len(pending)]
        self._queue_stored(pending, error)

    def _queue_stored(self, pending: list[PendingPublish], error: ZqError | None = None
                      ) -> None:
        touched: list[Peer] = []
        trim: list[Queue] = []
        now, confirm_latency = self.now, self.confirm_latency.observe
        for p in pending:
            if not p.bodies:  # a deduplicated publish: the original's id
                self._answer_duplicate(p, touched, error)
                continue
            q = self._queue_published(p)
            if q.to_drop:
                trim.append(q)
            if p.peer is None:  # fired by a schedule: nobody to confirm to
                self._fired_due.pop(p.first, None)
                continue
            if error is not None:
                self._fail(p.peer.identity, error, f.PUBLISH, p.seq)
                continue
            if not p.peer.confirms:
                touched.append(p.peer)
            p.peer.confirms.append([p.seq, p.first, len(p.bodies)])
            if p.at:
                confirm_latency(now - p.at, len(p.bodies))
        for peer in touched:
            confirms, peer.confirms = peer.confirms, []
            if peer.state is State.READY:
                self._send(peer.identity, codec.encode_confirm(confirms))
        for q in trim:
            self._drop_oldest(q, self.now)
        outbox = self.outbox
        if not self.journal.durable and outbox.unstored:  # replies, after the confirms
            outbox.out.extend(outbox.take_unstored())

    def _answer_duplicate(self, p: PendingPublish, touched: list[Peer],
                          error: ZqError | None) -> None:
        if p.peer is not None and error is not None:
            self._fail(p.peer.identity, error, f.PUBLISH, p.seq)
        elif p.peer is not None:
            self._confirm_duplicate(p, p.peer, touched)

    def _confirm_duplicate(self, p: PendingPublish, peer: Peer, touched: list[Peer]) -> None:
        """A publish deduplicated to a stored message, or a frame resent: confirmed with
        the original's ids, unless the original's commit failed (commits complete in
        order)."""
        extra = p.extra
        if extra is not None and extra[0].dedup_id is not None:
            lost = self._dedup.get((p.q.name, extra[0].dedup_id), (0, 0.0))[0] != p.first
        else:
            lost = self.producers.get(peer.producer, p.seq) != (p.first, p.count)
        if lost:
            self._fail(peer.identity, StorageError(
                "the first publish of this message was not stored; publish again"),
                f.PUBLISH, p.seq)
            return
        if not peer.confirms:
            touched.append(peer)
        peer.confirms.append([p.seq, p.first, p.count])

    def _queue_published(self, p: PendingPublish) -> Queue:
        """Stored messages into their queue: ready in memory, delayed, or (past the
        window of a durable queue) on disk, paged in when the queue drains."""
        q = p.q
        if self.queues.get(q.name) is not q:  # deleted while this publish was stored
            q = self._queue(q.name)
        bodies, first, n = p.bodies, p.first, len(p.bodies)
        now = p.at or self.now  # its age counts from when it was published
        q.staged -= n
        cfg = self.cfg
        if self.journal.durable and (q.disk or q.ready_count() >= cfg.window
                                     or q.mem_bytes >= cfg.window_bytes):
            if not q.disk:
                q.cursor = first - 1
                self._spilled.add(q)
            q.disk += n
        elif p.extra is None and not q.ttl_seen:
            ready = q.default.msgs
            hdrs = p.headers
            if hdrs:
                hsize = codec.header_size
                ready.extend([Msg(first + i, q, b, hdrs[i], 0, hsize(hdrs[i]), now)
                              for i, b in enumerate(bodies)])
            else:
                ready.extend(map(Msg, range(first, first + n), repeat(q), bodies,
                                 repeat(None), repeat(0), repeat(0), repeat(now)))
            q.mem_bytes += sum(map(len, bodies))
            self._dirty.add(q)
        else:
            self._place_new(q, first, bodies, p.headers, p.extra, now, p.attempts)
        q.published += n
        self.counters["published"] += n
        return q

    def _place_new(self, q: Queue, first: int, bodies: list[bytes],
                   hdrs: list[f.Headers | None] | None, extra: Extra | None, now: float,
                   attempts: int = 0) -> None:
        """New messages with options (or a queue TTL): their lane, due time, expiry
        (``attempts``: those a message moved here from another broker had there)."""
        opts, due, exp = extra if extra is not None else (None, 0.0, 0.0)
        if not exp and q.settings.ttl:
            exp = now + q.settings.ttl
        lane = q.lane_for(opts)
        hsize = codec.header_size
        for i, body in enumerate(bodies):
            h = hdrs[i] if hdrs else None
            m = Msg(first + i, q, body, h, attempts, hsize(h) if h is not None else 0, now)
            m.opts, m.lane, m.exp = opts, lane, exp
            if due > now:
                self._delay(m, due)
            else:
                lane.msgs.append(m)
            q.mem_bytes += len(body)
        if exp:
            q.ttl_seen = True
        if opts is not None and opts.time_limit_ms:
            q.limited = True
        self._dirty.add(q)

    def _drop_oldest(self, q: Queue, now: float) -> None:
        """Overflow rule drop-oldest: dead-letter the oldest ready or delayed messages."""
        k, q.to_drop = q.to_drop, 0
        delayed = sorted((e for e in self.delayed_entries() if e[2].q is q),
                         key=lambda e: e[1]) if q.delayed else []
        taken_delayed = False
        while k > 0:
            heads = [ln for ln in q.order if ln.msgs]
            lane = min(heads, key=lambda ln: ln.msgs[0].id) if heads else None
            if delayed and (lane is None or delayed[0][1] < lane.msgs[0].id):
                entry = delayed.pop(0)
                self._delayed.remove(entry)
                m = entry[2]
                q.delayed -= 1
                taken_delayed = True
            elif lane is not None:
                m = lane.msgs.popleft()
            else:
                break
            self._record(m, "dropped", "queue full", "", now)
            self._dead(m, "overflow: the queue was at its maximum length", now)
            k -= 1
        if taken_delayed:
            heapq.heapify(self._delayed)
