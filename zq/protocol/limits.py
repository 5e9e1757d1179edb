"""Every bound and constant of the zq wire protocol, version 1, in one place. No I/O.

docs/PROTOCOL.md states them (section 14's table, and the sections it points to);
tests/unit/test_limits.py checks that the document and this module agree. The
broker, the SDK and the codec take them from here, so that a bound is written once
and the two sides of a connection cannot disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from zq.errors import MalformedFrame, ProtocolViolation, UnknownOpcode, UnsupportedVersion

# ------------------------------------------------------------------ frame sizes

MAX_HEADER = 4 * 1024 * 1024  # octets of a header part: fixed in version 1
MAX_FRAME = 16 * 1024 * 1024  # zq's default max_frame: octets in all parts of one message
PART_SLACK = 64 * 1024  # a single part may exceed max_frame by this much before ZeroMQ
# cuts the connection (MAXMSGSIZE): a message just over the limit gets FRAME_TOO_LARGE
MAX_BATCH = 10_000  # zq's default decoder batch: bodies per PUBLISH/DELIVER, ids per ACK...
UINT_END = 1 << 63  # a uint on the wire is 0 .. 2^63 - 1 (section 4.1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces on what it accepts."""

    max_frame: int = MAX_FRAME  # bytes in all parts of one multipart message
    max_header: int = MAX_HEADER  # bytes in the msgpack header part
    max_batch: int = MAX_BATCH  # bodies per PUBLISH or DELIVER, ids per ACK/NACK/RELEASE

    def __post_init__(self) -> None:
        if self.max_frame < 1024 or self.max_header < 256 or self.max_batch < 1:
            raise ValueError(f"limits too small: {self}")


DEFAULT_LIMITS = Limits()

# Sizing rules shared by the SDK (splitting publishes) and the broker (batching
# deliveries), so that every frame either side builds fits the other's limits.
ENVELOPE = 64  # bytes of a PUBLISH/DELIVER besides its bodies and per-message header entries
PER_MESSAGE = 24  # header bytes one message adds besides its own headers (id, attempt, slot)
# Header bytes every stored message keeps free for the broker's own headers (its
# attempt history, a dead letter's origin and reason), at most 1/16 of max_frame.
HEADER_RESERVE = 4096

# ------------------------------------------------------------------------ names

MAX_QUEUE_NAME = 255  # octets of UTF-8 in a queue name (at least 1)
DLQ_SUFFIX = ".dlq"  # a queue whose name ends so is a dead-letter queue
MAX_NAME = 255  # octets of a HELLO name the broker keeps (STATS, history entries)
MAX_PRODUCER = 64  # octets of a HELLO producer id (0: none, not idempotent)
MAX_KEY_OCTETS = 255  # octets of a FORWARD frame's client key (a routing id at the router)
LINK_KEYS = ("cluster", "version", "router")  # HELLO link: a router opening its link
CLUSTER_KEYS = ("id", "version", "node", "role")  # WELCOME cluster: who answered
CATALOG_KINDS = ("snapshot", "add", "remove")

# -------------------------------------------------------------- PUBLISH options

MAX_PRIORITY = 9  # priorities are 0..9, higher first
MAX_KEY = 255  # octets of UTF-8 in a tenant or a dedup id (at least 1)
MAX_DURATION_MS = 100 * 365 * 86_400_000  # `C` of section 11.1: a century, every duration
MAX_ETA_MS = 1 << 62  # the latest eta_ms
MAX_ATTEMPTS = 1_000_000  # the largest max_attempts

# ------------------------------------------- the broker's headers on a message

BROKER_PREFIX = "zq-"  # header keys that start so are the broker's (section 4.1)
HISTORY = "zq-history"  # the attempts of a message that did not end in an ack
HISTORY_OMITTED = "zq-history-omitted"  # entries dropped from the middle of the history
ORIGIN = "zq-origin"  # of a dead letter: the queue it died in
REASON = "zq-reason"  # of a dead letter: why it died
DEAD_AT = "zq-dead-at"  # of a dead letter: when (wall-clock seconds)
SCHEDULE = "zq-schedule"  # of a message a schedule fired: the schedule's name
DUE = "zq-due"  # of a message a schedule fired: its due time (wall-clock seconds)
TASK = "zq-task"  # set by the SDK, not the broker: the registered name of the task it runs
PEEK = "zq-peek"  # in a peek reply, instead of headers too large to show
MAX_HISTORY = 50  # zq-history entries kept: the first and the latest
MAX_REASON = 1000  # octets of a reason kept (history entries, zq-reason)

# --------------------------------------------------------------------- sessions

MAX_HEARTBEAT = 60.0  # seconds: the slowest heartbeat a client's HELLO can ask for
# Errors after which the broker forgets the session and the client gives it up (the
# peer is broken or hostile); every other error leaves the session as it was.
FATAL_ERRORS = (MalformedFrame, UnsupportedVersion, UnknownOpcode, ProtocolViolation)
FATAL_NAMES = frozenset(e.name for e in FATAL_ERRORS)
FATAL_CODES = frozenset(e.code for e in FATAL_ERRORS)

# ---------------------------------------------------------------------- replies

MAX_PEEK = 100  # messages in one peek reply (and at most half of max_frame)
