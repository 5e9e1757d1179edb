"""The frames of the zq protocol, version 1: one frozen dataclass per frame type.

docs/PROTOCOL.md is the normative description; the names here follow it.
Every frame travels as one ZeroMQ multipart message::

    [command] [header] [body ...]                 most frames
    [command] [queue] [header] [body ...]         PUBLISH and DELIVER

``command`` is 4 bytes: ``b"ZQ"``, the protocol version, the opcode.
``queue`` is the raw UTF-8 queue name, so a router can route a PUBLISH by
reading frame 1 alone. ``header`` is msgpack. Bodies are raw bytes, never
re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

SIGNATURE = b"ZQ"
VERSION = 1

# Opcodes. Values are part of the wire contract.
HELLO = 0x01
WELCOME = 0x02
HEARTBEAT = 0x03
BYE = 0x04
PUBLISH = 0x10
CONFIRM = 0x11
CREDIT = 0x20
CANCEL = 0x21
DELIVER = 0x22
ACK = 0x23
NACK = 0x24
RELEASE = 0x25
EXTEND = 0x26
START = 0x27
STATS = 0x30
STATS_REPLY = 0x31
MANAGE = 0x40
MANAGE_REPLY = 0x41
LOCATE = 0x42
LOCATION = 0x43
FORWARD = 0x50
CATALOG = 0x51
ERROR = 0x7F

Headers: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Hello:
    """Client → broker: open a session."""

    name: str = ""
    heartbeat_ms: int = 0  # the client's own send interval; 0 = use the broker's
    starts: bool = False  # this session marks the deliveries it starts (START frames)
    # Idempotent producer: the same id across sessions and connections means resent
    # PUBLISH seqs already stored are confirmed with their ids, not stored again.
    producer: bytes = b""
    # A router opening its link to a broker: {cluster: str, version: uint, router: str}.
    link: dict[str, Any] | None = None
    # Set only by a router, in the HELLO it forwards: the key its client proved at the
    # handshake. A broker believes it only from a link whose own key may relay.
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """Broker → client: session open; the broker's limits and timing."""

    broker: str
    heartbeat_ms: int
    liveness: int
    max_batch: int
    max_credit: int
    max_frame: int
    starts: bool = False  # the broker understands START
    # In a cluster: {id: str, version: uint, node: str, role: "broker" | "router"}.
    cluster: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way: I am alive. Any frame also counts as a sign of life."""


@dataclass(frozen=True, slots=True)
class Bye:
    """Either way: this side ends the session now."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    """Per-message options of a PUBLISH; they apply to every body of the frame.

    Absent fields (None) take the queue's settings. ``eta_ms`` is wall-clock
    milliseconds since the epoch; with ``delay_ms`` too, the later time wins.
    ``dedup_id`` needs a frame of exactly one body.
    """

    priority: int | None = None  # 0..9, higher first
    delay_ms: int | None = None
    eta_ms: int | None = None
    ttl_ms: int | None = None
    time_limit_ms: int | None = None
    max_attempts: int | None = None
    tenant: str | None = None
    dedup_id: str | None = None
    key: str | None = None  # set: a PUBLISH to the topic named in frame 1, routed by key

    def to_map(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}


OPTION_KEYS = ("priority", "delay_ms", "eta_ms", "ttl_ms", "time_limit_ms", "max_attempts",
               "tenant", "dedup_id", "key")


@dataclass(frozen=True, slots=True)
class Publish:
    """Client → broker: store these bodies on ``queue``; answer with CONFIRM ``seq``."""

    queue: str
    seq: int
    bodies: list[bytes]
    headers: list[Headers | None] = field(default_factory=list)  # [] or one per body
    opts: Options | None = None


@dataclass(frozen=True, slots=True)
class Confirm:
    """Broker → client: these PUBLISH frames are stored.

    Each entry is ``(seq, first_id, count)``: the publish ``seq`` got the ids
    ``first_id .. first_id + count - 1`` in body order.
    """

    entries: list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Credit:
    """Consumer → broker: may deliver ``n`` more messages from ``queue``."""

    queue: str
    n: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Consumer → broker: stop delivering from ``queue``; unused credit is void."""

    queue: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """Broker → consumer: a batch of messages from ``queue``."""

    queue: str
    ids: list[int]
    attempts: list[int]
    bodies: list[bytes]
    headers: list[Headers | None] = field(default_factory=list)  # [] or one per body


@dataclass(frozen=True, slots=True)
class Ack:
    """Consumer → broker: these deliveries are done; forget the messages."""

    ids: list[int]
    attempts: list[int]


@dataclass(frozen=True, slots=True)
class Nack:
    """Consumer → broker: these deliveries failed.

    ``requeue`` puts them back (after ``delay_ms``); otherwise they are dead.
    """

    ids: list[int]
    attempts: list[int]
    requeue: bool = True
    delay_ms: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """Consumer → broker: give these back unprocessed; the attempt does not count."""

    ids: list[int]


@dataclass(frozen=True, slots=True)
class Extend:
    """Consumer → broker: these deliveries get ``ms`` more from now before their time limit."""

    ids: list[int]
    attempts: list[int]
    ms: int


@dataclass(frozen=True, slots=True)
class Start:
    """Consumer → broker: work on these deliveries has begun.

    A session that said ``starts`` in HELLO sends it; when such a session is
    lost, only deliveries it marked started count as failed attempts.
    """

    ids: list[int]
    attempts: list[int]


@dataclass(frozen=True, slots=True)
class Manage:
    """Client → broker: a queue operation ``op`` (declare, pause, purge, ...); see PROTOCOL.md.

    Answered by MANAGE_REPLY ``req`` once its effects are stored, or by ERROR
    with ``ref`` = ``req``.
    """

    req: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    # Raw parts after the header: message bodies, only for ``move_in`` (section 17.5).
    bodies: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ManageReply:
    """Broker → client: the result of MANAGE ``req``."""

    req: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stats:
    """Client → broker: ask for counters; answered by STATS_REPLY ``req``."""

    req: int


@dataclass(frozen=True, slots=True)
class StatsReply:
    """Broker → client: counters of the broker, its queues and its peers."""

    req: int
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Error:
    """Broker → client: a request failed.

    ``op`` is the opcode of the frame that failed (0 if none), ``ref`` names
    what failed: the PUBLISH ``seq``, the message ids, the queue, or nil.
    """

    code: int
    name: str
    text: str
    op: int = 0
    ref: Any = None
    info: dict[str, Any] | None = None  # MOVED: where to; STALE_CONFIG: the newer config


@dataclass(frozen=True, slots=True)
class Locate:
    """Client → broker or router: which broker holds ``queue`` (answered by LOCATION)."""

    req: int
    queue: str


@dataclass(frozen=True, slots=True)
class Location:
    """Broker or router → client: ``loc`` is {queue, broker, endpoint, version, exists}."""

    req: int
    loc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Forward:
    """Router ↔ broker on a link: ``parts`` is one whole frame of the client ``key``
    (its routing id at the router), carried without being decoded."""

    key: bytes
    parts: list[bytes]


@dataclass(frozen=True, slots=True)
class Catalog:
    """Broker → router on a link: the broker's queue names. ``kind`` "snapshot" lists
    them all; "add" and "remove" change the last snapshot. ``seq`` counts catalog frames
    of the link from 1: a gap means the router asks for a new snapshot."""

    seq: int
    kind: str
    queues: list[str]
    # Queues that moved from this broker: name -> the broker id they went to
    # (section 17.5). In a snapshot, all of them; otherwise more of them.
    moved: dict[str, str] | None = None


Frame: TypeAlias = (
    Hello
    | Welcome
    | Heartbeat
    | Bye
    | Publish
    | Confirm
    | Credit
    | Cancel
    | Deliver
    | Ack
    | Nack
    | Release
    | Extend
    | Start
    | Manage
    | ManageReply
    | Stats
    | StatsReply
    | Error
    | Locate
    | Location
    | Catalog
    | Forward
)

OPCODES: dict[type[Any], int] = {
    Hello: HELLO,
    Welcome: WELCOME,
    Heartbeat: HEARTBEAT,
    Bye: BYE,
    Publish: PUBLISH,
    Confirm: CONFIRM,
    Credit: CREDIT,
    Cancel: CANCEL,
    Deliver: DELIVER,
    Ack: ACK,
    Nack: NACK,
    Release: RELEASE,
    Extend: EXTEND,
    Start: START,
    Manage: MANAGE,
    ManageReply: MANAGE_REPLY,
    Stats: STATS,
    StatsReply: STATS_REPLY,
    Error: ERROR,
    Locate: LOCATE,
    Location: LOCATION,
    Catalog: CATALOG,
    Forward: FORWARD,
}
NAMES: dict[int, str] = {op: cls.__name__.upper() for cls, op in OPCODES.items()}
NAMES[STATS_REPLY] = "STATS_REPLY"
NAMES[MANAGE_REPLY] = "MANAGE_REPLY"
