"""The broker core's shared state: queues, peers, counters, heaps, and the small helpers
every rule module uses. No I/O. The rule modules build on it one layer at a time
(see zq/core/__init__.py); none of them reaches up to a later one.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from zq import history
from zq.config import BrokerConfig
from zq.core.api import NO_OPERATIONS, Operations
from zq.core.histogram import Histogram
from zq.core.journal import Journal, PendingPublish
from zq.core.membership import Membership
from zq.core.model import MoveOut, Msg, Peer, Queue, Sub
from zq.core.outbox import Outbox, Outgoing
from zq.core.producers import Producers
from zq.core.results import Results
from zq.errors import (
    Moved,
    ZqError,
)
from zq.persistence.base import (
    WriteBatch,
)
from zq.policies.dispatch import DispatchPolicy
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import FATAL_NAMES
from zq.protocol.limits import MAX_HEARTBEAT as MAX_HEARTBEAT
from zq.protocol.names import check_queue_name
from zq.schedules import Schedule
from zq.security.permissions import Permissions
from zq.settings import QueueSettings
from zq.uplink import settings as uplink_settings
from zq.uplink.settings import forwarded

if TYPE_CHECKING:
    from zq.core.streams import Group, Stream
    from zq.core.topics import Topic

log = logging.getLogger("zq.broker")

# Errors after which the broker forgets the session (the peer is broken or hostile).
_FATAL = FATAL_NAMES

STATS_SHOWN = 1000  # queues, peers, and subscriptions of a peer in one STATS reply
HISTORY = history.HISTORY  # header: the failed attempts of a message
ORIGIN = history.ORIGIN  # header of a dead letter: the queue it died in
REASON = history.REASON  # header of a dead letter: why it died
DEAD_AT = history.DEAD_AT  # header of a dead letter: when (wall-clock seconds)

# What new messages carry besides bodies: their options, due time and expiry (monotonic).
Extra = tuple[f.Options, float, float]

_packb = msgpack.Packer(use_bin_type=True).pack



@dataclass(slots=True)
class Commit:
    """One batch on its way to the store, and what waits for it."""

    batch: WriteBatch
    pending: list[PendingPublish]  # to confirm and queue once stored
    deliveries: list[Outgoing]  # to send once stored (their attempt numbers are in it)


def pack_opts(m: Msg, wall_offset: float) -> bytes | None:
    """The options a stored message keeps (priority, tenant, limits, expiry)."""
    o = m.opts
    d: dict[str, Any] = {}
    if o is not None:
        d = {k: v for k, v in (("priority", o.priority), ("tenant", o.tenant),
                                ("max_attempts", o.max_attempts),
                                ("time_limit_ms", o.time_limit_ms)) if v}
        if o.dedup_id is not None and m.q.forward:  # it travels with the message
            d["dedup_id"] = o.dedup_id
    if m.exp:
        d["expires_at"] = m.exp + wall_offset
    return _packb(d) if d else None


def unpack_opts(d: dict[str, Any] | None) -> f.Options | None:
    if not d:
        return None
    o = f.Options(priority=d.get("priority"), tenant=d.get("tenant"),
                  max_attempts=d.get("max_attempts"), time_limit_ms=d.get("time_limit_ms"),
                  dedup_id=d.get("dedup_id"))
    return o if o.to_map() else None


def _with_ref(check: Callable[[str], str], name: str, ref: Any) -> str:
    """``check(name)``, with ``ref`` (what the client's frame is known by) on its error."""
    try:
        return check(name)
    except ZqError as exc:
        exc.attrs["ref"] = ref
        raise



class CoreState:
    """What every rule of the broker reads and changes (one instance per broker)."""

    def __init__(self, cfg: BrokerConfig, dispatch: DispatchPolicy, broker_id: str,
                 *, durable: bool = False, operations: Operations = NO_OPERATIONS) -> None:
        self.cfg = cfg
        self.operations = operations  # MANAGE handlers (zq.manage), handed in
        # What the store must keep, and what waits for it (it stages nothing unless
        # ``durable``: the store keeps it).
        self.journal = Journal(durable)
        self.wall_offset = 0.0  # time.time() - time.monotonic(), for due times kept on disk
        self.store_stats: Callable[[], dict[str, Any]] = dict  # the shell plugs in its store's
        # A replicated broker's shell plugs in its replication's state (zq.ha), for STATS.
        self.ha_stats: Callable[[], dict[str, Any]] | None = None
        self.security_stats: Callable[[], dict[str, Any]] | None = None  # the shell's guard
        self.uplink_stats: Callable[[], dict[str, Any]] | None = None  # its uplink (--uplink)
        self.policy = dispatch
        self.broker_id = broker_id
        self.limits = codec.Limits(max_frame=cfg.max_frame, max_header=cfg.max_header,
                                   max_batch=max(cfg.max_publish_batch, cfg.max_credit))
        self.queues: dict[str, Queue] = {}
        self.peers: dict[bytes, Peer] = {}
        # Security (zq.core.access): whether every frame carries its CURVE key, what each
        # key may do (None: everything), sessions per key, malformed frames per routing id,
        # and what the shell must do with the connection of the frame just received.
        self.secure = False
        self.rights: Permissions | None = None
        self.per_key: Counter[str | None] = Counter()
        self.strikes: dict[bytes, int] = {}
        self.noted: list[str] = []  # "session" (it has one now) or "cut" (close it)
        # What MANAGE "reload" runs: the shell's reload of keys, permissions, cluster file.
        self.reload_hook: Callable[[], dict[str, Any]] = dict
        # Work nodes' latest reports (MANAGE node, zq.manage.nodes): name -> entry.
        self.nodes: dict[str, dict[str, Any]] = {}
        self.next_id = 1
        self.now = 0.0  # the latest time the shell told us
        self.stopping = False
        self._dirty: set[Queue] = set()
        self._spilled: set[Queue] = set()  # queues with messages on disk only
        self.draining: set[Queue] = set()  # spilled queues to page in without consumers (redrive)
        self._delayed: list[tuple[float, int, Msg]] = []
        self._limits: list[tuple[float, int, Msg, Peer]] = []  # attempts' time limits
        self._limits_compact_at = 10_000
        self._tie = itertools.count()
        self._dedup: dict[tuple[str, str], tuple[int, float]] = {}  # -> (id, forget at)
        self._dedup_order: deque[tuple[float, tuple[str, str]]] = deque()
        self.producers = Producers(cfg.producer_window, cfg.producer_ttl)
        # The queues an uplink forwards (zq.core.uplink): none without --uplink.
        self.forwards = uplink_settings.patterns(cfg) if cfg.uplink else ()
        # Their delayed messages taken off the timers to be forwarded, in id order.
        self.uplink_spare: dict[Queue, deque[Msg]] = {}
        self.uplink_waiting: set[Queue] = set()  # a run waits for the rest of it on disk
        self.uplink_queues: dict[str, Queue] = {}  # the forwarded ones (zq.core.uplink)
        self.uplink_turn = 0  # which of them goes first at the next take
        self.topics: dict[str, Topic] = {}  # topics and their bindings (zq.core.topics)
        self.streams: dict[str, Stream] = {}  # streams and their groups (zq.core.streams)
        self._seeking: set[Group] = set()  # groups whose start the store must look up
        self._over: set[Stream] = set()  # streams past their max_bytes since the last trim
        # In a cluster: whose queues are new names (None: a lone broker creates any).
        self.membership: Membership | None = None
        self.links: dict[bytes, Peer] = {}  # routers' links, by routing id
        # An inner session (a client behind a router) -> (its link's routing id, the
        # client's key): the shell wraps what goes to it in a FORWARD on that link.
        self.routes: dict[bytes, tuple[bytes, bytes]] = {}
        self._routes_left: set[bytes] = set()  # routes without a session at the last sweep
        self.catalog_changes: list[tuple[str, str]] = []  # ("add" | "remove" | "moved", queue)
        # Queues moved from here to another broker: where they went (section 17.5).
        self.moved_out: dict[str, MoveOut] = {}
        self.moves_started = False  # a move was recorded: the shell starts shipping it
        self._next_heartbeat = 0.0
        self._next_second = 0.0
        self.results = Results()
        self.track_tenants = False  # per-tenant in-flight counts (see configure)
        self.schedules: dict[str, Schedule] = {}
        self._fired_due: dict[int, tuple[str, float]] = {}  # message id -> (schedule, due)
        self.counters = dict.fromkeys(
            ("frames_in", "frames_out", "published", "delivered", "deliver_frames", "acked",
             "nacked", "released", "dead", "expired", "time_limited", "deduplicated", "resent",
             "scheduled",
             "redelivered", "unroutable", "send_dropped", "errors_sent", "peers_dropped",
             "undeliverable", "forwards_in", "forwards_out", "frames_refused", "peers_cut",
             "forwarded", "uplink_refused", "unroutable_dropped"), 0)
        self.outbox = Outbox(self.counters)  # frames for the shell to send
        # Publish -> confirm (per PUBLISH frame) and publish (or due) -> first delivery
        # (per DELIVER frame, its oldest message's wait): weighted by the messages.
        self.confirm_latency = Histogram()
        self.deliver_latency = Histogram()

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

    def _new_queue(self, name: str, ref: Any, peer: Peer | None = None) -> Queue:
        """Create the queue a client named, if the name follows the rule (else
        INVALID_QUEUE_NAME with ``ref``, the frame's reference) and, in a cluster, is
        placed on this broker (else MOVED or STALE_CONFIG, PROTOCOL.md section 17.1)."""
        _with_ref(check_queue_name, name, ref)
        self.may_create(name, peer, ref)
        return self._queue(name)

    def may_create(self, name: str, peer: Peer | None, ref: Any) -> None:
        """Raise MOVED or STALE_CONFIG (with ``ref``) if this broker must not create
        queue ``name`` for ``peer``'s frame."""
        if self.membership is None or name in self.queues:
            return
        moved = self.moved_away(name, ref)
        if moved is not None:
            raise moved
        version = None
        if peer is not None and peer.via is not None:
            link = self.links.get(peer.via)
            version = link.link_version if link is not None else None
        exc = self.membership.refuse_new(name, version)
        if exc is not None:
            exc.attrs["ref"] = ref
            raise exc

    def _queue(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = Queue(name)
            q.forward = bool(self.forwards) and forwarded(self.forwards, name)
            if q.forward:
                self.uplink_queues[name] = q
            if self.links:
                self.catalog_changes.append(("add", name))
        return q

    def take_ids(self, q: Queue, n: int) -> int:
        """The first of ``n`` new ids for messages of ``q``. A forwarded queue's frame is
        followed by an id nobody gets, so that its messages are a run of ids no other
        message of the queue continues: the uplink finds the frame again after a restart
        (zq.core.uplink)."""
        first = self.next_id
        self.next_id = first + n + 1 if q.forward else first + n
        return first

    # Views kept for the shell and tests: the journal and the outbox own these.
    @property
    def durable(self) -> bool:
        return self.journal.durable

    @durable.setter
    def durable(self, value: bool) -> None:
        self.journal.durable = value

    @property
    def _batch(self) -> WriteBatch:
        return self.journal.batch

    @property
    def staged(self) -> int:
        return self.journal.staged

    @property
    def out(self) -> list[Outgoing]:
        return self.outbox.out

    @out.setter
    def out(self, frames: list[Outgoing]) -> None:
        self.outbox.out = frames

    @property
    def unstored_out(self) -> list[Outgoing]:
        return self.outbox.unstored

    @unstored_out.setter
    def unstored_out(self, frames: list[Outgoing]) -> None:
        self.outbox.unstored = frames

    def stage_settings(self, q: Queue) -> None:
        state: dict[str, Any] = {"settings": q.settings.to_map(), "paused": q.paused}
        if q.moving is not None:
            state["moving"] = q.moving.to_map()
        if q.incoming is not None:
            state["incoming"] = q.incoming.to_map()
        self.journal.settings(q.name, _packb(state))

    def moved_away(self, name: str, ref: Any) -> Moved | None:
        """MOVED (with ``ref``) if queue ``name`` is being moved, or was moved, from this
        broker to another (section 17.5); None if not."""
        q = self.queues.get(name)
        mv = q.moving if q is not None else self.moved_out.get(name)
        if mv is None or (q is not None and mv.phase == "prepare"):
            return None
        version = self.membership.cfg.version if self.membership is not None else 0
        return Moved(f"queue {name!r} moved to broker {mv.to} at {mv.endpoint}", ref=ref,
                     info={"queue": name, "broker": mv.to, "endpoint": mv.endpoint,
                           "version": version})

    def stage_schedule(self, s: Schedule) -> None:
        self.journal.schedule(s.name, _packb(s.to_map()))

    def _send(self, identity: bytes, parts: list[bytes]) -> None:
        self.outbox.send(identity, parts)

    def _fail(self, identity: bytes, exc: ZqError, op: int, ref: Any) -> None:
        self.outbox.fail(identity, exc, op, ref)

    def _after_commit(self, identity: bytes, parts: list[bytes], readonly: bool = False
                      ) -> None:
        self.outbox.after_commit(identity, parts, readonly)

    def _budget(self, m: Msg) -> int:
        """Header bytes ``m`` may carry and still be delivered alone from any queue."""
        return codec.header_budget(len(m.body), self.limits)

    def _max_attempts(self, m: Msg) -> int:
        o = m.opts
        return o.max_attempts if o is not None and o.max_attempts else \
            m.q.settings.max_attempts

    def _unprobe(self, sub: Sub) -> None:
        """``sub``'s probe is over: it may take deliveries (or the next probe) again."""
        sub.probe = None
        self._dirty.add(sub.q)
