"""The broker's decisions, with no I/O: sessions, queues, credit, acks, heartbeats.

The asyncio shell in ``zq/broker.py`` feeds it received multipart messages with
the current monotonic time, commits the :class:`WriteBatch` it builds, and
sends what it appends to :attr:`BrokerCore.out`. One loop pass is::

    receive(...) * n  ->  take_batch()  ->  store.commit()  ->  committed()
    ->  dispatch(now)  ->  send out

Messages published in a pass enter their queue only after the commit, so a
confirm and a delivery both mean "stored".
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from zq.config import BrokerConfig
from zq.errors import (
    FrameTooLarge,
    InvalidCredit,
    ShuttingDown,
    StaleDelivery,
    UnknownDelivery,
    ZqError,
)
from zq.persistence.base import Recovered, StoredMessage, WriteBatch
from zq.policies.dispatch import DispatchPolicy
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.credit import CreditWindow
from zq.protocol.session import State, next_state

log = logging.getLogger("zq.broker")

# Errors after which the broker forgets the session (the peer is broken or hostile).
_FATAL = frozenset(
    {"MALFORMED_FRAME", "UNSUPPORTED_VERSION", "UNKNOWN_OPCODE", "PROTOCOL_VIOLATION"})

MAX_HEARTBEAT = 60.0  # seconds: the slowest heartbeat a client's HELLO can ask for

Outgoing = tuple[bytes, list[bytes], "list[Msg] | None"]
# A PUBLISH frame not committed yet: peer, queue, seq, first id, bodies, headers.
Pending = tuple["Peer", "Queue", int, int, list[bytes], "list[f.Headers | None] | None"]


@dataclass(slots=True)
class Commit:
    """One batch on its way to the store, and what waits for it."""

    batch: WriteBatch
    pending: list[Pending]  # to confirm and queue once stored
    deliveries: list[Outgoing]  # to send once stored (their attempt numbers are in it)


class Msg:
    __slots__ = ("attempts", "body", "headers", "hsize", "id", "q")

    def __init__(self, id: int, q: Queue, body: bytes, headers: dict[str, Any] | None,
                 attempts: int = 0, hsize: int = 0) -> None:
        self.id = id
        self.q = q
        self.body = body
        self.headers = headers
        self.attempts = attempts
        self.hsize = hsize  # encoded size of headers, for sizing DELIVER batches


class Sub:
    """One consumer's subscription to one queue."""

    __slots__ = ("active", "peer", "q", "window")

    def __init__(self, peer: Peer, q: Queue, limit: int) -> None:
        self.peer = peer
        self.q = q
        self.window = CreditWindow(limit)
        self.active = True


class Queue:
    """A queue's messages: ``ready`` in memory, and (durable stores) ``disk`` more.

    With a durable store, a queue keeps at most a window of ready messages in
    memory. Past it, new messages stay only on disk, ``disk`` counts them, and
    they are paged in, in id order, as the ones in memory drain. Every stored
    message of the queue with an id up to ``cursor`` is in memory (ready, held
    by a consumer, or delayed); every one above it is on disk only.
    """

    __slots__ = (
        "acked",
        "cursor",
        "dead",
        "delivered",
        "disk",
        "mem_bytes",
        "nacked",
        "name",
        "name_b",
        "published",
        "ready",
        "subs",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.name_b = name.encode()
        self.ready: deque[Msg] = deque()
        self.subs: list[Sub] = []
        self.disk = 0
        self.cursor = 0
        self.mem_bytes = 0  # bodies of this queue's messages in memory, in any state
        self.published = self.delivered = self.acked = self.nacked = self.dead = 0


class Peer:
    __slots__ = ("confirms", "held", "identity", "last_seen", "liveness_s", "name", "state",
                 "subs")

    def __init__(self, identity: bytes, now: float) -> None:
        self.identity = identity
        self.name = ""
        self.state = State.NEW
        self.last_seen = now
        self.liveness_s = 0.0
        self.subs: dict[str, Sub] = {}
        self.held: dict[int, Msg] = {}
        self.confirms: list[list[int]] = []


class BrokerCore:
    def __init__(self, cfg: BrokerConfig, dispatch: DispatchPolicy, broker_id: str,
                 *, durable: bool = False) -> None:
        self.cfg = cfg
        self.durable = durable  # stage writes for the store only when it keeps them
        self.wall_offset = 0.0  # time.time() - time.monotonic(), for due times kept on disk
        self.store_stats: Callable[[], dict[str, Any]] = dict  # the shell plugs in its store's
        self.policy = dispatch
        self.broker_id = broker_id
        self.limits = codec.Limits(max_frame=cfg.max_frame, max_batch=max(cfg.max_publish_batch,
                                                                          cfg.max_credit))
        self.queues: dict[str, Queue] = {}
        self.peers: dict[bytes, Peer] = {}
        self.out: list[Outgoing] = []
        self.next_id = 1
        self.stopping = False
        self._batch = WriteBatch()
        self._pending: list[Pending] = []  # PUBLISH frames not committed yet
        self.unstored_out: list[Outgoing] = []  # DELIVERs whose attempts are not stored yet
        self.staged = 0  # messages published into the current batch
        self._dirty: set[Queue] = set()
        self._spilled: set[Queue] = set()  # queues with messages on disk only
        self._delayed: list[tuple[float, int, Msg]] = []
        self._next_heartbeat = 0.0
        self.counters = dict.fromkeys(
            ("frames_in", "frames_out", "published", "delivered", "deliver_frames", "acked",
             "nacked", "released", "dead", "redelivered", "unroutable", "send_dropped",
             "errors_sent", "peers_dropped"), 0)

    # ----------------------------------------------------------------- recovery

    def recover(self, rec: Recovered, now: float) -> None:
        """Load what the store holds; messages that were in flight count that attempt."""
        for name, n in rec.backlog.items():
            q = self._queue(name)
            q.disk = n
            self._spilled.add(q)
        self._admit(rec.messages, now)
        self.next_id = max(self.next_id, rec.next_id)

    def _admit(self, stored: list[StoredMessage], now: float) -> None:
        """Stored messages into memory: ready, or delayed until their due time."""
        wall = now + self.wall_offset
        for sm in stored:
            q = self._queue(sm.queue)
            m = Msg(sm.id, q, sm.body, sm.headers, sm.attempts, codec.header_size(sm.headers))
            if sm.ready_at > wall:
                heapq.heappush(self._delayed, (now + sm.ready_at - wall, m.id, m))
            else:
                q.ready.append(m)
                self._dirty.add(q)
            q.mem_bytes += len(sm.body)
            if sm.id > q.cursor:
                q.cursor = sm.id

    # ------------------------------------------------------------------ inbound

    def receive(self, identity: bytes, parts: list[bytes], now: float) -> None:
        """Handle one multipart message (the ROUTER envelope already split off)."""
        self.counters["frames_in"] += 1
        peer = self.peers.get(identity)
        cmd = parts[0] if parts else b""
        op = cmd[3] if len(cmd) == 4 and cmd[:2] == f.SIGNATURE else 0
        try:
            frame = codec.decode(parts, self.limits)
            state = peer.state if peer is not None else State.NEW
            new_state = next_state(state, op)
        except ZqError as exc:
            self._fail(identity, exc, op, self._ref(exc))
            if peer is not None and exc.name in _FATAL:
                self.drop_peer(peer, f"protocol error: {exc.message}")
            return
        if peer is None:
            if new_state is not State.READY:
                return  # BYE from a stranger: nothing to do
            peer = self.peers[identity] = Peer(identity, now)
        peer.last_seen = now
        peer.state = new_state
        try:
            self._handle(peer, frame, now)
        except ZqError as exc:
            self._fail(identity, exc, op, self._ref(exc))

    @staticmethod
    def _ref(exc: ZqError) -> Any:
        return exc.attrs.get("ref")

    def _handle(self, peer: Peer, frame: f.Frame, now: float) -> None:
        match frame:
            case f.Publish():
                self.on_publish(peer, frame)
            case f.Ack():
                self.on_ack(peer, frame)
            case f.Credit():
                self.on_credit(peer, frame)
            case f.Heartbeat():
                pass
            case f.Nack():
                self.on_nack(peer, frame, now)
            case f.Release():
                self.on_release(peer, frame)
            case f.Cancel():
                self.on_cancel(peer, frame)
            case f.Hello():
                self.on_hello(peer, frame)
            case f.Bye():
                self.drop_peer(peer, f"BYE {frame.reason}".strip())
            case f.Stats():
                self._send(peer.identity, codec.encode(f.StatsReply(frame.req, self.stats())))
            case _:  # pragma: no cover - the session table admits nothing else
                raise AssertionError(frame)

    def on_hello(self, peer: Peer, frame: f.Hello) -> None:
        peer.name = frame.name
        # A client may ask for slower heartbeats than the broker's, within reason.
        beat = min(max(self.cfg.heartbeat, frame.heartbeat_ms / 1000.0), MAX_HEARTBEAT)
        peer.liveness_s = beat * self.cfg.liveness
        cfg = self.cfg
        self._send(peer.identity, codec.encode(f.Welcome(
            self.broker_id, int(cfg.heartbeat * 1000), cfg.liveness, cfg.max_batch,
            cfg.max_credit, cfg.max_frame)))

    def on_publish(self, peer: Peer, frame: f.Publish) -> None:
        if self.stopping:
            raise ShuttingDown("broker is shutting down; message not stored", ref=frame.seq)
        n = len(frame.bodies)
        if n > self.cfg.max_publish_batch:
            raise FrameTooLarge(f"{n} bodies exceed {self.cfg.max_publish_batch}",
                                ref=frame.seq, limit=self.cfg.max_publish_batch)
        q = self._queue(frame.queue)
        first = self.next_id
        self.next_id = first + n
        hdrs = frame.headers or None
        self._pending.append((peer, q, frame.seq, first, frame.bodies, hdrs))
        if self.durable:
            self.staged += n
            self._batch.inserts.append((first, q.name, hdrs, frame.bodies))

    def on_credit(self, peer: Peer, frame: f.Credit) -> None:
        sub = peer.subs.get(frame.queue)
        if sub is None:
            if frame.n <= 0 or frame.n > self.cfg.max_credit:
                raise InvalidCredit(f"credit must be 1..{self.cfg.max_credit}, got {frame.n}",
                                    ref=frame.queue)
            q = self._queue(frame.queue)
            sub = peer.subs[frame.queue] = Sub(peer, q, self.cfg.max_credit)
        try:
            sub.window.grant(frame.n)  # a refused grant changes nothing, not even after CANCEL
        except InvalidCredit as exc:
            exc.attrs["ref"] = frame.queue
            raise
        sub.active = True
        if sub not in sub.q.subs:
            sub.q.subs.append(sub)
        self._dirty.add(sub.q)

    def on_cancel(self, peer: Peer, frame: f.Cancel) -> None:
        sub = peer.subs.get(frame.queue)
        if sub is None:
            return
        sub.window.void()
        sub.active = False
        if sub in sub.q.subs:
            sub.q.subs.remove(sub)

    def _settle(self, peer: Peer, frame: f.Ack | f.Nack, check: bool = True) -> list[Msg]:
        """Take the named deliveries off ``peer``; report unknown and stale ones."""
        held = peer.held
        done: list[Msg] = []
        unknown: list[int] = []
        stale: list[int] = []
        for mid, att in zip(frame.ids, frame.attempts, strict=True):
            m = held.get(mid)
            if m is None:
                unknown.append(mid)
            elif m.attempts != att:
                stale.append(mid)
            else:
                del held[mid]
                peer.subs[m.q.name].window.settle(1)
                done.append(m)
        op = f.ACK if isinstance(frame, f.Ack) else f.NACK
        if unknown:
            self._fail(peer.identity, UnknownDelivery(
                f"{len(unknown)} id(s) not held by this consumer"), op, unknown)
        if stale:
            self._fail(peer.identity, StaleDelivery(
                f"{len(stale)} id(s) acked for an attempt that is not current"), op, stale)
        return done

    def on_ack(self, peer: Peer, frame: f.Ack) -> None:
        done = self._settle(peer, frame)
        if not done:
            return
        self.counters["acked"] += len(done)
        for m in done:
            q = m.q
            q.acked += 1
            q.mem_bytes -= len(m.body)
        if self.durable:
            self._forget(done)

    def _forget(self, msgs: list[Msg]) -> None:
        """Stage the deletion of messages that are done (acked or dead)."""
        self._batch.deletes.extend([m.id for m in msgs])

    def _stage(self, m: Msg, ready_at: float = 0.0) -> None:
        """Stage a message's new attempt count and due time (durable stores only)."""
        self._batch.updates.append(([m.id], [m.attempts], ready_at))

    def on_nack(self, peer: Peer, frame: f.Nack, now: float) -> None:
        done = self._settle(peer, frame)
        if not done:
            return
        self.counters["nacked"] += len(done)
        for m in done:
            m.q.nacked += 1
        if not frame.requeue:
            self.counters["dead"] += len(done)
            for m in done:
                m.q.dead += 1
                m.q.mem_bytes -= len(m.body)
            if self.durable:
                self._forget(done)
        elif frame.delay_ms > 0:
            due = now + frame.delay_ms / 1000.0
            for m in done:
                heapq.heappush(self._delayed, (due, m.id, m))
                if self.durable:
                    self._stage(m, due + self.wall_offset)
        else:
            self._requeue_front(done)

    def on_release(self, peer: Peer, frame: f.Release) -> None:
        held = peer.held
        back: list[Msg] = []
        unknown: list[int] = []
        for mid in frame.ids:
            m = held.pop(mid, None)
            if m is None:
                unknown.append(mid)
                continue
            peer.subs[m.q.name].window.settle(1)
            m.attempts -= 1  # a released delivery is not an attempt
            if self.durable:
                self._stage(m)
            back.append(m)
        if unknown:
            self._fail(peer.identity, UnknownDelivery(
                f"{len(unknown)} id(s) not held by this consumer"), f.RELEASE, unknown)
        self.counters["released"] += len(back)
        self._requeue_front(back)

    def _requeue_front(self, msgs: list[Msg]) -> None:
        """Put messages back at the head of their queues, oldest first."""
        if not msgs:
            return
        msgs.sort(key=lambda m: m.id, reverse=True)
        for m in msgs:
            m.q.ready.appendleft(m)
            self._dirty.add(m.q)

    # ------------------------------------------------------------ commit cycle

    def take_batch(self) -> WriteBatch:
        batch, self._batch = self._batch, WriteBatch()
        self.staged = 0
        return batch

    def take_commit(self) -> Commit:
        """Everything that waits for the store: the batch, and what to do once it is stored."""
        c = Commit(self.take_batch(), self._pending, self.unstored_out)
        self._pending, self.unstored_out = [], []
        return c

    def release(self, deliveries: list[Outgoing]) -> None:
        """Send DELIVER frames whose commit returned, unless their session ended meanwhile.

        A session dropped while the commit ran has had its messages requeued, and
        a new session of the same client must not get the old session's frames.
        """
        peers = self.peers
        for d in deliveries:
            peer = peers.get(d[0])
            msgs = d[2]
            if peer is not None and msgs and peer.held.get(msgs[0].id) is msgs[0]:
                self.out.append(d)

    def has_unstored(self) -> bool:
        """Whether anything waits for a commit."""
        return bool(self._batch or self._pending or self.unstored_out)

    def restage(self, batch: WriteBatch) -> None:
        """Updates and deletes that failed to commit go into the next batch."""
        b = self._batch
        b.updates[:0] = batch.updates  # older than anything staged since
        b.deletes.extend(batch.deletes)

    def committed(self, pending: list[Pending] | None = None) -> None:
        """A batch is stored: queue its messages, confirm its publishes.

        ``pending`` comes from :meth:`take_commit`; without it, everything
        published so far counts as stored (the memory store, and tests).
        """
        if pending is None:
            pending, self._pending = self._pending, []
        touched: list[Peer] = []
        window, window_bytes = self.cfg.window, self.cfg.window_bytes
        durable = self.durable
        for peer, q, seq, first, bodies, hdrs in pending:
            n = len(bodies)
            if durable and (q.disk or len(q.ready) >= window or q.mem_bytes >= window_bytes):
                if not q.disk:
                    q.cursor = first - 1
                    self._spilled.add(q)
                q.disk += n  # stored; paged in when the queue drains
            else:
                if hdrs:
                    hsize = codec.header_size
                    q.ready.extend([Msg(first + i, q, b, hdrs[i], 0, hsize(hdrs[i]))
                                    for i, b in enumerate(bodies)])
                else:
                    q.ready.extend(map(Msg, range(first, first + n), repeat(q), bodies,
                                       repeat(None)))
                q.mem_bytes += sum(map(len, bodies))
                self._dirty.add(q)
            q.published += n
            if not peer.confirms:
                touched.append(peer)
            peer.confirms.append([seq, first, n])
            self.counters["published"] += n
        for peer in touched:
            confirms, peer.confirms = peer.confirms, []
            if peer.state is State.READY:
                self._send(peer.identity, codec.encode_confirm(confirms))

    def commit_failed(self, exc: ZqError, pending: list[Pending] | None = None) -> None:
        """A batch was not stored: refuse its publishes, store nothing."""
        if pending is None:
            pending, self._pending = self._pending, []
        for peer, _q, seq, *_ in pending:
            self._fail(peer.identity, exc, f.PUBLISH, seq)

    # ---------------------------------------------------------------- paging

    def wanted_pages(self) -> list[tuple[str, int, int]]:
        """(queue, after_id, limit) for queues whose backlog on disk should page in now."""
        cfg = self.cfg
        out: list[tuple[str, int, int]] = []
        for q in self._spilled:
            if (len(q.ready) < cfg.window // 2 and q.mem_bytes < cfg.window_bytes // 2
                    and any(s.window.available for s in q.subs)):
                out.append((q.name, q.cursor, max(1, min(q.disk, cfg.window - len(q.ready)))))
        return out

    def wants_pages(self) -> bool:
        return bool(self._spilled) and bool(self.wanted_pages())

    def paged_in(self, queue: str, limit: int, stored: list[StoredMessage], now: float) -> None:
        """Messages read from disk for ``queue`` (after its cursor, in id order)."""
        q = self._queue(queue)
        self._admit(stored, now)
        q.disk -= len(stored)
        if len(stored) < limit or q.disk < 0:
            if q.disk:
                log.warning("queue %s: %d message(s) counted on disk were not there",
                            q.name, q.disk)
            q.disk = 0
        if not q.disk:
            self._spilled.discard(q)

    # ---------------------------------------------------------------- dispatch

    def dispatch(self) -> None:
        """Deliver ready messages to consumers with credit, in batches."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        max_batch = self.cfg.max_batch
        max_frame = self.cfg.max_frame
        max_header = self.limits.max_header
        per_msg = codec.PER_MESSAGE
        counters = self.counters
        durable = self.durable
        updates = self._batch.updates
        for q in dirty:
            ready = q.ready
            base = codec.ENVELOPE + len(q.name_b)
            while ready:
                cands = [s for s in q.subs if s.window.available > 0]
                if not cands:
                    break
                sub = cands[self.policy.pick(q.name, cands)] if len(cands) > 1 else cands[0]
                want = min(len(ready), max_batch, sub.window.available)
                held = sub.peer.held
                msgs: list[Msg] = []
                ids: list[int] = []
                attempts: list[int] = []
                bodies: list[bytes] = []
                headers: list[dict[str, Any] | None] = []
                any_headers = False
                fbytes = base
                hbytes = codec.ENVELOPE
                redelivered = 0
                while len(msgs) < want:
                    m = ready[0]
                    h = per_msg + m.hsize
                    fbytes += h + len(m.body)
                    hbytes += h
                    if msgs and (fbytes > max_frame or hbytes > max_header):
                        break  # the batch is full by bytes; the rest waits for the next frame
                    ready.popleft()
                    m.attempts += 1
                    held[m.id] = m
                    msgs.append(m)
                    ids.append(m.id)
                    attempts.append(m.attempts)
                    bodies.append(m.body)
                    headers.append(m.headers)
                    if m.headers is not None:
                        any_headers = True
                    if m.attempts > 1:
                        redelivered += 1
                k = sub.window.take(len(msgs))  # == len(msgs): want was within the window
                if durable:
                    updates.append((ids, attempts, 0.0))  # stored before the frame is sent
                q.delivered += k
                counters["redelivered"] += redelivered
                counters["delivered"] += k
                counters["deliver_frames"] += 1
                # With a durable store the frame waits for the commit of its attempts.
                (self.unstored_out if durable else self.out).append((
                    sub.peer.identity, codec.encode_deliver(
                        q.name_b, ids, attempts, headers if any_headers else [], bodies), msgs))

    # ------------------------------------------------------------------- timers

    def tick(self, now: float) -> None:
        """Heartbeats out, dead peers dropped, due delayed messages made ready."""
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.cfg.heartbeat
            beat = codec.encode(f.Heartbeat())
            for peer in list(self.peers.values()):
                if now - peer.last_seen > peer.liveness_s:
                    self.drop_peer(peer, f"no sign of life for {now - peer.last_seen:.2f}s")
                else:
                    self._send(peer.identity, beat)
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, m = heapq.heappop(delayed)
            m.q.ready.append(m)
            self._dirty.add(m.q)

    def next_deadline(self) -> float:
        if self._delayed and self._delayed[0][0] < self._next_heartbeat:
            return self._delayed[0][0]
        return self._next_heartbeat

    # ---------------------------------------------------------------- peers

    def drop_peer(self, peer: Peer, reason: str) -> None:
        """Forget a session; every message it held goes back to its queue at once."""
        if self.peers.get(peer.identity) is not peer:
            return
        del self.peers[peer.identity]
        peer.state = State.CLOSED
        self.counters["peers_dropped"] += 1
        for sub in peer.subs.values():
            if sub in sub.q.subs:
                sub.q.subs.remove(sub)
        held = list(peer.held.values())
        peer.held.clear()
        self._requeue_front(held)
        log.info("peer %s (%s) dropped: %s; %d message(s) requeued",
                 peer.identity.hex(), peer.name or "?", reason, len(held))

    def send_failed(self, identity: bytes, msgs: list[Msg] | None, unroutable: bool) -> None:
        """The shell could not send to ``identity``; undo a delivery if it was one."""
        self.counters["unroutable" if unroutable else "send_dropped"] += 1
        peer = self.peers.get(identity)
        if peer is None:
            return  # already dropped: drop_peer requeued everything it held
        if msgs:
            back: list[Msg] = []
            for m in msgs:
                if peer.held.pop(m.id, None) is not None:
                    sub = peer.subs[m.q.name]
                    sub.window.settle(1)
                    if sub.active:
                        sub.window.available += 1  # the consumer never saw it: its credit stands
                    m.attempts -= 1  # never reached the consumer
                    if self.durable:
                        self._stage(m)
                    back.append(m)
            self._requeue_front(back)
        if unroutable:
            self.drop_peer(peer, "unroutable")

    def goodbye(self, reason: str) -> None:
        """Tell every peer the broker is going away."""
        bye = codec.encode(f.Bye(reason))
        for peer in self.peers.values():
            self._send(peer.identity, bye)

    # ---------------------------------------------------------------- helpers

    def _queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name)
        return q

    def _send(self, identity: bytes, parts: list[bytes]) -> None:
        self.out.append((identity, parts, None))

    def _fail(self, identity: bytes, exc: ZqError, op: int, ref: Any) -> None:
        self.counters["errors_sent"] += 1
        self._send(identity, codec.encode(f.Error(exc.code, exc.name, exc.message, op, ref)))

    def stats(self) -> dict[str, Any]:
        c: dict[str, Any] = dict(self.counters)
        frames = c["deliver_frames"]
        c["avg_deliver_batch"] = c["delivered"] / frames if frames else 0.0
        in_flight: dict[str, int] = {}
        for p in self.peers.values():  # cancelled subscriptions may still hold messages
            for name, s in p.subs.items():
                in_flight[name] = in_flight.get(name, 0) + s.window.in_flight
        queues = {
            q.name: {
                "ready": len(q.ready) + q.disk,
                "on_disk": q.disk,
                "in_flight": in_flight.get(q.name, 0),
                "consumers": len(q.subs),
                "published": q.published,
                "delivered": q.delivered,
                "acked": q.acked,
                "nacked": q.nacked,
                "dead": q.dead,
            }
            for q in self.queues.values()
        }
        delayed: dict[str, int] = {}
        for _, _, m in self._delayed:
            delayed[m.q.name] = delayed.get(m.q.name, 0) + 1
        for name, n in delayed.items():
            queues[name]["delayed"] = n
        peers = {
            p.identity.hex(): {
                "name": p.name,
                "held": len(p.held),
                "subs": {
                    name: {"in_flight": s.window.in_flight, "available": s.window.available,
                           "peak_in_flight": s.window.peak, "active": s.active}
                    for name, s in p.subs.items()
                },
            }
            for p in self.peers.values()
        }
        return {"broker": self.broker_id, "counters": c, "queues": queues, "peers": peers,
                "store": self.store_stats()}
