"""The broker's in-memory structures: messages, lanes, queues, subscriptions, peers. No I/O.

A queue's ready messages sit in *lanes*, one per (priority, tenant) in use.
Lanes of a higher priority always serve first; among the lanes of one
priority, the queue's selection policy chooses (weighted fair share by
default), skipping tenants at their in-flight cap. Within a lane, order is FIFO.
A queue that uses neither priorities nor tenants has one lane, and the
dispatcher's cost is what it was without lanes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from zq import policies
from zq.protocol.credit import CreditWindow
from zq.protocol.session import State
from zq.settings import QueueSettings

if TYPE_CHECKING:
    from zq.core.streams import Group, Stream
    from zq.protocol import frames as f


class Msg:
    """A message in memory. Built once per message on the hot path, so ``__init__``
    sets only what every message needs; the options, expiry and time limit that
    few messages have are class defaults, overridden per instance (in its
    ``__dict__``) only on the messages that have them."""

    __slots__ = ("__dict__", "attempts", "body", "headers", "hsize", "id", "lane", "q",
                 "start", "t")

    start: float  # when its current attempt began: set when it is delivered
    opts: f.Options | None = None  # its own publish options, if any
    exp: float = 0.0  # when it expires (monotonic); 0 = never
    deadline: float = 0.0  # when its current attempt hits its time limit; 0 = none
    due: float = 0.0  # taken from the delayed ones to be forwarded (zq.core.uplink): its due time
    started: int = 0  # the attempt its consumer said it started (START); 0: none
    suspect: bool = False  # held by a consumer that vanished: goes out alone (a probe)

    def __init__(self, id: int, q: Queue, body: bytes, headers: dict[str, Any] | None,
                 attempts: int = 0, hsize: int = 0, t: float = 0.0) -> None:
        self.id = id
        self.q = q
        self.body = body
        self.headers = headers
        self.attempts = attempts
        self.hsize = hsize  # encoded size of headers, for sizing DELIVER batches
        self.t = t  # when it was published (monotonic)
        self.lane = q.default


class Tenant:
    """What lanes of one tenant share: weight, in-flight count and cap."""

    __slots__ = ("cap", "in_flight", "name", "weight")

    def __init__(self, name: str, weight: int = 1, cap: int = 0) -> None:
        self.name = name
        self.weight = weight
        self.cap = cap  # 0 = no cap
        self.in_flight = 0


class Lane:
    """Ready messages of one (priority, tenant), FIFO."""

    __slots__ = ("acct", "msgs", "priority", "tenant")

    def __init__(self, priority: int, acct: Tenant) -> None:
        self.priority = priority
        self.tenant = acct.name
        self.acct = acct
        self.msgs: deque[Msg] = deque()

    @property
    def weight(self) -> int:
        return self.acct.weight

    @property
    def size(self) -> int:
        return len(self.msgs)

    def room(self) -> int:
        """How many more of this lane's tenant may go in flight (its cap; or no limit)."""
        a = self.acct
        return a.cap - a.in_flight if a.cap else 1 << 62

    def open(self) -> bool:
        a = self.acct
        return bool(self.msgs) and (not a.cap or a.in_flight < a.cap)


class Sub:
    """One consumer's subscription to one queue."""

    __slots__ = ("active", "peer", "probe", "q", "window")

    def __init__(self, peer: Any, q: Queue, limit: int) -> None:
        self.peer = peer
        self.q = q
        self.window = CreditWindow(limit)
        self.active = True
        self.probe: Msg | None = None  # a suspect it holds alone; nothing more until settled


class Queue:
    """A queue's messages: ready ones in lanes in memory, and (durable stores) ``disk`` more.

    With a durable store, a queue keeps at most a window of ready messages in
    memory. Past it, new messages stay only on disk, ``disk`` counts them, and
    they are paged in, in id order, as the ones in memory drain. Every stored
    message of the queue with an id up to ``cursor`` is in memory (ready, held
    by a consumer, or delayed); every one above it is on disk only.
    """

    __slots__ = (
        "acked", "backoff", "cursor", "dead", "default", "delayed", "delivered", "disk", "dlq",
        "forward", "forwarded", "group", "idle_since", "incoming", "keeps", "lanes", "limited",
        "mem_bytes", "moved_in", "moving", "nacked",
        "name", "name_b", "order", "overflow", "paused", "published", "rates", "redelivered",
        "selector", "settings", "staged", "stream", "subs", "suspects",
        "tenants", "to_drop", "ttl_seen", "undeliverable",
    )

    def __init__(self, name: str, settings: QueueSettings | None = None) -> None:
        self.name = name
        self.name_b = name.encode()
        self.subs: list[Sub] = []
        self.suspects: deque[Msg] = deque()  # ready, but to go out one at a time (probes)
        self.disk = 0
        self.cursor = 0
        self.moved_in: set[int] = set()  # ids above the cursor held in memory (moved here)
        self.mem_bytes = 0  # bodies of this queue's messages in memory, in any state
        self.published = self.delivered = self.acked = self.nacked = self.dead = 0
        self.redelivered = 0
        self.undeliverable = 0  # stored, too large for max_frame: skipped until a restart
        self.delayed = 0  # messages waiting for their due time
        self.staged = 0  # published, not committed yet
        self.to_drop = 0  # oldest messages to dead-letter once the pass commits (overflow)
        self.paused = False
        self.forward = False  # forwarded by the uplink, never consumed here (zq.core.uplink)
        self.forwarded = 0  # messages the centre confirmed (forwarded queues)
        self.idle_since = 0.0  # since when it has had no consumer (its idle_ttl setting)
        self.moving: MoveOut | None = None  # being moved to another broker (section 17.5)
        self.incoming: MoveIn | None = None  # being moved here from another broker
        # A stream's queue (its publishes append to it), or one consumer group's reading
        # of a stream (named as the stream; not in the broker's table): zq.core.streams.
        self.stream: Stream | None = None
        self.group: Group | None = None
        self.rates: dict[str, float] = {"publish": 0.0, "deliver": 0.0, "ack": 0.0}
        self.tenants: dict[str, Tenant] = {}
        self.lanes: dict[tuple[int, str], Lane] = {}
        self.order: list[Lane] = []  # highest priority first, then tenant name
        self.settings = QueueSettings()
        self.default = self.lane(0, "")
        self.configure(settings or QueueSettings())

    def configure(self, s: QueueSettings) -> None:
        """Apply settings (policy names were checked by the caller)."""
        old = self.settings
        self.settings = s
        self.dlq = s.dead_letter_queue(self.name)
        self.keeps = s.result_ttl > 0  # it keeps each message's outcome
        if not hasattr(self, "selector") or old.selection != s.selection:
            self.selector = policies.load("selection", s.selection)
        if not hasattr(self, "backoff") or old.retry != s.retry:
            self.backoff = policies.load("backoff", s.retry)
        if not hasattr(self, "overflow") or old.overflow != s.overflow:
            self.overflow = policies.load("overflow", s.overflow)
        for t in self.tenants.values():
            t.weight = s.weights.get(t.name, 1)
            t.cap = s.caps.get(t.name, 0)
        # Sticky: messages with their own time limits or TTLs may be queued already.
        self.limited = s.time_limit > 0 or getattr(self, "limited", False)
        self.ttl_seen = s.ttl > 0 or getattr(self, "ttl_seen", False)

    def lane(self, priority: int, tenant: str) -> Lane:
        lane = self.lanes.get((priority, tenant))
        if lane is None:
            acct = self.tenants.get(tenant)
            if acct is None:
                s = self.settings
                acct = self.tenants[tenant] = Tenant(tenant, s.weights.get(tenant, 1),
                                                     s.caps.get(tenant, 0))
            lane = self.lanes[(priority, tenant)] = Lane(priority, acct)
            self.order.append(lane)
            self.order.sort(key=lambda ln: (-ln.priority, ln.tenant))
        return lane

    def lane_for(self, opts: f.Options | None) -> Lane:
        if opts is None or (not opts.priority and not opts.tenant):
            return self.default
        return self.lane(opts.priority or 0, opts.tenant or "")

    def ready_count(self) -> int:
        order = self.order
        if len(order) == 1:
            return len(order[0].msgs) + len(self.suspects)
        return sum(len(ln.msgs) for ln in order) + len(self.suspects)

    def next_lane(self) -> tuple[Lane | None, int]:
        """The lane to serve next and how many it may serve before asking again."""
        order = self.order
        if len(order) == 1:
            ln = order[0]
            return (ln, len(ln.msgs)) if ln.open() else (None, 0)
        i, n = 0, len(order)
        while i < n:
            prio = order[i].priority
            eligible: list[Lane] = []
            while i < n and order[i].priority == prio:
                if order[i].open():
                    eligible.append(order[i])
                i += 1
            if len(eligible) == 1:
                return eligible[0], len(eligible[0].msgs)
            if eligible:
                k, quota = self.selector.pick(eligible)
                return eligible[k], max(1, quota)
        return None, 0

    def pools(self) -> list[deque[Msg]]:
        """Every deque of ready messages: the suspects, then the lanes in serving order."""
        return [self.suspects, *(ln.msgs for ln in self.order)]

    def ready_msgs(self) -> list[Msg]:
        """Every ready message in memory, in serving order (for admin operations)."""
        return [m for pool in self.pools() for m in pool]

    def oldest(self) -> float:
        """Publish time (monotonic) of the oldest ready message in memory; 0 if none."""
        times = [ln.msgs[0].t for ln in self.order if ln.msgs and ln.msgs[0].t]
        return min(times) if times else 0.0


class Peer:
    __slots__ = ("catalog_seq", "confirms", "conn", "forwards_in", "forwards_out", "groups",
                 "held",
                 "identity", "inner", "last_seen", "link_version", "liveness_s", "marks", "name",
                 "producer", "state", "subs", "user", "via", "zombies")

    def __init__(self, identity: bytes, now: float) -> None:
        self.identity = identity
        self.name = ""
        self.marks = False  # it sends START for the deliveries it begins to work on
        self.producer = b""  # its idempotent producer id (HELLO), b"" if none
        self.user: str | None = None  # the key it proved (CURVE), or its router vouched for
        self.conn = -1  # its connection, as the shell knows it (a descriptor), -1 unknown
        # A router's link: the inner sessions it carries, its cluster file version and
        # the last CATALOG seq sent on it. An inner session: ``via`` its link.
        self.inner: set[bytes] | None = None
        self.link_version: int | None = None
        self.catalog_seq = 0
        self.forwards_in = 0  # a link: FORWARD frames received on it
        self.forwards_out = 0  # a link: frames sent on it for its clients, in FORWARD
        self.via: bytes | None = None
        self.state = State.NEW
        self.last_seen = now
        self.liveness_s = 0.0
        self.subs: dict[str, Sub] = {}
        self.groups: dict[str, Group] = {}  # stream -> the group it reads it in
        self.held: dict[int, Msg] = {}
        # Deliveries whose time limit ran out while this consumer still had them:
        # id -> (attempt, queue). Their credit comes back when the consumer settles them.
        self.zombies: dict[int, tuple[int, str]] = {}
        self.confirms: list[list[int]] = []


class MoveOut:
    """A queue this broker moves to another (PROTOCOL.md section 17.5), and once it is
    done, the record of where it went. Stored with the queue's settings while under
    way (phases "prepare", then "ship"), then in place of them (phase "done")."""

    __slots__ = ("announced", "due", "endpoint", "entries", "error", "id", "keys", "name",
                 "phase", "shipped", "shipping", "spare", "started", "to")

    def __init__(self, name: str, to: str, endpoint: str, id: str, phase: str,
                 started: float, announced: bool = False) -> None:
        self.name = name
        self.to = to  # the target's broker id
        self.endpoint = endpoint
        self.id = id  # the move's id: the target keeps each message it stored under it
        self.phase = phase
        self.started = started  # wall clock
        self.announced = announced  # done, and the target knows (it lists the queue)
        self.shipped = 0  # messages the target stored (this process)
        self.shipping = 0  # taken, waiting for the target's answer
        self.spare: deque[Msg] = deque()  # delayed messages taken off the timers, to ship
        self.due: dict[int, float] = {}  # their due times (monotonic)
        self.keys: dict[int, list[tuple[str, float]]] = {}  # message id -> dedup keys
        self.error = ""  # the last failure, for the operator
        self.entries: list[list[Any]] = []  # the batch being shipped, as sent (and resent)

    def to_map(self) -> dict[str, Any]:
        return {"to": self.to, "endpoint": self.endpoint, "id": self.id, "phase": self.phase,
                "started": self.started, "announced": self.announced}

    @classmethod
    def from_map(cls, name: str, d: dict[str, Any]) -> MoveOut:
        return cls(name, str(d["to"]), str(d.get("endpoint", "")), str(d["id"]),
                   str(d.get("phase", "ship")), float(d.get("started", 0.0)),
                   bool(d.get("announced", False)))


class MoveIn:
    """A queue being moved to this broker: who sends it, and the messages it sent that
    are stored here (source id -> id here), so a batch sent again stores nothing twice."""

    __slots__ = ("id", "seen", "source")

    def __init__(self, source: str, id: str) -> None:
        self.source = source
        self.id = id
        self.seen: dict[int, int] = {}

    def to_map(self) -> dict[str, Any]:
        return {"from": self.source, "id": self.id}
