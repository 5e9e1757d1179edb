"""Hostile frames for zq, as hypothesis strategies and as seeded generators.

A frame is a list of byte parts (the ROUTER envelope not included), as a client's
DEALER sends it. For every command a client may send (:data:`CLIENT_COMMANDS`) there
are three flavours:

* :func:`valid` ``(cmd)``: well formed, built by :func:`zq.protocol.codec.encode` from a
  frame dataclass with generated fields;
* :func:`almost_valid` ``(cmd)``: a valid frame with exactly one mutation: a field of
  the wrong type or out of range, a part too many or too few, another version octet,
  signature or opcode, a header that is not msgpack, is truncated, nests too deep,
  declares a huge container or holds an extension type, a queue name that is not
  UTF-8 or too long, too many bodies or ids, a part over ``max_frame``, ...;
* :func:`garbage` ``()``: random parts.

:func:`hostile` is any of them. The generators are plain functions of a
:class:`random.Random`: a live run draws a fixed number of frames from a seed
(:func:`plan`; print the seed to reproduce a run) and the strategies feed the same
functions from ``st.randoms()``, so that hypothesis explores the same space.

Each draw is a :class:`Fuzzed` that says what a receiver must do with the frame. An
almost-valid frame either fails :func:`zq.protocol.codec.decode` (its mutation broke
the encoding) or decodes and breaks a rule checked after decoding (``semantic``: a
credit out of range, an id never assigned, a dead-letter or badly named queue, a
frame only brokers send, a FORWARD from a client, ...). Either way it is ``refused``:
a broker and a router answer it with an ERROR whatever the state of the sender's
session, or cut the connection (ZeroMQ does, for a part over ``max_frame``).
tests/unit/test_fuzz_decode.py checks these tags against the decoder.

Generated queue names all start with ``fz``, so that hostile frames never touch the
queues of the well-behaved clients of a test, and HELLO links name clusters that start
with ``alien-``, so that no hostile peer opens a router's link.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from zq.config import BrokerConfig
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import (
    DEFAULT_LIMITS,
    MAX_DURATION_MS,
    MAX_HEADER,
    MAX_QUEUE_NAME,
    UINT_END,
)
from zq.protocol.wire import COMMANDS

Parts = list[bytes]

CLIENT_COMMANDS = (f.HELLO, f.PUBLISH, f.ACK, f.NACK, f.RELEASE, f.EXTEND, f.CREDIT, f.START,
                   f.CANCEL, f.HEARTBEAT, f.BYE, f.STATS, f.MANAGE, f.LOCATE, f.FORWARD)
SERVER_COMMANDS = (f.WELCOME, f.CONFIRM, f.DELIVER, f.STATS_REPLY, f.MANAGE_REPLY, f.ERROR,
                   f.LOCATION, f.CATALOG)
UNKNOWN_OPCODES = tuple(op for op in range(256) if op not in f.NAMES)
QUEUES = ("fz", "fz.a", "fz-b", "fz_c", "fz:d", "fz/e", "fz.f.g", "fz\u00e9", "fz.\u6f22\u5b57")
BAD_QUEUE_NAMES = ("fz bad", "fz\tq", "fz..x", "fz?", "fz\x00q", "fz*")  # UTF-8, 1..255 octets
UNASSIGNED = 1 << 62  # ids from here up are never assigned: a broker counts them from 1
ALIEN = "alien-"  # the clusters generated HELLO links name (never a test's)
_DEFAULTS = BrokerConfig()
# Bodies one PUBLISH may carry, and ids one ACK may name, at a broker and at a router on
# their defaults (the broker's decoder takes the larger of max_publish_batch and
# max_credit ids per frame; zq.core.state): one more is always too many.
TOO_MANY_BODIES = max(_DEFAULTS.max_publish_batch, DEFAULT_LIMITS.max_batch) + 1
TOO_MANY_IDS = max(_DEFAULTS.max_publish_batch, _DEFAULTS.max_credit,
                   DEFAULT_LIMITS.max_batch) + 1
OVER_MAX_FRAME = 256 * 1024  # a part this much over max_frame is past ZeroMQ's MAXMSGSIZE
_TEXT = "abcxyz019 _-.:/\u00e9\u00df\u6f22\U0001f600"


@dataclass(frozen=True, slots=True)
class Fuzzed:
    """One generated frame and what a receiver must do with it."""

    parts: Parts
    flavour: str  # "valid", "almost" or "garbage"
    op: int  # the command it was built from (0: garbage)
    how: str  # the mutation ("" for a valid frame)
    refused: bool  # an ERROR (or a cut connection) in any session state, broker or router
    semantic: bool = False  # refused although it decodes (a rule checked after decoding)
    oversize: bool = False  # a part is larger than max_frame: ZeroMQ may cut the connection

    def describe(self, limit: int = 48) -> str:
        shown = [p[:limit].hex() + ("..." if len(p) > limit else "") for p in self.parts[:4]]
        more = f" +{len(self.parts) - 4} parts" if len(self.parts) > 4 else ""
        sizes = ",".join(str(len(p)) for p in self.parts[:8])
        return (f"{self.flavour} {f.NAMES.get(self.op, hex(self.op))} {self.how or '-'} "
                f"sizes=[{sizes}{',...' if len(self.parts) > 8 else ''}] "
                f"parts={shown}{more}")


# ------------------------------------------------------------------ values


def text(rng: random.Random, lo: int = 0, hi: int = 20) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randint(lo, hi)))


def uint(rng: random.Random) -> int:
    k = rng.randrange(4)
    if k == 0:
        return rng.randint(0, 1000)
    if k == 1:
        return rng.randint(0, 1 << 32)
    if k == 2:
        return rng.randint(0, UINT_END - 1)
    return rng.choice((0, 1, UINT_END - 1))


def queue(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(QUEUES)
    alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "fz." + "".join(rng.choice(alnum) for _ in range(rng.randint(1, 24)))


def any_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value without extension types."""
    k = rng.randrange(11 if depth < 3 else 8)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.randint(-(1 << 63), (1 << 64) - 1)
    if k == 3:
        return rng.randint(-5, 300)
    if k == 4:
        return rng.choice((0.0, -1.5, float("inf"), float("nan"), 1e300))
    if k == 5:
        return text(rng)
    if k == 6:
        return rng.randbytes(rng.randint(0, 16))
    if k == 7:
        return rng.choice(QUEUES)
    if k < 10:
        return [any_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {text(rng, 1, 8): any_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def small_map(rng: random.Random) -> dict[str, Any]:
    return {text(rng, 1, 8): any_value(rng, 1) for _ in range(rng.randint(0, 3))}


def ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(1, 10**6) if rng.random() < 0.8 else uint(rng) for _ in range(n)]


@functools.lru_cache(maxsize=4)
def _zeros(n: int) -> bytes:
    """A large part, made once (oversize parts and headers are shared, not rebuilt)."""
    return bytes(n)


# ----------------------------------------------------------- valid frames


SETTINGS: tuple[dict[str, Any], ...] = (
    {}, {"max_length": 100}, {"max_length": 20, "overflow": "drop-oldest"}, {"ttl": 30},
    {"max_attempts": 2}, {"time_limit": 5}, {"weights": {"t1": 2}})


def options(rng: random.Random, n: int) -> f.Options:
    def maybe(value: Callable[[], Any]) -> Any:
        return value() if rng.random() < 0.3 else None

    century = MAX_DURATION_MS
    return f.Options(
        priority=maybe(lambda: rng.randint(0, 9)),
        delay_ms=maybe(lambda: rng.choice((0, rng.randint(0, 5000), century))),
        eta_ms=maybe(lambda: rng.randint(0, 1 << 62)),
        ttl_ms=maybe(lambda: rng.randint(1, century)),
        time_limit_ms=maybe(lambda: rng.randint(1, century)),
        max_attempts=maybe(lambda: rng.randint(1, 1_000_000)),
        tenant=maybe(lambda: text(rng, 1, 40)),
        dedup_id=maybe(lambda: text(rng, 1, 40)) if n == 1 else None)


def publish(rng: random.Random, *, per_message: bool | None = None) -> f.Publish:
    n = rng.randint(1, 5)
    bodies = [rng.randbytes(rng.randint(0, 64)) for _ in range(n)]
    if per_message is None:
        per_message = rng.random() < 0.4
    headers = [rng.choice((None, small_map(rng))) for _ in range(n)] if per_message else []
    opts = options(rng, n) if rng.random() < 0.3 else None
    return f.Publish(queue(rng), uint(rng), bodies, headers, opts)


def manage(rng: random.Random) -> f.Manage:
    """A MANAGE operation with arguments of the right shape, on ``fz`` queues only; none
    that adds work of its own to a broker (schedules, moves, task results)."""
    q = queue(rng)
    op = rng.choice(("declare", "info", "list", "pause", "resume", "purge", "delete", "peek",
                     "sync", "status", "wait", "schedule_ls", "schedule_rm", "redrive",
                     "move_status"))
    args: dict[str, Any] = {"queue": q}
    if op == "declare" and rng.random() < 0.5:
        args["settings"] = rng.choice(SETTINGS)
    elif op == "list":
        args = rng.choice(({}, {"limit": rng.randint(1, 1000), "after": q}))
    elif op == "peek":
        args["limit"] = rng.randint(1, 100)
    elif op in ("sync", "schedule_ls"):
        args = {}
    elif op in ("status", "wait"):
        args["id"] = uint(rng)
        if op == "wait":
            args["timeout_ms"] = rng.randint(0, 50)
    elif op == "schedule_rm":
        args = {"name": text(rng, 1, 20)}
    elif op == "redrive":
        args = {"queue": q + ".dlq", "to": q, "limit": rng.randint(1, 10)}
    return f.Manage(uint(rng), op, args)


def _settle_ids(rng: random.Random) -> tuple[list[int], list[int]]:
    n = rng.randint(1, 5)
    return ids(rng, n), [rng.randint(0, 10) if rng.random() < 0.9 else uint(rng)
                         for _ in range(n)]


def _forward(rng: random.Random) -> f.Forward:
    inner = rng.choice([op for op in CLIENT_COMMANDS if op != f.FORWARD])
    return f.Forward(rng.randbytes(rng.randint(1, 32)), codec.encode(frame(rng, inner)))


_FRAMES: dict[int, Callable[[random.Random], f.Frame]] = {
    f.HELLO: lambda r: f.Hello(
        text(r, 0, 40), r.choice((0, r.randint(1, 5000), uint(r))), r.random() < 0.5,
        r.randbytes(r.randint(1, 64)) if r.random() < 0.3 else b""),
    f.PUBLISH: publish,
    f.ACK: lambda r: f.Ack(*_settle_ids(r)),
    f.NACK: lambda r: f.Nack(*_settle_ids(r), r.random() < 0.5,
                             r.choice((0, r.randint(0, 10**6), uint(r))), text(r, 0, 60)),
    f.RELEASE: lambda r: f.Release(ids(r, r.randint(1, 5))),
    f.EXTEND: lambda r: f.Extend(*_settle_ids(r), r.randint(1, UINT_END - 1)),
    f.CREDIT: lambda r: f.Credit(queue(r), r.randint(1, 1000)),
    f.START: lambda r: f.Start(*_settle_ids(r)),
    f.CANCEL: lambda r: f.Cancel(queue(r)),
    f.HEARTBEAT: lambda r: f.Heartbeat(),
    f.BYE: lambda r: f.Bye(text(r, 0, 40)),
    f.STATS: lambda r: f.Stats(uint(r)),
    f.MANAGE: manage,
    f.LOCATE: lambda r: f.Locate(uint(r), queue(r)),
    f.FORWARD: _forward,
}


def frame(rng: random.Random, cmd: int) -> f.Frame:
    """A well-formed frame of command ``cmd`` with generated fields."""
    return _FRAMES[cmd](rng)


def server_frame(rng: random.Random) -> f.Frame:
    """A well-formed frame that only a broker or a router sends."""
    op = rng.choice(SERVER_COMMANDS)
    if op == f.WELCOME:
        return f.Welcome("evil", 1000, 3, 1000, 100, 1 << 20)
    if op == f.CONFIRM:
        return f.Confirm([(uint(rng), rng.randint(1, 1000), 1)])
    if op == f.DELIVER:
        return f.Deliver(queue(rng), [1], [1], [b"x"])
    if op == f.STATS_REPLY:
        return f.StatsReply(uint(rng), {})
    if op == f.MANAGE_REPLY:
        return f.ManageReply(uint(rng), {})
    if op == f.ERROR:
        return f.Error(5, "PROTOCOL_VIOLATION", text(rng))
    if op == f.LOCATION:
        return f.Location(uint(rng), {})
    return f.Catalog(rng.randint(1, 10), "snapshot", [queue(rng)])


def make_valid(rng: random.Random, cmd: int) -> Fuzzed:
    # A FORWARD is the frame of a router's link: from a client it is always refused.
    return Fuzzed(codec.encode(frame(rng, cmd)), "valid", cmd, "",
                  refused=cmd == f.FORWARD, semantic=cmd == f.FORWARD)


# ------------------------------------------------------- almost-valid frames
#
# A mutation is a function (rng, cmd, max_frame) -> (parts, how, semantic); the table
# MUTATIONS says which commands each applies to and how often it is drawn.

Mutated = tuple[Parts, str, bool]
NOT_UINT: tuple[Any, ...] = ("1", -1, UINT_END, (1 << 64) - 1, 1.5, True, None, [1])
NOT_STR: tuple[Any, ...] = (5, b"x", None, [], True, {"a": 1})
NOT_BOOL: tuple[Any, ...] = (1, 0, "yes", None)
NOT_MAP: tuple[Any, ...] = (5, "x", [1], b"x", True)
NOT_IDS: tuple[Any, ...] = ([], [-1], "x", {"a": 1}, None, [1.5], ["1"], [True], [None], 7)
NOT_QUEUE: tuple[Any, ...] = (5, None, [], b"fz\xff\xfe", "", "q" * (MAX_QUEUE_NAME + 1),
                              "\u6f22" * 86)  # 258 octets of UTF-8
BAD_OPTIONS: tuple[Any, ...] = (
    5, "x", [1], True, b"x", {"nope": 1}, {"priority": 10}, {"priority": -1},
    {"priority": True}, {"priority": 1.0}, {"delay_ms": -1}, {"ttl_ms": 0},
    {"time_limit_ms": 0}, {"max_attempts": 0}, {"max_attempts": 1_000_001},
    {"eta_ms": (1 << 62) + 1}, {"delay_ms": MAX_DURATION_MS + 1}, {"tenant": ""},
    {"tenant": "t" * 256}, {"dedup_id": 5}, {"dedup_id": ""})
IDS_FIELDS = ((0, "ids", NOT_IDS), (1, "attempts", NOT_IDS))

# Fields a mutation may break: command -> (index or key in the header, name, bad values).
FIELDS: dict[int, tuple[tuple[Any, str, tuple[Any, ...]], ...]] = {
    f.HELLO: (("name", "name", NOT_STR), ("heartbeat_ms", "heartbeat_ms", NOT_UINT),
              ("starts", "starts", NOT_BOOL),
              ("producer", "producer", ("text", b"p" * 65, 5, None, [])),
              ("link", "link", (*NOT_MAP, {"cluster": "x"}, {"version": 1, "router": "r"},
                                {1: "x"}))),
    f.BYE: (("reason", "reason", NOT_STR),),
    f.PUBLISH: ((0, "seq", NOT_UINT), (1, "headers", (5, "x", {"a": 1}, True, None)),
                (2, "opts", BAD_OPTIONS)),
    f.CREDIT: ((0, "queue", NOT_QUEUE), (1, "n", ("5", 1.5, True, None, [1]))),
    f.CANCEL: ((0, "queue", NOT_QUEUE),),
    f.ACK: IDS_FIELDS,
    f.START: IDS_FIELDS,
    f.NACK: (*IDS_FIELDS, (2, "requeue", NOT_BOOL), (3, "delay_ms", NOT_UINT),
             (4, "reason", NOT_STR)),
    f.RELEASE: ((0, "ids", NOT_IDS),),
    f.EXTEND: (*IDS_FIELDS, (2, "ms", (*NOT_UINT, 0))),
    f.STATS: ((0, "req", NOT_UINT),),
    f.MANAGE: ((0, "req", NOT_UINT), (1, "op", ("", 5, None, [], b"info")),
               (2, "args", (*NOT_MAP, None))),
    f.LOCATE: ((0, "req", NOT_UINT), (1, "queue", NOT_QUEUE)),
}
_HEADERED = tuple(op for op in CLIENT_COMMANDS if op != f.FORWARD)
_SETTLING = (f.ACK, f.NACK, f.RELEASE, f.EXTEND)  # an unknown id is an ERROR, any state


def _header_index(cmd: int) -> int:
    return 2 if cmd == f.PUBLISH else 1


def _with_header(rng: random.Random, cmd: int, header: bytes) -> Parts:
    parts = make_valid(rng, cmd).parts
    parts[_header_index(cmd)] = header
    return parts


def _layout(rng: random.Random, cmd: int) -> tuple[Parts, Any, Parts]:
    """A valid frame of ``cmd`` taken apart: the parts before its header (the command,
    and a PUBLISH's queue), its header as a Python value, and the parts after it."""
    parts = make_valid(rng, cmd).parts
    i = _header_index(cmd)
    return parts[:i], msgpack.unpackb(parts[i], raw=False), parts[i + 1:]


def m_version(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    version = rng.choice([v for v in range(256) if v != f.VERSION])
    parts[0] = parts[0][:2] + bytes((version,)) + parts[0][3:]
    return parts, f"version={version}", False


def m_signature(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    sig = rng.randbytes(2)
    if sig == f.SIGNATURE:
        sig = b"QZ"
    parts[0] = sig + parts[0][2:]
    return parts, "signature", False


def m_opcode(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    op = rng.choice(UNKNOWN_OPCODES)
    parts[0] = parts[0][:3] + bytes((op,))
    return parts, f"opcode=0x{op:02x}", False


def m_command_length(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    if rng.random() < 0.5:
        parts[0] = parts[0][:rng.randrange(4)]
    else:
        parts[0] += rng.randbytes(rng.randint(1, 4))
    return parts, f"command-length={len(parts[0])}", False


def m_server_frame(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    sent = server_frame(rng)
    return codec.encode(sent), f"server-frame={type(sent).__name__.upper()}", True


def m_extra_part(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    extra = rng.randbytes(rng.randint(0, 64))
    if cmd == f.PUBLISH:  # one header entry per body, and one body more
        return [*codec.encode(publish(rng, per_message=True)), extra], "extra-body", False
    # A MANAGE with parts after its header is a queue move's (move_in) and a FORWARD's
    # parts are its frame's: both decode, and both are refused.
    return [*make_valid(rng, cmd).parts, extra], "extra-part", cmd in (f.MANAGE, f.FORWARD)


def m_missing_part(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    keep = 3 if cmd == f.PUBLISH else (2 if cmd == f.FORWARD else 1)
    return parts[:keep], "missing-part", False


def m_oversize_part(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    return ([*make_valid(rng, cmd).parts, _zeros(max_frame + OVER_MAX_FRAME)],
            "oversize-part", False)


def m_not_msgpack(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    # 0xc1 is the one octet msgpack never uses.
    return _with_header(rng, cmd, b"\xc1" + rng.randbytes(rng.randint(0, 16))), \
        "header-not-msgpack", False


def m_truncated(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    i = _header_index(cmd)
    parts[i] = parts[i][:rng.randrange(len(parts[i]))]  # no msgpack object is a prefix of one
    return parts, "header-truncated", False


def m_trailing(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, cmd).parts
    i = _header_index(cmd)
    parts[i] += rng.randbytes(rng.randint(1, 8))
    return parts, "header-trailing-bytes", False


def m_deep(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    depth = rng.choice((rng.randint(1, 100), rng.randint(500, 1500), rng.randint(1, 100_000)))
    return _with_header(rng, cmd, b"\x91" * depth + b"\xc0"), f"header-nested={depth}", False


def m_huge_length(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    head = rng.choice((b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
                       b"\xc6\xff\xff\xff\xff", b"\xdc\xff\xff", b"\xde\xff\xff",
                       b"\xdd\x7f\xff\xff\xff"))
    prefix = rng.choice((b"", b"\x92\x01", b"\x81\xa4name"))
    return _with_header(rng, cmd, prefix + head + b"\xc0" * rng.randint(0, 8)), \
        f"header-declares-{head[:1].hex()}", False


def m_ext(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    """An extension type, which a receiver rejects (PROTOCOL.md section 4.1): alone as
    the header, or (for PUBLISH) inside a message's headers, where nothing else would
    refuse it. An ext8 of length 0 is one too."""
    ext = rng.choice((b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x01", b"\xc7\x03\x05abc",
                      b"\xc7\x00\x05", b"\xc7\x00\x7f"))
    if cmd == f.PUBLISH and rng.random() < 0.5:
        # [seq, [{"k": ext}]] with one body
        return [COMMANDS[f.PUBLISH], queue(rng).encode(), b"\x92\x01\x91\x81\xa1k" + ext,
                b"body"], f"ext-in-message-headers={ext[:2].hex()}", False
    return _with_header(rng, cmd, ext), f"header-ext={ext[:2].hex()}", False


def m_int_key(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    return _with_header(rng, cmd, codec.packb({rng.randint(-5, 5): text(rng)})), \
        "header-int-key", False


def m_header_too_large(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    return _with_header(rng, cmd, _zeros(MAX_HEADER + 1)), "header-too-large", False


def m_shape(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    """A header of the wrong shape: an array of another length, a map for an array,
    anything for a map, anything but nil for a HEARTBEAT."""
    before, value, after = _layout(rng, cmd)
    if cmd == f.HEARTBEAT:
        value = rng.choice((0, False, {}, [], "", b""))
    elif isinstance(value, dict):
        value = rng.choice(([value], list(value.values()), 5, "x", None))
    elif rng.random() < 0.3:
        value = {"0": value}
    elif rng.random() < 0.5 and len(value) > 1:
        value = value[:-1] if cmd != f.PUBLISH else value[:1]
    else:
        value = [*value, None, None] if cmd == f.PUBLISH and len(value) == 2 else [*value, 0]
    return [*before, codec.packb(value), *after], "header-shape", False


def m_field(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    before, value, after = _layout(rng, cmd)
    key, name, bad = rng.choice(FIELDS[cmd])
    if cmd == f.PUBLISH and key == 2 and len(value) == 2:
        value.append(None)
    value[key] = rng.choice(bad)
    return [*before, codec.packb(value), *after], f"field:{name}", False


def m_publish_queue(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    parts = make_valid(rng, f.PUBLISH).parts
    kind = rng.randrange(5)
    if kind == 0:
        parts[1], how, semantic = b"fz\xff" + rng.randbytes(rng.randint(0, 4)), "not-utf8", False
    elif kind == 1:
        parts[1], how, semantic = b"", "empty", False
    elif kind == 2:
        long = rng.choice(("q" * rng.randint(MAX_QUEUE_NAME + 1, 400), "\u00e9" * 128))
        parts[1], how, semantic = long.encode(), "too-long", False
    elif kind == 3:  # only the broker writes to dead-letter queues
        parts[1], how, semantic = (queue(rng) + ".dlq").encode(), "dead-letter", True
    else:  # not the queue-name rule: the broker refuses to create it
        parts[1], how, semantic = rng.choice(BAD_QUEUE_NAMES).encode(), "rule", True
    return parts, f"queue-{how}", semantic


def m_publish_counts(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    fr = publish(rng, per_message=True)
    kind = rng.randrange(3)
    if kind == 0:
        headers: list[Any] = [*fr.headers, None]
        return codec.encode_publish(fr.queue, fr.seq, fr.bodies, headers), \
            "headers-count", False
    if kind == 1:
        entries: list[Any] = [5] * len(fr.bodies)
        return codec.encode_publish(fr.queue, fr.seq, fr.bodies, entries), \
            "header-entry-type", False
    bodies = [b"a", b"b", *fr.bodies]
    return [COMMANDS[f.PUBLISH], fr.queue.encode(),
            codec.packb([fr.seq, [], {"dedup_id": text(rng, 1, 20)}]), *bodies], \
        "dedup-several-bodies", False


def m_too_many_bodies(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    return [COMMANDS[f.PUBLISH], queue(rng).encode(), codec.packb([uint(rng), []]),
            *([b""] * TOO_MANY_BODIES)], "too-many-bodies", False


def m_too_many_ids(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    many = list(range(1, TOO_MANY_IDS + 1))
    header = {f.RELEASE: [many], f.NACK: [many, many, True, 0, ""],
              f.EXTEND: [many, many, 1000]}.get(cmd, [many, many])
    return [COMMANDS[cmd], codec.packb(header)], "too-many-ids", False


def m_ids_mismatch(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    before, value, after = _layout(rng, cmd)
    value[1] = [*value[1], 1]
    return [*before, codec.packb(value), *after], "ids-attempts-count", False


def m_unknown_ids(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    before, value, after = _layout(rng, cmd)
    value[0] = [UNASSIGNED + rng.randrange(1 << 40) for _ in value[0]]
    return [*before, codec.packb(value), *after], "unknown-ids", True


def m_credit(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    if rng.random() < 0.7:  # n out of the credit window: zero, negative, past max_credit
        n = rng.choice((0, -1, -rng.randint(1, 1 << 40), -(1 << 63), 1 << 40, (1 << 64) - 1))
        return codec.encode(f.Credit(queue(rng), n)), f"credit-n={n}", True
    name = rng.choice(BAD_QUEUE_NAMES)
    return codec.encode(f.Credit(name, rng.randint(1, 10))), "credit-queue-rule", True


def m_manage(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    if rng.random() < 0.5:
        return codec.encode(f.Manage(uint(rng), "fz-" + text(rng, 1, 10),
                                     {"queue": queue(rng)})), "manage-unknown-op", True
    op = rng.choice(("info", "purge", "pause", "resume", "delete"))
    return codec.encode(f.Manage(uint(rng), op, {"queue": rng.choice(BAD_QUEUE_NAMES)})), \
        "manage-unknown-queue", True


def m_hello_link(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    link = {"cluster": ALIEN + text(rng, 1, 10), "version": uint(rng), "router": text(rng)}
    return codec.encode(f.Hello(text(rng), link=link)), "hello-alien-link", True


def m_forward(rng: random.Random, cmd: int, max_frame: int) -> Mutated:
    inner = codec.encode(frame(rng, f.HEARTBEAT))
    kind = rng.randrange(4)
    if kind == 0:
        return [COMMANDS[f.FORWARD], b"", *inner], "forward-empty-key", False
    if kind == 1:
        return [COMMANDS[f.FORWARD], rng.randbytes(256), *inner], "forward-long-key", False
    if kind == 2:
        return [COMMANDS[f.FORWARD], b"k"], "forward-no-frame", False
    return codec.forward(b"k", codec.forward(b"j", inner)), "forward-nested", True


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    ops: tuple[int, ...]
    make: Callable[[random.Random, int, int], Mutated]
    weight: float = 1.0


MUTATIONS = (
    Mutation("version", CLIENT_COMMANDS, m_version),
    Mutation("signature", CLIENT_COMMANDS, m_signature),
    Mutation("opcode", CLIENT_COMMANDS, m_opcode),
    Mutation("command-length", CLIENT_COMMANDS, m_command_length),
    Mutation("server-frame", CLIENT_COMMANDS, m_server_frame, 0.5),
    Mutation("extra-part", CLIENT_COMMANDS, m_extra_part),
    Mutation("missing-part", CLIENT_COMMANDS, m_missing_part),
    Mutation("oversize-part", CLIENT_COMMANDS, m_oversize_part, 0.02),
    Mutation("not-msgpack", _HEADERED, m_not_msgpack),
    Mutation("truncated", _HEADERED, m_truncated),
    Mutation("trailing", _HEADERED, m_trailing),
    Mutation("deep", _HEADERED, m_deep),
    Mutation("huge-length", _HEADERED, m_huge_length),
    Mutation("ext", _HEADERED, m_ext),
    Mutation("int-key", _HEADERED, m_int_key),
    Mutation("header-too-large", _HEADERED, m_header_too_large, 0.02),
    Mutation("shape", _HEADERED, m_shape),
    Mutation("field", tuple(FIELDS), m_field, 4.0),
    Mutation("publish-queue", (f.PUBLISH,), m_publish_queue, 3.0),
    Mutation("publish-counts", (f.PUBLISH,), m_publish_counts, 2.0),
    Mutation("too-many-bodies", (f.PUBLISH,), m_too_many_bodies, 0.05),
    Mutation("too-many-ids", (*_SETTLING, f.START), m_too_many_ids, 0.05),
    Mutation("ids-mismatch", (f.ACK, f.NACK, f.EXTEND, f.START), m_ids_mismatch),
    Mutation("unknown-ids", _SETTLING, m_unknown_ids, 2.0),
    Mutation("credit", (f.CREDIT,), m_credit, 3.0),
    Mutation("manage", (f.MANAGE,), m_manage, 2.0),
    Mutation("hello-link", (f.HELLO,), m_hello_link),
    Mutation("forward", (f.FORWARD,), m_forward, 3.0),
)
HEAVY = frozenset({"oversize-part", "header-too-large", "too-many-bodies", "too-many-ids"})


def mutations_for(cmd: int, *, heavy: bool = True) -> list[Mutation]:
    return [m for m in MUTATIONS if cmd in m.ops and (heavy or m.name not in HEAVY)]


def make_almost(rng: random.Random, cmd: int, *, max_frame: int = DEFAULT_LIMITS.max_frame,
                heavy: bool = True) -> Fuzzed:
    """A valid frame of ``cmd`` with one mutation; ``heavy``: also those that make
    frames of megabytes or of 10,000 parts and more."""
    candidates = mutations_for(cmd, heavy=heavy)
    mutation = rng.choices(candidates, [m.weight for m in candidates])[0]
    parts, how, semantic = mutation.make(rng, cmd, max_frame)
    return Fuzzed(parts, "almost", cmd, f"{mutation.name}:{how}", refused=True,
                  semantic=semantic, oversize=any(len(p) > max_frame for p in parts))


# ------------------------------------------------------------------ garbage


def make_garbage(rng: random.Random) -> Fuzzed:
    """Random parts: wholly random, or a client's command part followed by random octets
    or by a random msgpack value. Refused if the decoder refuses it (random octets may
    decode: a HEARTBEAT's header is one octet)."""
    kind = rng.randrange(3)
    most = 2000 if rng.random() < 0.1 else 64

    def size() -> int:
        return rng.randint(0, most)

    if kind == 0:
        parts = [rng.randbytes(size()) for _ in range(rng.randint(1, 6))]
        if parts[0][:2] == f.SIGNATURE:
            parts[0] = b"\x00" + parts[0][1:]
        how = "random-parts"
    else:
        op = rng.choice(CLIENT_COMMANDS)
        if kind == 1:
            parts = [COMMANDS[op], *(rng.randbytes(size()) for _ in range(rng.randint(1, 5)))]
            how = f"random-after-{f.NAMES[op]}"
        else:
            parts = [COMMANDS[op], codec.packb(any_value(rng))]
            if op == f.PUBLISH:
                parts[1:1] = [queue(rng).encode()]
                parts += [rng.randbytes(size()) for _ in range(rng.randint(0, 3))]
            how = f"msgpack-after-{f.NAMES[op]}"
    return Fuzzed(parts, "garbage", 0, how, refused=not decodes(parts))


def decodes(parts: Parts) -> bool:
    """Whether the broker's decoder takes ``parts`` (on its default limits)."""
    try:
        codec.decode(parts)
    except Exception:  # any failure means "refused"; tests/unit/test_fuzz_decode.py says which
        return False
    return True


# ------------------------------------------------------------------ drawing


def make_hostile(rng: random.Random, *, max_frame: int = DEFAULT_LIMITS.max_frame,
                 heavy: bool = True, weights: tuple[float, float, float] = (0.25, 0.6, 0.15)
                 ) -> Fuzzed:
    """One frame of any flavour: valid, almost valid, garbage (by ``weights``)."""
    flavour = rng.choices(("valid", "almost", "garbage"), weights)[0]
    if flavour == "garbage":
        return make_garbage(rng)
    cmd = rng.choice(CLIENT_COMMANDS)
    if flavour == "valid":
        return make_valid(rng, cmd)
    return make_almost(rng, cmd, max_frame=max_frame, heavy=heavy)


def plan(seed: int, n: int, *, max_frame: int, oversize_at: tuple[int, ...] = (),
         heavy_each: int = 2) -> list[Fuzzed]:
    """``n`` hostile frames drawn from ``seed``. Heavy mutations (frames of megabytes, or
    of 10,000 parts and more) are not drawn at random but placed ``heavy_each`` times
    each (the first of them a PUBLISH, if it can be one), at random places: a run then
    tries every one of them and stays bounded. Parts over max_frame are made for each
    size in ``oversize_at`` (default: the receiver's ``max_frame``; a router's plan may
    add its brokers')."""
    rng = random.Random(seed)
    out = [make_hostile(rng, max_frame=max_frame, heavy=False) for _ in range(n)]
    for m in MUTATIONS:
        if m.name not in HEAVY:
            continue
        limits = (oversize_at or (max_frame,)) if m.name == "oversize-part" else (max_frame,)
        for limit in limits:
            for k in range(heavy_each):
                # A PUBLISH first: the frame a router forwards to a broker undecoded.
                cmd = f.PUBLISH if k == 0 and f.PUBLISH in m.ops else rng.choice(m.ops)
                parts, how, semantic = m.make(rng, cmd, limit)
                out[rng.randrange(n)] = Fuzzed(
                    parts, "almost", cmd, f"{m.name}:{how}", refused=True, semantic=semantic,
                    oversize=any(len(p) > limit for p in parts))
    return out


# --------------------------------------------------------- hypothesis strategies


def _randoms() -> st.SearchStrategy[random.Random]:
    return st.randoms(use_true_random=False)


def valid(cmd: int) -> st.SearchStrategy[Parts]:
    """Well-formed frames of command ``cmd``."""
    return _randoms().map(lambda r: make_valid(r, cmd).parts)


def almost_valid(cmd: int, *, heavy: bool = True) -> st.SearchStrategy[Parts]:
    """Frames of command ``cmd`` with one mutation."""
    return _randoms().map(lambda r: make_almost(r, cmd, heavy=heavy).parts)


def garbage() -> st.SearchStrategy[Parts]:
    """Random parts."""
    return _randoms().map(lambda r: make_garbage(r).parts)


def hostile(*, heavy: bool = True) -> st.SearchStrategy[Parts]:
    """Any of the above, for any client command."""
    return fuzzed(heavy=heavy).map(lambda fz: fz.parts)


def fuzzed(*, heavy: bool = True) -> st.SearchStrategy[Fuzzed]:
    """Any of the above, with what a receiver must do with it."""
    commands = st.sampled_from(CLIENT_COMMANDS)
    return st.one_of(
        st.tuples(commands, _randoms()).map(lambda a: make_valid(a[1], a[0])),
        st.tuples(commands, _randoms()).map(lambda a: make_almost(a[1], a[0], heavy=heavy)),
        _randoms().map(make_garbage),
    )
