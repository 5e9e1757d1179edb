"""The broker's decisions, with no I/O: sessions, queues, credit, acks, leases, heartbeats.

The asyncio shell in ``zq/broker.py`` feeds it received multipart messages with
the current monotonic time, commits the :class:`WriteBatch` it builds, and
sends what it appends to :attr:`BrokerCore.out`. One loop pass is::

    receive(...) * n  ->  tick(now)  ->  take_commit()  ->  store.commit()
    ->  committed()  ->  dispatch(now)  ->  send out

Messages published in a pass enter their queue only after the commit, so a
confirm and a delivery both mean "stored".

A delivery is leased to its consumer for as long as the consumer's session
lives (heartbeats), and optionally bounded by a time limit. Its attempt number
is the fencing token: an ACK or NACK naming any other attempt is refused with
STALE_DELIVERY and changes nothing. Every attempt that does not end in an ack
is recorded in the message's ``zq-history`` header; after ``max_attempts`` of
them, the message moves to its queue's dead-letter queue with that history.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import msgpack

from zq import history
from zq.config import BrokerConfig
from zq.errors import (
    FrameTooLarge,
    InternalError,
    InvalidCredit,
    QueueFull,
    SessionUnknown,
    ShuttingDown,
    StaleDelivery,
    StorageError,
    UnknownDelivery,
    ZqError,
)
from zq.persistence.base import (
    AHEAD,
    DELIVERED,
    WAITING,
    Recovered,
    Rewrite,
    StoredMessage,
    WriteBatch,
)
from zq.policies.dispatch import DispatchPolicy
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import DLQ_SUFFIX, check_publishable, check_queue_name
from zq.protocol.session import State, next_state
from zq.queues import Msg, Queue, Sub
from zq.results import Outcome, Results
from zq.schedules import Schedule
from zq.settings import QueueSettings, from_map

log = logging.getLogger("zq.broker")

# Errors after which the broker forgets the session (the peer is broken or hostile).
_FATAL = frozenset(
    {"MALFORMED_FRAME", "UNSUPPORTED_VERSION", "UNKNOWN_OPCODE", "PROTOCOL_VIOLATION"})

MAX_HEARTBEAT = 60.0  # seconds: the slowest heartbeat a client's HELLO can ask for
STATS_SHOWN = 1000  # queues, peers, and subscriptions of a peer in one STATS reply
HISTORY = history.HISTORY  # header: the failed attempts of a message
ORIGIN = "zq-origin"  # header of a dead letter: the queue it died in
REASON = history.REASON  # header of a dead letter: why it died
DEAD_AT = "zq-dead-at"  # header of a dead letter: when (wall-clock seconds)
# A durable broker stores the next attempt number of a delayed message this long before
# it is due, so that at the due time its DELIVER goes out without waiting for a commit
# (an fsync that stalls then does not make it late).
PRESTORE_LEAD = 0.1

Outgoing = tuple[bytes, list[bytes], "list[Msg] | None"]
# What new messages carry besides bodies: their options, due time and expiry (monotonic).
Extra = tuple[f.Options, float, float]
# A PUBLISH frame not committed yet: peer, queue, seq, first id, bodies, headers, extra.
# A deduplicated publish has no bodies; ``first`` is then the original message's id.
Pending = tuple["Peer | None", Queue, int, int, list[bytes], "list[f.Headers | None] | None",
                "Extra | None"]

_packb = msgpack.Packer(use_bin_type=True).pack


@dataclass(slots=True)
class Commit:
    """One batch on its way to the store, and what waits for it."""

    batch: WriteBatch
    pending: list[Pending]  # to confirm and queue once stored
    deliveries: list[Outgoing]  # to send once stored (their attempt numbers are in it)


class Peer:
    __slots__ = ("confirms", "held", "identity", "last_seen", "liveness_s", "marks", "name",
                 "state", "subs", "zombies")

    def __init__(self, identity: bytes, now: float) -> None:
        self.identity = identity
        self.name = ""
        self.marks = False  # it sends START for the deliveries it begins to work on
        self.state = State.NEW
        self.last_seen = now
        self.liveness_s = 0.0
        self.subs: dict[str, Sub] = {}
        self.held: dict[int, Msg] = {}
        # Deliveries whose time limit ran out while this consumer still had them:
        # id -> (attempt, queue). Their credit comes back when the consumer settles them.
        self.zombies: dict[int, tuple[int, str]] = {}
        self.confirms: list[list[int]] = []


def pack_opts(m: Msg, wall_offset: float) -> bytes | None:
    """The options a stored message keeps (priority, tenant, limits, expiry)."""
    o = m.opts
    d: dict[str, Any] = {}
    if o is not None:
        d = {k: v for k, v in (("priority", o.priority), ("tenant", o.tenant),
                                ("max_attempts", o.max_attempts),
                                ("time_limit_ms", o.time_limit_ms)) if v}
    if m.exp:
        d["expires_at"] = m.exp + wall_offset
    return _packb(d) if d else None


def unpack_opts(d: dict[str, Any] | None) -> f.Options | None:
    if not d:
        return None
    o = f.Options(priority=d.get("priority"), tenant=d.get("tenant"),
                  max_attempts=d.get("max_attempts"), time_limit_ms=d.get("time_limit_ms"))
    return o if o.to_map() else None


def _with_ref(check: Callable[[str], str], name: str, ref: Any) -> str:
    """``check(name)``, with ``ref`` (what the client's frame is known by) on its error."""
    try:
        return check(name)
    except ZqError as exc:
        exc.attrs["ref"] = ref
        raise


def charged(held: list[Msg], marks: bool, probes: set[Msg]) -> set[Msg]:
    """Which of a lost session's deliveries were failed attempts.

    A session that does not send START: all of them. One that does: those it
    marked started, and a suspect it held alone (a probe, see :meth:`_probe`). The
    others go back as if released, so a message that kills its consumer does not
    take the ones prefetched beside it along. When the session vanished without a
    word, its last START and acks may have died with it, so what it held becomes
    *suspect*: suspects are then handed out one at a time, alone, and the next crash
    names the one that causes it.
    """
    if not marks:
        return set(held)
    failed = {m for m in held if m.started == m.attempts}
    for p in probes:  # a probe held beside started work may be innocent: only if alone
        if all(m is p for m in held if m.q is p.q):
            failed.add(p)
    return failed


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
        self.now = 0.0  # the latest time the shell told us
        self.stopping = False
        self._batch = WriteBatch()
        self._pending: list[Pending] = []  # PUBLISH frames not committed yet
        self._inflight: list[Pending] = []  # ... and those of the commit under way
        self.unstored_out: list[Outgoing] = []  # frames to send once the batch is stored
        self.staged = 0  # messages published into the current batch
        self._dirty: set[Queue] = set()
        self._spilled: set[Queue] = set()  # queues with messages on disk only
        self.draining: set[Queue] = set()  # spilled queues to page in without consumers (redrive)
        self._delayed: list[tuple[float, int, Msg]] = []
        self._soon: list[tuple[float, int, Msg]] = []  # due within PRESTORE_LEAD: prestored
        self._prestaged: list[Msg] = []  # next attempts staged in the current batch
        self._prestaging: list[Msg] = []  # ... and in the commit under way
        self._limits: list[tuple[float, int, Msg, Peer]] = []  # attempts' time limits
        self._limits_compact_at = 10_000
        self._tie = itertools.count()
        self._dedup: dict[tuple[str, str], tuple[int, float]] = {}  # -> (id, forget at)
        self._dedup_order: deque[tuple[float, tuple[str, str]]] = deque()
        self._next_heartbeat = 0.0
        self._next_second = 0.0
        self.results = Results()
        self.track_tenants = False  # per-tenant in-flight counts (see configure)
        self.schedules: dict[str, Schedule] = {}
        self._fired_due: dict[int, tuple[str, float]] = {}  # message id -> (schedule, due)
        self.counters = dict.fromkeys(
            ("frames_in", "frames_out", "published", "delivered", "deliver_frames", "acked",
             "nacked", "released", "dead", "expired", "time_limited", "deduplicated",
             "scheduled",
             "redelivered", "unroutable", "send_dropped", "errors_sent", "peers_dropped",
             "undeliverable"), 0)

    # ----------------------------------------------------------------- recovery

    def recover(self, rec: Recovered, now: float) -> None:
        """Load what the store holds; messages that were in flight count that attempt."""
        self.now = now
        for name, state in rec.settings.items():
            try:
                q = self._queue(name)
                self.configure(q, from_map(state.get("settings", {})))
                q.paused = bool(state.get("paused", False))
            except (ZqError, ValueError) as exc:
                log.error("queue %s: stored settings not usable (%s); using defaults", name, exc)
        for name, n in rec.backlog.items():
            q = self._queue(name)
            q.disk = n
            self._spilled.add(q)
        self._admit(rec.messages, now)
        self.next_id = max(self.next_id, rec.next_id)
        wall = now + self.wall_offset
        for queue, key, mid, until in rec.dedups:
            if until > wall:
                self._remember(queue, key, mid, now + until - wall)
        for mid, queue, outcome, data, until in rec.results:
            if until > wall:
                self.results.put(mid, Outcome(outcome, queue, data, now + until - wall))
        for sched in rec.schedules:
            if sched.next_due <= wall and sched.misfire == "skip":
                sched.next_due = sched.after(wall)  # missed while down: go on from now
            self.schedules[sched.name] = sched

    def _admit(self, stored: list[StoredMessage], now: float) -> None:
        """Stored messages into memory: ready, or delayed until their due time.

        A broker that stops, cleanly or not, never costs a message an attempt: a
        delivery in flight when it stopped (DELIVERED) comes back as if released, and
        one whose next attempt number was stored ahead of its due time (AHEAD) gets
        its count back too. Either way the next delivery repeats that number.
        """
        wall = now + self.wall_offset
        for sm in stored:
            q = self._queue(sm.queue)
            attempts = sm.attempts - 1 if sm.state != WAITING and sm.attempts else sm.attempts
            m = Msg(sm.id, q, sm.body, sm.headers, attempts, codec.header_size(sm.headers),
                    now - (wall - sm.created) if sm.created else now)
            o = sm.opts
            if o:
                m.opts = unpack_opts(o)
                m.lane = q.lane_for(m.opts)
                exp = o.get("expires_at")
                if exp:
                    m.exp = now + exp - wall
                    q.ttl_seen = True
                if m.opts is not None and m.opts.time_limit_ms:
                    q.limited = True
            elif q.settings.ttl and sm.created:
                m.exp = m.t + q.settings.ttl
            q.mem_bytes += len(sm.body)
            if sm.id > q.cursor:
                q.cursor = sm.id
            if sm.ready_at > wall:
                self._delay(m, now + sm.ready_at - wall)
            else:
                m.lane.msgs.append(m)
                self._dirty.add(q)

    # ------------------------------------------------------------------ inbound

    def receive(self, identity: bytes, parts: list[bytes], now: float) -> None:
        """Handle one multipart message (the ROUTER envelope already split off)."""
        self.counters["frames_in"] += 1
        self.now = now
        peer = self.peers.get(identity)
        cmd = parts[0] if parts else b""
        op = cmd[3] if len(cmd) == 4 and cmd[:2] == f.SIGNATURE else 0
        try:
            frame = codec.decode(parts, self.limits)
            state = peer.state if peer is not None else State.NEW
            new_state = next_state(state, op)
        except ZqError as exc:
            if isinstance(exc, SessionUnknown) and op in (f.ACK, f.NACK, f.EXTEND):
                # A consumer whose session was dropped settles what it held: those
                # leases are gone, and the answer must say so, not only "say HELLO".
                self._fence_unknown(identity, frame, op)  # type: ignore[arg-type]
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
        except Exception as exc:  # a bug: answer it, and keep serving everybody else
            log.exception("handling %s from %s", f.NAMES.get(op, hex(op)), identity.hex())
            self._fail(identity, InternalError(f"the broker failed: {exc!r}"), op,
                       getattr(frame, "seq", getattr(frame, "req", None)))

    def _fence_unknown(self, identity: bytes, frame: f.Ack | f.Nack | f.Extend, op: int) -> None:
        stale = [i for i in frame.ids if i < self.next_id]
        unknown = [i for i in frame.ids if i >= self.next_id]
        if stale:
            self._fail(identity, StaleDelivery(
                f"{len(stale)} delivery(ies) belonged to a session that has ended"), op, stale)
        if unknown:
            self._fail(identity, UnknownDelivery(f"{len(unknown)} id(s) never delivered"),
                       op, unknown)

    @staticmethod
    def _ref(exc: ZqError) -> Any:
        return exc.attrs.get("ref")

    def _handle(self, peer: Peer, frame: f.Frame, now: float) -> None:
        match frame:
            case f.Publish():
                self.on_publish(peer, frame, now)
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
            case f.Extend():
                self.on_extend(peer, frame, now)
            case f.Start():
                self.on_start(peer, frame)
            case f.Cancel():
                self.on_cancel(peer, frame)
            case f.Hello():
                self.on_hello(peer, frame)
            case f.Bye():
                self.drop_peer(peer, f"BYE {frame.reason}".strip(), suspect=False)
            case f.Stats():
                self._send(peer.identity, codec.encode(f.StatsReply(frame.req, self.stats())))
            case f.Manage():
                from zq import admin  # admin builds on the core; imported late to avoid a cycle

                try:
                    result = admin.manage(self, frame, now, peer)
                except ZqError as exc:
                    exc.attrs["ref"] = frame.req
                    raise
                if result is not None:  # None: answered later (a ``wait``)
                    self._after_commit(peer.identity,
                                       codec.encode(f.ManageReply(frame.req, result)),
                                       readonly=frame.op in admin.READ_ONLY)
            case _:  # pragma: no cover - the session table admits nothing else
                raise AssertionError(frame)

    def on_hello(self, peer: Peer, frame: f.Hello) -> None:
        # Capped where it enters: the name goes into every history entry of this consumer.
        peer.name = history.cap(frame.name, history.MAX_NAME)
        peer.marks = frame.starts
        # A client may ask for slower heartbeats than the broker's, within reason.
        beat = min(max(self.cfg.heartbeat, frame.heartbeat_ms / 1000.0), MAX_HEARTBEAT)
        peer.liveness_s = beat * self.cfg.liveness
        cfg = self.cfg
        self._send(peer.identity, codec.encode(f.Welcome(
            self.broker_id, int(cfg.heartbeat * 1000), cfg.liveness, cfg.max_batch,
            cfg.max_credit, cfg.max_frame, starts=True)))

    def on_publish(self, peer: Peer, frame: f.Publish, now: float) -> None:
        if self.stopping:
            raise ShuttingDown("broker is shutting down; message not stored", ref=frame.seq)
        n = len(frame.bodies)
        if n > self.cfg.max_publish_batch:
            raise FrameTooLarge(f"{n} bodies exceed {self.cfg.max_publish_batch}",
                                ref=frame.seq, limit=self.cfg.max_publish_batch)
        if frame.queue.endswith(DLQ_SUFFIX):  # only the broker writes to dead-letter queues
            _with_ref(check_publishable, frame.queue, frame.seq)
        q = self.queues.get(frame.queue) or self._new_queue(frame.queue, frame.seq)
        opts = frame.opts
        extra: Extra | None = None
        if opts is not None:
            if opts.dedup_id is not None:
                hit = self._dedup.get((q.name, opts.dedup_id))
                if hit is not None and hit[1] > now:
                    self.counters["deduplicated"] += 1
                    self._pending.append((peer, q, frame.seq, hit[0], [], None, (opts, 0.0, 0.0)))
                    return
            due = now + opts.delay_ms / 1000.0 if opts.delay_ms else 0.0
            if opts.eta_ms:
                due = max(due, opts.eta_ms / 1000.0 - self.wall_offset)  # wall -> monotonic
            ttl = opts.ttl_ms / 1000.0 if opts.ttl_ms else q.settings.ttl
            extra = (opts, due, now + ttl if ttl else 0.0)
        s = q.settings
        if s.max_length:
            length = q.ready_count() + q.disk + q.delayed + q.staged
            if length + n > s.max_length:
                drop = q.overflow.on_full(length, s.max_length, n)
                if drop < 0:
                    what = (f"holds {length} of its maximum length of {s.max_length}"
                            if n == 1 or length >= s.max_length else
                            f"holds {length} of {s.max_length}: no room for {n} more")
                    raise QueueFull(f"queue {q.name!r} {what}", ref=frame.seq, queue=q.name,
                                    limit=s.max_length)
                q.to_drop += drop
        first = self.next_id
        self.next_id = first + n
        hdrs = frame.headers or None
        self._pending.append((peer, q, frame.seq, first, frame.bodies, hdrs, extra))
        q.staged += n
        if opts is not None and opts.dedup_id is not None and s.dedup_window:
            self._remember(q.name, opts.dedup_id, first, now + s.dedup_window)
            if self.durable:
                self._batch.dedups.append((q.name, opts.dedup_id, first,
                                           now + s.dedup_window + self.wall_offset))
        if self.durable:
            self.staged += n
            self._batch.inserts.append((first, q.name, hdrs, frame.bodies))
            if extra is not None:
                probe = Msg(first, q, b"", None)
                probe.opts, probe.exp = opts, extra[2]
                blob = pack_opts(probe, self.wall_offset)
                if blob is not None or extra[1]:
                    self._batch.placed.append((first, first + n - 1,
                                               extra[1] + self.wall_offset if extra[1] else 0.0,
                                               blob))

    def _remember(self, queue: str, key: str, mid: int, until: float) -> None:
        self._dedup[(queue, key)] = (mid, until)
        self._dedup_order.append((until, (queue, key)))

    def on_credit(self, peer: Peer, frame: f.Credit) -> None:
        sub = peer.subs.get(frame.queue)
        if sub is None:
            if frame.n <= 0 or frame.n > self.cfg.max_credit:
                raise InvalidCredit(f"credit must be 1..{self.cfg.max_credit} (broker setting "
                                    f"max_credit), got {frame.n}",
                                    ref=frame.queue)
            q = self.queues.get(frame.queue) or self._new_queue(frame.queue, frame.queue)
            sub = peer.subs[frame.queue] = Sub(peer, q, self.cfg.max_credit)
        try:
            sub.window.grant(frame.n)  # a refused grant changes nothing, not even after CANCEL
        except InvalidCredit as exc:
            exc.attrs["ref"] = frame.queue
            raise
        sub.active = True
        if self.queues.get(sub.q.name) is not sub.q:  # the queue was deleted meanwhile
            sub.q = self._queue(sub.q.name)
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

    def _settle(self, peer: Peer, frame: f.Ack | f.Nack | f.Extend, op: int,
                take: bool = True) -> list[Msg]:
        """The named deliveries ``peer`` holds (taken off it if ``take``); report the rest.

        An id the consumer does not hold is STALE_DELIVERY if it was ever
        delivered (its lease ended: acked, timed out, or its session dropped)
        and UNKNOWN_DELIVERY if it never was.
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
                    sub.window.settle(1)
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
        done = self._settle(peer, frame, f.ACK)
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
        if self.durable:
            self._forget(done)

    def _forget(self, msgs: list[Msg]) -> None:
        """Stage the deletion of messages that are done (acked or dead)."""
        self._batch.deletes.extend([m.id for m in msgs])

    def _stage(self, m: Msg) -> None:
        """Stage a message's attempt count after an undone delivery (durable stores only)."""
        if m.pre or m.pre_pending:
            m.pre = m.pre_pending = False
        self._batch.updates.append(([m.id], [m.attempts], 0.0, WAITING))

    def _rewrite(self, m: Msg, ready_at: float = 0.0) -> None:
        """Stage a message's whole state: queue, attempts, due time, headers, options."""
        if m.pre or m.pre_pending:
            m.pre = m.pre_pending = False
        if self.durable:
            self._batch.updates.append(Rewrite(m.id, m.q.name, m.attempts, ready_at, m.headers,
                                               pack_opts(m, self.wall_offset)))

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

    # ------------------------------------------------------- failure handling

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

    def _budget(self, m: Msg) -> int:
        """Header bytes ``m`` may carry and still be delivered alone from any queue."""
        return codec.header_budget(len(m.body), self.limits)

    def _max_attempts(self, m: Msg) -> int:
        o = m.opts
        return o.max_attempts if o is not None and o.max_attempts else \
            m.q.settings.max_attempts

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
            if self.durable:
                self._batch.deletes.append(m.id)
            return
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
            if self.durable:
                self._batch.results.append((m.id, q.name, state, _packb(data),
                                            now + ttl + self.wall_offset))
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
        return self._delayed + self._soon

    def remove_delayed(self, q: Queue) -> list[Msg]:
        """Take ``q``'s delayed messages out of the timer heaps."""
        taken = [e[2] for e in self.delayed_entries() if e[2].q is q]
        self._delayed = [e for e in self._delayed if e[2].q is not q]
        self._soon = [e for e in self._soon if e[2].q is not q]
        heapq.heapify(self._delayed)
        heapq.heapify(self._soon)
        q.delayed = 0
        return taken

    def _delay(self, m: Msg, due: float) -> None:
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

    # ------------------------------------------------------------ commit cycle

    def take_batch(self) -> WriteBatch:
        batch, self._batch = self._batch, WriteBatch()
        batch.created = self.now + self.wall_offset
        self.staged = 0
        return batch

    def take_commit(self) -> Commit:
        """Everything that waits for the store: the batch, and what to do once it is stored."""
        c = Commit(self.take_batch(), self._pending, self.unstored_out)
        self._inflight = self._pending
        self._prestaging, self._prestaged = self._prestaged, []
        self._pending, self.unstored_out = [], []
        return c

    def first_unstored(self, q: Queue) -> int:
        """The lowest id published to ``q`` whose commit has not completed (else next_id).

        Purges and deletes must spare those rows: they enter the queue after the
        operation, once their commit returns.
        """
        firsts = [p[3] for p in itertools.chain(self._inflight, self._pending)
                  if p[1] is q and p[4]]
        return min(firsts, default=self.next_id)

    def _after_commit(self, identity: bytes, parts: list[bytes], readonly: bool = False
                      ) -> None:
        """Send a reply once what came before it is stored (and confirmed). A reply to
        a reading operation (``readonly``) goes out even if that commit fails: it
        changed nothing, and what it read needs no storing (see fail_replies)."""
        self.unstored_out.append((identity, parts, [] if readonly else None))

    def release(self, deliveries: list[Outgoing]) -> None:
        """Send frames whose commit returned, unless their session ended meanwhile.

        A session dropped while the commit ran has had its messages requeued, and
        a new session of the same client must not get the old session's frames.
        """
        peers = self.peers
        for d in deliveries:
            peer = peers.get(d[0])
            if peer is None:
                continue
            msgs = d[2]
            held = peer.held
            # Usually the first tells (a new session holds none of them); a time limit
            # that ran out during the commit may have taken some of a frame, not all.
            if not msgs or held.get(msgs[0].id) is msgs[0] or any(
                    held.get(m.id) is m for m in msgs):
                self.out.append(d)

    def has_unstored(self) -> bool:
        """Whether anything waits for a commit."""
        return bool(self._batch or self._pending or self.unstored_out)

    def restage(self, batch: WriteBatch) -> None:
        """What failed to commit, except new messages, goes into the next batch
        (compacted, so that a store failing for long does not grow it without end)."""
        b = self._batch
        b.updates[:0] = batch.updates  # older than anything staged since
        b.deletes.extend(batch.deletes)
        b.settings[:0] = batch.settings
        b.purges[:0] = batch.purges
        b.results[:0] = batch.results
        b.schedules.extend(self._schedule_states(batch.schedules))
        b.compact()

    def settlements_of(self, batch: WriteBatch) -> WriteBatch:
        """What of a batch that failed may be stored without its new messages:
        settlements, attempt numbers, history, queue changes, results, and the
        schedules it touched as they are now."""
        rest = batch.without_inserts()
        rest.schedules = self._schedule_states(batch.schedules)
        return rest

    def _schedule_states(self, staged: list[tuple[str, bytes | None]]
                         ) -> list[tuple[str, bytes | None]]:
        """Current state of the schedules named in ``staged`` (one whose message was
        refused has been wound back, so what was staged for it is stale)."""
        out: list[tuple[str, bytes | None]] = []
        for name in dict.fromkeys(n for n, _ in staged):
            sched = self.schedules.get(name)
            out.append((name, None if sched is None else _packb(sched.to_map())))
        return out

    def fail_replies(self, deliveries: list[Outgoing], exc: ZqError) -> list[Outgoing]:
        """Answer the replies among ``deliveries`` (they waited for a commit that
        failed) with ``exc`` now; return the DELIVER frames, which go out anyway, and
        the replies to reading operations."""
        keep: list[Outgoing] = []
        for d in deliveries:
            if d[2] is not None:
                keep.append(d)
                continue
            if d[0] not in self.peers:
                continue
            reply = codec.decode(d[1])
            op = f.STATS if isinstance(reply, f.StatsReply) else f.MANAGE
            self._fail(d[0], type(exc)(
                f"not stored: {exc.message}; what the request changed stays in effect in "
                f"the broker and is stored by a later commit", **exc.attrs), op,
                getattr(reply, "req", None))
        return keep

    def committed(self, pending: list[Pending] | None = None) -> None:
        """A batch is stored: queue its messages, confirm its publishes.

        ``pending`` comes from :meth:`take_commit`; without it, everything
        published so far counts as stored (the memory store, and tests).
        """
        if pending is None:
            pending, self._pending = self._pending, []
        self._inflight = []
        if self._prestaging:
            for m in self._prestaging:
                if m.pre_pending:  # not delivered or rewritten since it was staged
                    m.pre = True
                    m.pre_pending = False
            self._prestaging = []
        touched: list[Peer] = []
        window, window_bytes = self.cfg.window, self.cfg.window_bytes
        durable = self.durable
        now = self.now
        trim: list[Queue] = []
        for peer, q, seq, first, bodies, hdrs, extra in pending:
            n = len(bodies)
            if not n and peer is not None:  # a deduplicated publish: the original's id ...
                if extra is not None and extra[0].dedup_id is not None and \
                        self._dedup.get((q.name, extra[0].dedup_id), (0, 0.0))[0] != first:
                    # ... unless the original's commit failed (commits complete in order)
                    self._fail(peer.identity, StorageError(
                        "the first publish of this dedup_id was not stored; publish again"),
                        f.PUBLISH, seq)
                    continue
                if not peer.confirms:
                    touched.append(peer)
                peer.confirms.append([seq, first, 1])
                continue
            if self.queues.get(q.name) is not q:  # deleted while this publish was stored
                q = self._queue(q.name)
            q.staged -= n
            if durable and (q.disk or q.ready_count() >= window or q.mem_bytes >= window_bytes):
                if not q.disk:
                    q.cursor = first - 1
                    self._spilled.add(q)
                q.disk += n  # stored; paged in when the queue drains
            elif extra is None and not q.ttl_seen:
                ready = q.default.msgs
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
                self._place_new(q, first, bodies, hdrs, extra, now)
            if q.to_drop:
                trim.append(q)
            q.published += n
            self.counters["published"] += n
            if peer is None:  # fired by a schedule: nobody to confirm to
                self._fired_due.pop(first, None)
                continue
            if not peer.confirms:
                touched.append(peer)
            peer.confirms.append([seq, first, n])
        for peer in touched:
            confirms, peer.confirms = peer.confirms, []
            if peer.state is State.READY:
                self._send(peer.identity, codec.encode_confirm(confirms))
        for q in trim:
            self._drop_oldest(q, now)
        if not durable and self.unstored_out:  # replies, after the confirms before them
            self.out.extend(self.unstored_out)
            self.unstored_out = []

    def _place_new(self, q: Queue, first: int, bodies: list[bytes],
                   hdrs: list[f.Headers | None] | None, extra: Extra | None, now: float) -> None:
        """New messages with options (or a queue TTL): their lane, due time, expiry."""
        opts, due, exp = extra if extra is not None else (None, 0.0, 0.0)
        if not exp and q.settings.ttl:
            exp = now + q.settings.ttl
        lane = q.lane_for(opts)
        hsize = codec.header_size
        for i, body in enumerate(bodies):
            h = hdrs[i] if hdrs else None
            m = Msg(first + i, q, body, h, 0, hsize(h) if h is not None else 0, now)
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
                (self._delayed if entry in self._delayed else self._soon).remove(entry)
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
            heapq.heapify(self._soon)

    def commit_failed(self, exc: ZqError, pending: list[Pending] | None = None) -> None:
        """A batch was not stored: refuse its publishes, store nothing."""
        if pending is None:
            pending, self._pending = self._pending, []
        self._inflight = []
        for m in self._prestaging:
            if m.pre_pending:
                m.pre_pending = False  # not stored: it goes the ordinary way
        self._prestaging = []
        for peer, q, seq, first, bodies, _h, extra in pending:
            q.staged -= len(bodies)
            if bodies and extra is not None and extra[0].dedup_id is not None:
                key = (q.name, extra[0].dedup_id)
                if self._dedup.get(key, (0, 0.0))[0] == first:
                    del self._dedup[key]
            if peer is None:  # a schedule's message: that due time fires again
                self._unfire(first)
                continue
            self._fail(peer.identity, exc, f.PUBLISH, seq)

    # ---------------------------------------------------------------- paging

    def wanted_pages(self) -> list[tuple[str, int, int]]:
        """(queue, after_id, limit) for queues whose backlog on disk should page in now."""
        cfg = self.cfg
        out: list[tuple[str, int, int]] = []
        for q in self._spilled:
            ready = q.ready_count()
            if (ready < cfg.window // 2 and q.mem_bytes < cfg.window_bytes // 2
                    and (q in self.draining or any(s.window.available for s in q.subs))):
                out.append((q.name, q.cursor, max(1, min(q.disk, cfg.window - ready))))
        return out

    def wants_pages(self) -> bool:
        return bool(self._spilled) and bool(self.wanted_pages())

    def paged_in(self, queue: str, limit: int, stored: list[StoredMessage], now: float) -> None:
        """Messages read from disk for ``queue`` (after its cursor, in id order)."""
        q = self._queue(queue)
        n = len(stored)
        if q.moved_in and stored:  # moved here while the backlog was on disk: in memory
            last = stored[-1].id
            stored = [sm for sm in stored if sm.id not in q.moved_in]
            q.cursor = max(q.cursor, last)
            q.moved_in = {i for i in q.moved_in if i > last}
        self._admit(stored, now)
        q.disk -= len(stored)
        if n < limit or q.disk < 0:
            if q.disk:
                log.warning("queue %s: %d message(s) counted on disk were not there",
                            q.name, q.disk)
            q.disk = 0
        if not q.disk:
            self._spilled.discard(q)
            self.draining.discard(q)

    # ---------------------------------------------------------------- dispatch

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
                msgs, prestored = self._fill(q, sub, min(max_batch, sub.window.available),
                                             now, expired)
                if not msgs:
                    break
                self._send_deliver(q, sub, msgs, prestored, now)
            for m in expired:
                self._expire(m, now)

    def _fill(self, q: Queue, sub: Sub, want: int, now: float, expired: list[Msg]
              ) -> tuple[list[Msg], bool]:
        """Take up to ``want`` messages for one DELIVER to ``sub``: lane by lane, within
        the frame's byte limits; each becomes that consumer's next attempt. Returns
        them and whether all had their attempt stored ahead (see _prestore)."""
        max_frame = self.cfg.max_frame
        max_header = self.limits.max_header
        per_msg = codec.PER_MESSAGE
        held = sub.peer.held
        msgs: list[Msg] = []
        fbytes = codec.ENVELOPE + len(q.name_b)
        hbytes = codec.ENVELOPE
        check_exp = q.ttl_seen
        multi = len(q.order) > 1
        prestored = self.durable
        full = False
        while len(msgs) < want and not full:
            lane, quota = q.next_lane()
            if lane is None:
                break
            ready = lane.msgs
            acct = lane.acct
            take = min(want - len(msgs), quota)
            if acct.cap:
                take = min(take, acct.cap - acct.in_flight)
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
                if not m.pre:
                    prestored = False
                if m.pre or m.pre_pending:
                    m.pre = m.pre_pending = False
                held[m.id] = m
                msgs.append(m)
            got = len(msgs) - before
            if self.track_tenants:
                acct.in_flight += got
            if multi:
                q.selector.took(lane.tenant, got)
                if not ready:
                    q.selector.idle(lane.tenant)
        return msgs, prestored

    def _send_deliver(self, q: Queue, sub: Sub, msgs: list[Msg], prestored: bool,
                      now: float) -> None:
        """One DELIVER of ``msgs`` (attempts already counted) to ``sub``'s consumer."""
        ids = [m.id for m in msgs]
        attempts = [m.attempts for m in msgs]
        headers = [m.headers for m in msgs]
        if headers.count(None) == len(headers):
            headers = []
        k = sub.window.take(len(msgs))  # == len(msgs): it was within the window
        if self.durable:
            # Stored before the frame is sent; or, for attempts stored ahead, after it:
            # then it only marks them delivered (see _admit for a crash between).
            self._batch.updates.append((ids, attempts, 0.0, DELIVERED))
        if q.limited:
            self._arm_limits(q, msgs, sub.peer, now)
        q.delivered += k
        counters = self.counters
        counters["redelivered"] += k - attempts.count(1)
        counters["delivered"] += k
        counters["deliver_frames"] += 1
        # With a durable store the frame waits for the commit of its attempts,
        # unless they were stored ahead (delayed messages that came due).
        (self.unstored_out if self.durable and not prestored else self.out).append((
            sub.peer.identity, codec.encode_deliver(q.name_b, ids, attempts, headers,
                                                    [m.body for m in msgs]), msgs))

    def _probe(self, q: Queue, now: float) -> None:
        """Hand suspects out (see :func:`charged`). A consumer that marks its starts
        gets one at a time, when all else it holds of the queue is begun, and nothing
        more until it begins or settles it: if it vanishes meanwhile holding only that
        one, that was the one. Others (charged for all they hold anyway) get them in
        ordinary batches."""
        for sub in q.subs:
            w = sub.window
            if not q.suspects or sub.probe is not None or not w.available:
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
                self._send_deliver(q, sub, msgs, False, now)

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

    # ------------------------------------------------------------------- timers

    def tick(self, now: float) -> None:
        """Heartbeats, dead peers, due delayed messages, time limits, expiry, rates."""
        self.now = now
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.cfg.heartbeat
            beat = codec.encode(f.Heartbeat())
            for peer in list(self.peers.values()):
                if now - peer.last_seen > peer.liveness_s:
                    self.drop_peer(peer, f"no sign of life for {now - peer.last_seen:.2f}s")
                else:
                    self._send(peer.identity, beat)
        delayed = self._delayed
        if self.durable and delayed and delayed[0][0] <= now + PRESTORE_LEAD:
            self._prestore(now)
        for heap in (self._soon, delayed):
            while heap and heap[0][0] <= now:
                _, _, m = heapq.heappop(heap)
                q = m.q
                q.delayed -= 1
                if self.queues.get(q.name) is not q:
                    continue  # its queue was deleted
                m.lane.msgs.append(m)
                self._dirty.add(q)
        limits = self._limits
        while limits and limits[0][0] <= now:
            deadline, _, m, peer = heapq.heappop(limits)
            if m.deadline != deadline or peer.held.get(m.id) is not m:
                continue  # settled, extended, or lost meanwhile
            self._time_limited(m, peer, now)
        if self.results._timeouts and self.results.next_timeout() <= now:
            from zq import tasks_admin

            for mid, w in self.results.timed_out(now):
                if w.identity in self.peers:
                    self._after_commit(w.identity, codec.encode(f.ManageReply(
                        w.req, tasks_admin.status_of(self, w.queue, mid, now))))
        if self.schedules:
            self._fire_schedules(now)
        if now >= self._next_second:
            self._every_second(now)

    def _fire_schedules(self, now: float) -> None:
        """Publish a message for each schedule that is due, and store its next due time."""
        wall = now + self.wall_offset
        for s in list(self.schedules.values()):
            if s.next_due > wall or self.stopping:
                continue
            due = s.next_due
            q = self._queue(s.queue)
            headers = dict(s.headers or {})
            headers["zq-schedule"] = s.name
            headers["zq-due"] = round(due, 3)
            opts = f.Options(**s.options) if s.options else None
            mid = self.next_id
            self.next_id += 1
            extra: Extra | None = None
            if opts is not None:
                ttl = opts.ttl_ms / 1000.0 if opts.ttl_ms else q.settings.ttl
                extra = (opts, 0.0, now + ttl if ttl else 0.0)
            self._pending.append((None, q, 0, mid, [s.body], [headers], extra))
            self._fired_due[mid] = (s.name, due)  # until stored: a failed commit undoes it
            q.staged += 1
            s.fired += 1
            s.last_fired = wall
            nxt = s.after(due)
            s.next_due = nxt if nxt > wall else s.after(wall)  # late: no second message
            if self.durable:
                self.staged += 1
                self._batch.inserts.append((mid, q.name, [headers], [s.body]))
                if extra is not None:
                    probe = Msg(mid, q, b"", None)
                    probe.opts, probe.exp = opts, extra[2]
                    self._batch.placed.append((mid, mid, 0.0, pack_opts(probe,
                                                                        self.wall_offset)))
                self.stage_schedule(s)
            self.counters["scheduled"] += 1

    def _unfire(self, mid: int) -> None:
        """A schedule's message was not stored: its due time comes round again."""
        name, due = self._fired_due.pop(mid, ("", 0.0))
        s = self.schedules.get(name)
        if s is not None:
            s.next_due = min(s.next_due, due)
            s.fired -= 1

    def stage_schedule(self, s: Schedule) -> None:
        if self.durable:
            self._batch.schedules.append((s.name, _packb(s.to_map())))

    def _prestore(self, now: float) -> None:
        """Stage the next attempt of delayed messages due soon, keeping their due times.

        Once that is stored, their DELIVER goes out at the due time at once instead
        of waiting then for a commit. A crash in between leaves the stored attempt
        count one ahead, as a crash during a delivery's commit can.
        """
        delayed, soon = self._delayed, self._soon
        horizon = now + PRESTORE_LEAD
        updates = self._batch.updates
        wall = self.wall_offset
        while delayed and delayed[0][0] <= horizon:
            e = heapq.heappop(delayed)
            heapq.heappush(soon, e)
            m = e[2]
            if e[0] > now:
                updates.append(([m.id], [m.attempts + 1], e[0] + wall, AHEAD))
                m.pre_pending = True
                self._prestaged.append(m)

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
        alpha = min(1.0, elapsed / 5.0)  # about a 5 s moving average
        for q in list(self.queues.values()):  # expiry may create dead-letter queues
            r = q.rates
            for key, total in (("publish", q.published), ("deliver", q.delivered),
                               ("ack", q.acked)):
                last = r.get("_" + key, float(total))
                rate = (total - last) / elapsed if elapsed > 0 else 0.0
                r[key] += alpha * (rate - r[key])
                r["_" + key] = float(total)
            if q.ttl_seen:
                for lane in q.order:
                    while lane.msgs and lane.msgs[0].exp and lane.msgs[0].exp <= now:
                        self._expire(lane.msgs.popleft(), now)
        self.results.expire(now)
        order = self._dedup_order
        while order and order[0][0] <= now:
            _, dkey = order.popleft()
            hit = self._dedup.get(dkey)
            if hit is not None and hit[1] <= now:
                del self._dedup[dkey]

    def next_deadline(self) -> float:
        t = min(self._next_heartbeat, self._next_second)
        if self._delayed:
            due = self._delayed[0][0] - (PRESTORE_LEAD if self.durable else 0.0)
            if due < t:
                t = due
        if self._soon and self._soon[0][0] < t:
            t = self._soon[0][0]
        if self._limits and self._limits[0][0] < t:
            t = self._limits[0][0]
        if self.results._timeouts:
            t = min(t, self.results.next_timeout())
        if self.schedules:
            t = min(t, min(s.next_due for s in self.schedules.values()) - self.wall_offset)
        return t

    # ---------------------------------------------------------------- peers

    def drop_peer(self, peer: Peer, reason: str, suspect: bool = True,
                  charge: bool = True) -> None:
        """Forget a session; every message it held has lost its lease.

        Those it had started are failed attempts (``consumer lost``), retried or
        dead; those it had not go back as if released (see :func:`charged`).
        ``suspect``: the peer vanished without a word (silence, a fatal error,
        unroutable), so what it held becomes suspect. ``charge``: False when the
        broker itself is stopping (no message is to blame).
        """
        if self.peers.get(peer.identity) is not peer:
            return
        del self.peers[peer.identity]
        peer.state = State.CLOSED
        if self.results.waiters:
            self.results.drop_peer(peer.identity)
        self.counters["peers_dropped"] += 1
        probes: set[Msg] = set()
        for sub in peer.subs.values():
            if sub in sub.q.subs:
                sub.q.subs.remove(sub)
            if sub.probe is not None:
                probes.add(sub.probe)
                sub.probe = None
        held = sorted(peer.held.values(), key=lambda m: m.id)
        peer.held.clear()
        failed = charged(held, peer.marks, probes if suspect else set()) if charge else set()
        now = self.now
        back: list[Msg] = []
        for m in held:
            self.untrack(m)
            if suspect:
                m.suspect = True
            if m in failed:
                self._record(m, "consumer lost", reason, peer.name, now)
                self._retry(m, "consumer lost", now, 0.0, back)
            else:
                self._undeliver(m)
                back.append(m)
        self._requeue_front(back)
        self.counters["released"] += len(held) - len(failed)
        log.info("peer %s (%s) dropped: %s; %d message(s) back to their queues, %d of them "
                 "as failed attempts", peer.identity.hex(), peer.name or "?", reason, len(held),
                 len(failed))

    def _unprobe(self, sub: Sub) -> None:
        """``sub``'s probe is over: it may take deliveries (or the next probe) again."""
        sub.probe = None
        self._dirty.add(sub.q)

    def close_sessions(self, reason: str) -> None:
        """Say BYE to every peer and end its session (a clean shutdown). The broker
        stopping is no message's fault: what they held goes back unattempted, stored
        with the next commit."""
        bye = codec.encode(f.Bye(reason))
        for peer in list(self.peers.values()):
            self._send(peer.identity, bye)
            self.drop_peer(peer, reason, suspect=False, charge=False)

    def _undeliver(self, m: Msg) -> None:
        """A delivery that did not count: its attempt number goes back, stored so."""
        m.attempts -= 1
        if m.deadline:
            m.deadline = 0.0
        if self.durable:
            self._stage(m)

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
                    if sub.probe is m:
                        self._unprobe(sub)
                    if sub.active:
                        sub.window.available += 1  # the consumer never saw it: its credit stands
                    self.untrack(m)
                    self._undeliver(m)  # never reached the consumer
                    back.append(m)
            self._requeue_front(back)
        if unroutable:
            self.drop_peer(peer, "unroutable")

    # ---------------------------------------------------------------- helpers

    def untrack(self, m: Msg) -> None:
        """``m`` is no longer in flight (its tenant's count, kept only when caps exist)."""
        if self.track_tenants:
            m.lane.acct.in_flight -= 1

    def configure(self, q: Queue, s: QueueSettings) -> None:
        """Apply settings to a queue. Per-tenant in-flight counts cost a little on every
        ack, so they are kept only once some queue caps a tenant (counted afresh then)."""
        q.configure(s)
        if s.caps and not self.track_tenants:
            self.track_tenants = True
            for queue in self.queues.values():
                for t in queue.tenants.values():
                    t.in_flight = 0
            for p in self.peers.values():
                for m in p.held.values():
                    m.lane.acct.in_flight += 1

    def tenant_in_flight(self, q: Queue) -> dict[str, int]:
        if self.track_tenants:
            return {t.name: t.in_flight for t in q.tenants.values()}
        counts = dict.fromkeys(q.tenants, 0)
        for p in self.peers.values():
            for m in p.held.values():
                if m.q is q:
                    counts[m.lane.tenant] = counts.get(m.lane.tenant, 0) + 1
        return counts

    def _new_queue(self, name: str, ref: Any) -> Queue:
        """Create the queue a client named, if the name follows the rule (else
        INVALID_QUEUE_NAME with ``ref``, the frame's reference)."""
        return self._queue(_with_ref(check_queue_name, name, ref))

    def _queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name)
        return q

    def stage_settings(self, q: Queue) -> None:
        if self.durable:
            self._batch.settings.append((q.name, _packb(
                {"settings": q.settings.to_map(), "paused": q.paused})))

    def _send(self, identity: bytes, parts: list[bytes]) -> None:
        self.out.append((identity, parts, None))

    def _fail(self, identity: bytes, exc: ZqError, op: int, ref: Any) -> None:
        self.counters["errors_sent"] += 1
        self._send(identity, codec.encode(f.Error(exc.code, exc.name, exc.message, op, ref)))

    def queue_stats(self, q: Queue, in_flight: int, now: float) -> dict[str, Any]:
        oldest = q.oldest()
        counts = self.tenant_in_flight(q)
        return {
            "ready": q.ready_count() + q.disk,
            "on_disk": q.disk,
            "delayed": q.delayed,
            "in_flight": in_flight,
            "consumers": len(q.subs),
            "published": q.published,
            "delivered": q.delivered,
            "acked": q.acked,
            "nacked": q.nacked,
            "dead": q.dead,
            "undeliverable": q.undeliverable,
            "paused": q.paused,
            "oldest_age": round(now - oldest, 3) if oldest else 0.0,
            "rates": {k: round(v, 1) for k, v in q.rates.items() if not k.startswith("_")},
            "tenants": {t.name: {"in_flight": counts.get(t.name, 0), "weight": t.weight,
                                 "cap": t.cap}
                        for t in q.tenants.values() if t.name},
        }

    def in_flight(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.peers.values():  # cancelled subscriptions may still hold messages
            for name, s in p.subs.items():
                counts[name] = counts.get(name, 0) + s.window.in_flight
        return counts

    def stats(self) -> dict[str, Any]:
        """Counters, and the first STATS_SHOWN queues and peers (by name and routing id;
        ``queues_total`` and ``peers_total`` count them all): the reply is one header
        part, within 4 MiB however many there are. MANAGE ``list`` pages through queues."""
        c: dict[str, Any] = dict(self.counters)
        frames = c["deliver_frames"]
        c["avg_deliver_batch"] = c["delivered"] / frames if frames else 0.0
        in_flight = self.in_flight()
        now = self.now
        names = sorted(self.queues)[:STATS_SHOWN]
        queues = {n: self.queue_stats(self.queues[n], in_flight.get(n, 0), now) for n in names}
        shown = sorted(self.peers)[:STATS_SHOWN]
        peers = {identity.hex(): self._peer_stats(self.peers[identity]) for identity in shown}
        return {"broker": self.broker_id, "counters": c, "queues": queues, "peers": peers,
                "queues_total": len(self.queues), "peers_total": len(self.peers),
                "store": self.store_stats()}

    @staticmethod
    def _peer_stats(p: Peer) -> dict[str, Any]:
        subs = sorted(p.subs.items())[:STATS_SHOWN]
        return {"name": p.name, "held": len(p.held), "subs_total": len(p.subs), "subs": {
            name: {"in_flight": s.window.in_flight, "available": s.window.available,
                   "peak_in_flight": s.window.peak, "active": s.active} for name, s in subs}}
