"""Encode frames to ZeroMQ parts and decode parts to frames. No I/O.

Decoding is bounded: sizes are checked before msgpack runs, msgpack itself is
given limits, and every failure becomes one of MalformedFrame, FrameTooLarge,
UnknownOpcode or UnsupportedVersion, each carrying the opcode when known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from zq.errors import (
    FrameTooLarge,
    InvalidArgument,
    InvalidQueueName,
    MalformedFrame,
    UnknownOpcode,
    UnsupportedVersion,
)
from zq.protocol import frames as f
from zq.protocol.names import MAX_QUEUE_NAME as MAX_QUEUE_NAME


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoder enforces on what it accepts."""

    max_frame: int = 64 * 1024 * 1024  # bytes in all parts of one multipart message
    max_header: int = 4 * 1024 * 1024  # bytes in the msgpack header part
    max_batch: int = 10_000  # bodies per PUBLISH or DELIVER, ids per ACK/NACK/RELEASE

    def __post_init__(self) -> None:
        if self.max_frame < 1024 or self.max_header < 256 or self.max_batch < 1:
            raise ValueError(f"limits too small: {self}")


DEFAULT_LIMITS = Limits()

# Sizing rules shared by the SDK (splitting publishes) and the broker (batching
# deliveries), so that every frame either side builds fits the other's limits.
ENVELOPE = 64  # bytes of a PUBLISH/DELIVER besides its bodies and per-message header entries
PER_MESSAGE = 24  # header bytes one message adds besides its own headers (id, attempt, slot)


def header_size(headers: f.Headers | None) -> int:
    """Encoded size of one message's headers (0 for none)."""
    return 0 if headers is None else len(packb(headers))


def fits_alone(queue_len: int, body_len: int, hsize: int, limits: Limits) -> bool:
    """Whether one message can travel alone in a PUBLISH and in a DELIVER."""
    return (ENVELOPE + queue_len + PER_MESSAGE + hsize + body_len <= limits.max_frame
            and ENVELOPE + PER_MESSAGE + hsize <= limits.max_header)


# Header bytes every stored message keeps free for the broker's own headers (its
# attempt history, a dead letter's origin and reason), at most 1/16 of max_frame.
HEADER_RESERVE = 4096


def reserve(limits: Limits) -> int:
    """Header bytes a new message must leave free (see HEADER_RESERVE)."""
    return min(HEADER_RESERVE, limits.max_frame // 16)


def header_budget(body_len: int, limits: Limits) -> int:
    """The most header bytes a message with this body can carry and still travel
    alone in a DELIVER from any queue (a dead letter moves to another queue)."""
    return min(limits.max_header - ENVELOPE - PER_MESSAGE,
               limits.max_frame - ENVELOPE - MAX_QUEUE_NAME - PER_MESSAGE - body_len)


def fits_stored(body_len: int, hsize: int, limits: Limits) -> bool:
    """Whether a new message may be stored: it fits a DELIVER from any queue with
    ``reserve`` header bytes to spare for its history and dead-letter headers."""
    return hsize + reserve(limits) <= header_budget(body_len, limits)


def too_large_text(i: int, body_len: int, hsize: int, limits: Limits) -> str:
    """Why message ``i`` is refused, naming the setting to raise."""
    return (f"message {i} ({body_len} body + {hsize} header bytes) is too large: a message "
            f"must fit a DELIVER frame of max_frame = {limits.max_frame} bytes (headers at "
            f"most {limits.max_header}) with {reserve(limits)} header bytes to spare for "
            f"the broker's attempt history; raise the broker setting max_frame "
            f"(zq broker --max-frame) or send less")


def fits_together(queue_len: int, body_lens: Sequence[int], limits: Limits) -> bool:
    """Whether messages without headers fit one frame by bytes (then each fits alone)."""
    n = len(body_lens)
    return (ENVELOPE + queue_len + n * PER_MESSAGE + sum(body_lens) <= limits.max_frame
            and ENVELOPE + n * PER_MESSAGE <= limits.max_header)


def split(queue_len: int, body_lens: Sequence[int], hsizes: Sequence[int] | None,
          max_batch: int, limits: Limits) -> list[int]:
    """End indices that cut messages into frames within ``max_batch`` and ``limits``.

    A message that does not fit alone (see :func:`fits_alone`) still gets a
    frame of its own; callers refuse such messages before they get here.
    """
    n = len(body_lens)
    if hsizes is None and n <= max_batch and fits_together(queue_len, body_lens, limits):
        return [n] if n else []  # the common case, without a loop per message
    ends: list[int] = []
    fbytes = ENVELOPE + queue_len
    hbytes = ENVELOPE
    count = 0
    max_frame, max_header = limits.max_frame, limits.max_header
    for i, blen in enumerate(body_lens):
        h = PER_MESSAGE + hsizes[i] if hsizes else PER_MESSAGE
        if count and (count >= max_batch or fbytes + h + blen > max_frame
                      or hbytes + h > max_header):
            ends.append(i)
            fbytes, hbytes, count = ENVELOPE + queue_len, ENVELOPE, 0
        fbytes += h + blen
        hbytes += h
        count += 1
    if count:
        ends.append(len(body_lens))
    return ends

_COMMANDS = {op: f.SIGNATURE + bytes((f.VERSION, op)) for op in f.NAMES}
packb = msgpack.Packer(use_bin_type=True).pack
_packb = packb


def command(op: int) -> bytes:
    """The 4-byte command part for opcode ``op``."""
    return _COMMANDS[op]


def _unpack(data: bytes, limits: Limits, op: int) -> Any:
    if len(data) > limits.max_header:
        raise FrameTooLarge(
            f"header of {len(data)} bytes exceeds {limits.max_header}",
            op=op,
            limit=limits.max_header,
        )
    # Container lengths are bounded by the header's size (every element costs at
    # least a byte); the batch limit is checked on the decoded arrays, where an
    # over-long one is FRAME_TOO_LARGE rather than an undecodable header.
    n = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types; all mean one thing here
        raise MalformedFrame(f"undecodable header: {exc}", op=op) from None


def _bad(op: int, what: str) -> MalformedFrame:
    return MalformedFrame(f"{f.NAMES.get(op, hex(op))}: {what}", op=op)


def _queue_name(raw: Any, op: int, ref: Any = None) -> str:
    """A queue name part or field. Not text: MALFORMED_FRAME (the frame is broken);
    empty or too long: INVALID_QUEUE_NAME, as from the SDK and for every other
    breach of the rule (the session goes on)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(op, "queue name is not UTF-8") from None
    if not isinstance(raw, str):
        raise _bad(op, "queue name must be a string")
    if not raw or len(raw.encode("utf-8", "surrogatepass")) > MAX_QUEUE_NAME:
        raise InvalidQueueName(f"a queue name is 1..{MAX_QUEUE_NAME} bytes of UTF-8, got "
                               f"{len(raw.encode('utf-8', 'surrogatepass'))}", op=op,
                               ref=raw[:MAX_QUEUE_NAME] if ref is None else ref)
    return raw


def _int(v: Any, op: int, what: str, lo: int = 0) -> int:
    if type(v) is not int or v < lo or v >= 1 << 63:
        raise _bad(op, f"{what} must be an integer >= {lo}")
    return v


def _ids(v: Any, op: int, what: str, limits: Limits) -> list[int]:
    if type(v) is not list or not v:
        raise _bad(op, f"{what} must be a non-empty array")
    if len(v) > limits.max_batch:
        raise FrameTooLarge(f"{len(v)} {what} exceed {limits.max_batch}", op=op,
                            limit=limits.max_batch)
    for x in v:
        if type(x) is not int or x < 0:
            raise _bad(op, f"{what} must be non-negative integers")
    return v


def _headers(v: Any, n: int, op: int) -> list[f.Headers | None]:
    if type(v) is not list:
        raise _bad(op, "headers must be an array")
    if not v:
        return v
    if len(v) != n:
        raise _bad(op, f"{len(v)} header entries for {n} bodies")
    for h in v:
        if h is not None and type(h) is not dict:
            raise _bad(op, "each header entry must be a map or nil")
    return v


def _str(v: Any, op: int, what: str) -> str:
    if type(v) is not str:
        raise _bad(op, f"{what} must be a string")
    return v


def _map(v: Any, op: int) -> dict[str, Any]:
    if type(v) is not dict:
        raise _bad(op, "header must be a map")
    return v


def _array(v: Any, n: int, op: int) -> list[Any]:
    if type(v) is not list or len(v) != n:
        raise _bad(op, f"header must be an array of {n}")
    return v


def decode(parts: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> f.Frame:
    """Decode one multipart message (without any routing envelope) into a frame."""
    if not parts:
        raise MalformedFrame("empty message")
    cmd = parts[0]
    if len(cmd) != 4 or cmd[:2] != f.SIGNATURE:
        raise MalformedFrame("bad command part: not a zq frame")
    op = cmd[3]
    if cmd[2] != f.VERSION:
        raise UnsupportedVersion(f"protocol version {cmd[2]} (this side speaks {f.VERSION})", op=op)
    if op not in f.NAMES:
        raise UnknownOpcode(f"unknown opcode 0x{op:02x}", op=op)
    total = 0
    for p in parts:
        total += len(p)
    if op == f.PUBLISH:
        return _publish(parts, total, limits)
    if total > limits.max_frame:
        raise FrameTooLarge(f"message of {total} bytes exceeds {limits.max_frame}", op=op,
                            limit=limits.max_frame)
    if op == f.DELIVER:
        if len(parts) < 4:
            raise _bad(op, "needs command, queue, header and at least one body")
        queue = _queue_name(parts[1], op)
        bodies = list(parts[3:])
        if len(bodies) > limits.max_batch:
            raise FrameTooLarge(f"{len(bodies)} bodies exceed {limits.max_batch}", op=op,
                                limit=limits.max_batch)
        h = _array(_unpack(parts[2], limits, op), 3, op)
        ids = _ids(h[0], op, "ids", limits)
        attempts = _ids(h[1], op, "attempts", limits)
        if len(ids) != len(bodies) or len(attempts) != len(bodies):
            raise _bad(op, "ids, attempts and bodies differ in count")
        return f.Deliver(queue, ids, attempts, bodies, _headers(h[2], len(bodies), op))
    if len(parts) != 2:
        raise _bad(op, f"expects 2 parts, got {len(parts)}")
    h = _unpack(parts[1], limits, op)
    return _DECODERS[op](h, op, limits)


def deliver_ids(parts: Sequence[bytes]) -> tuple[list[int], list[int]] | None:
    """The ids and attempts of a DELIVER that failed to decode, if they can be read
    (to settle it rather than drop it); None if it is not a DELIVER or they cannot."""
    if len(parts) < 3 or parts[0] != _COMMANDS[f.DELIVER]:
        return None
    try:
        h = msgpack.unpackb(parts[2], raw=False, max_ext_len=0)
        ids, attempts = h[0], h[1]
    except Exception:  # msgpack raises many types; all mean "cannot read"
        return None
    ok = (type(ids) is list and type(attempts) is list and len(ids) == len(attempts)
          and all(type(x) is int and 0 <= x < 1 << 63 for x in ids + attempts))
    return (ids, attempts) if ok and ids else None


def reply_req(parts: Sequence[bytes]) -> int | None:
    """The ``req`` of a STATS_REPLY or MANAGE_REPLY that failed to decode, if it can be
    read (so the request waiting for it fails instead of waiting for ever)."""
    if len(parts) != 2 or parts[0] not in (_COMMANDS[f.STATS_REPLY], _COMMANDS[f.MANAGE_REPLY]):
        return None
    try:
        req = msgpack.unpackb(parts[1], raw=False, max_ext_len=0)[0]
    except Exception:  # msgpack raises many types; all mean "cannot read"
        return None
    return req if type(req) is int else None


def _publish(parts: Sequence[bytes], total: int, limits: Limits) -> f.Publish:
    """PUBLISH: the header is read first, so that a size error can name the seq."""
    op = f.PUBLISH
    if len(parts) < 4:
        raise _bad(op, "needs command, queue, header and at least one body")
    h = _unpack(parts[2], limits, op)
    if type(h) is not list or len(h) not in (2, 3):
        raise _bad(op, "header must be an array of 2 or 3")
    seq = _int(h[0], op, "seq")
    queue = _queue_name(parts[1], op, seq)
    bodies = list(parts[3:])
    if total > limits.max_frame:
        raise FrameTooLarge(f"PUBLISH of {total} bytes exceeds max_frame = {limits.max_frame} "
                            f"(broker setting max_frame, zq broker --max-frame)", op=op,
                            limit=limits.max_frame, ref=seq)
    if len(bodies) > limits.max_batch:
        raise FrameTooLarge(f"{len(bodies)} bodies exceed {limits.max_batch} per PUBLISH "
                            f"(broker setting max_publish_batch)", op=op,
                            limit=limits.max_batch, ref=seq)
    headers = _headers(h[1], len(bodies), op)
    opts = publish_options(h[2], len(bodies), seq) if len(h) == 3 and h[2] is not None else None
    spare = ENVELOPE + PER_MESSAGE + reserve(limits)
    if total + spare + MAX_QUEUE_NAME > limits.max_frame or (
            len(parts[2]) + spare > limits.max_header):
        # Near the limits: every message must also fit a DELIVER of its own, with room
        # for the headers the broker may add.
        for i, body in enumerate(bodies):
            hsize = header_size(headers[i]) if headers else 0
            if not fits_stored(len(body), hsize, limits):
                raise FrameTooLarge(too_large_text(i, len(body), hsize, limits), op=op,
                                    limit=limits.max_frame, ref=seq)
    return f.Publish(queue, seq, bodies, headers, opts)


MAX_PRIORITY = 9
MAX_KEY = 255  # bytes in a tenant or dedup id
_MS_MAX = 100 * 365 * 86_400_000  # a century: the bound on every duration


def publish_options(v: Any, n: int, seq: int) -> f.Options:
    """PUBLISH options: a map of known keys.

    A bad option is INVALID_ARGUMENT naming the seq (the session goes on), not
    MALFORMED_FRAME: the frame itself was well formed.
    """
    op = f.PUBLISH

    def bad(what: str) -> InvalidArgument:
        return InvalidArgument(f"PUBLISH: {what}", op=op, ref=seq)

    if type(v) is not dict:
        raise bad("options must be a map")
    for key in v:
        if key not in f.OPTION_KEYS:
            raise bad(f"unknown option {key!r}")

    def num(key: str, lo: int, hi: int) -> int | None:
        x = v.get(key)
        if x is None:
            return None
        if type(x) is not int or not lo <= x <= hi:
            raise bad(f"{key} must be an integer in {lo}..{hi}")
        return x

    def text(key: str) -> str | None:
        x = v.get(key)
        if x is None:
            return None
        if type(x) is not str or not x or len(x.encode()) > MAX_KEY:
            raise bad(f"{key} must be a string of 1..{MAX_KEY} bytes")
        return x

    dedup = text("dedup_id")
    if dedup is not None and n != 1:
        raise bad("dedup_id needs a frame of exactly one body")
    return f.Options(num("priority", 0, MAX_PRIORITY), num("delay_ms", 0, _MS_MAX),
                     num("eta_ms", 0, 1 << 62), num("ttl_ms", 1, _MS_MAX),
                     num("time_limit_ms", 1, _MS_MAX), num("max_attempts", 1, 1_000_000),
                     text("tenant"), dedup)


def _bool(v: Any, op: int, what: str) -> bool:
    if type(v) is not bool:
        raise _bad(op, f"{what} must be a boolean")
    return v


def _d_hello(h: Any, op: int, limits: Limits) -> f.Frame:
    m = _map(h, op)
    return f.Hello(_str(m.get("name", ""), op, "name"),
                   _int(m.get("heartbeat_ms", 0), op, "heartbeat_ms"),
                   _bool(m.get("starts", False), op, "starts"))


def _d_welcome(h: Any, op: int, limits: Limits) -> f.Frame:
    m = _map(h, op)
    try:
        return f.Welcome(
            _str(m["broker"], op, "broker"),
            _int(m["heartbeat_ms"], op, "heartbeat_ms", 1),
            _int(m["liveness"], op, "liveness", 1),
            _int(m["max_batch"], op, "max_batch", 1),
            _int(m["max_credit"], op, "max_credit", 1),
            _int(m["max_frame"], op, "max_frame", 1),
            _bool(m.get("starts", False), op, "starts"),
        )
    except KeyError as exc:
        raise _bad(op, f"missing field {exc}") from None


def _d_heartbeat(h: Any, op: int, limits: Limits) -> f.Frame:
    if h is not None:
        raise _bad(op, "header must be nil")
    return f.Heartbeat()


def _d_bye(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Bye(_str(_map(h, op).get("reason", ""), op, "reason"))


def _d_confirm(h: Any, op: int, limits: Limits) -> f.Frame:
    if type(h) is not list or not h or len(h) > limits.max_batch:
        raise _bad(op, "entries must be a non-empty array")
    out: list[tuple[int, int, int]] = []
    for e in h:
        e = _array(e, 3, op)
        out.append((_int(e[0], op, "seq"), _int(e[1], op, "first_id"),
                    _int(e[2], op, "count", 1)))
    return f.Confirm(out)


def _d_credit(h: Any, op: int, limits: Limits) -> f.Frame:
    h = _array(h, 2, op)
    n = h[1]
    if type(n) is not int:
        raise _bad(op, "n must be an integer")
    return f.Credit(_queue_name(h[0], op), n)  # n's range is the credit window's business


def _d_cancel(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Cancel(_queue_name(_array(h, 1, op)[0], op))


def _pair(h: Any, op: int, limits: Limits, n: int) -> tuple[list[Any], list[int], list[int]]:
    h = _array(h, n, op)
    ids = _ids(h[0], op, "ids", limits)
    attempts = _ids(h[1], op, "attempts", limits)
    if len(attempts) != len(ids):
        raise _bad(op, "ids and attempts differ in count")
    return h, ids, attempts


def _d_ack(h: Any, op: int, limits: Limits) -> f.Frame:
    _, ids, attempts = _pair(h, op, limits, 2)
    return f.Ack(ids, attempts)


def _d_nack(h: Any, op: int, limits: Limits) -> f.Frame:
    h, ids, attempts = _pair(h, op, limits, 5)
    return f.Nack(ids, attempts, _bool(h[2], op, "requeue"), _int(h[3], op, "delay_ms"),
                  _str(h[4], op, "reason"))


def _d_start(h: Any, op: int, limits: Limits) -> f.Frame:
    _, ids, attempts = _pair(h, op, limits, 2)
    return f.Start(ids, attempts)


def _d_release(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Release(_ids(_array(h, 1, op)[0], op, "ids", limits))


def _d_extend(h: Any, op: int, limits: Limits) -> f.Frame:
    h, ids, attempts = _pair(h, op, limits, 3)
    return f.Extend(ids, attempts, _int(h[2], op, "ms", 1))


def _d_manage(h: Any, op: int, limits: Limits) -> f.Frame:
    h = _array(h, 3, op)
    op_name = _str(h[1], op, "op")
    if not op_name:
        raise _bad(op, "op must be a non-empty string")
    return f.Manage(_int(h[0], op, "req"), op_name, _map(h[2], op))


def _d_manage_reply(h: Any, op: int, limits: Limits) -> f.Frame:
    h = _array(h, 2, op)
    return f.ManageReply(_int(h[0], op, "req"), _map(h[1], op))


def _d_stats(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Stats(_int(_array(h, 1, op)[0], op, "req"))


def _d_stats_reply(h: Any, op: int, limits: Limits) -> f.Frame:
    h = _array(h, 2, op)
    return f.StatsReply(_int(h[0], op, "req"), _map(h[1], op))


def _d_error(h: Any, op: int, limits: Limits) -> f.Frame:
    m = _map(h, op)
    return f.Error(
        _int(m.get("code", 1), op, "code"),
        _str(m.get("name", ""), op, "name"),
        _str(m.get("text", ""), op, "text"),
        _int(m.get("op", 0), op, "op"),
        m.get("ref"),
    )


_DECODERS = {
    f.HELLO: _d_hello,
    f.WELCOME: _d_welcome,
    f.HEARTBEAT: _d_heartbeat,
    f.BYE: _d_bye,
    f.CONFIRM: _d_confirm,
    f.CREDIT: _d_credit,
    f.CANCEL: _d_cancel,
    f.ACK: _d_ack,
    f.NACK: _d_nack,
    f.RELEASE: _d_release,
    f.EXTEND: _d_extend,
    f.START: _d_start,
    f.MANAGE: _d_manage,
    f.MANAGE_REPLY: _d_manage_reply,
    f.STATS: _d_stats,
    f.STATS_REPLY: _d_stats_reply,
    f.ERROR: _d_error,
}


def encode(frame: f.Frame) -> list[bytes]:
    """Encode a frame into the parts of one multipart message."""
    match frame:
        case f.Publish(queue, seq, bodies, headers, opts):
            head = [seq, headers] if opts is None else [seq, headers, opts.to_map()]
            return [_COMMANDS[f.PUBLISH], queue.encode(), _packb(head), *bodies]
        case f.Deliver(queue, ids, attempts, bodies, headers):
            return [_COMMANDS[f.DELIVER], queue.encode(), _packb([ids, attempts, headers]),
                    *bodies]
        case f.Hello(name, heartbeat_ms, starts):
            h: Any = {"name": name, "heartbeat_ms": heartbeat_ms}
            if starts:
                h["starts"] = True
        case f.Welcome(broker, heartbeat_ms, liveness, max_batch, max_credit, max_frame, starts):
            h = {"broker": broker, "heartbeat_ms": heartbeat_ms, "liveness": liveness,
                 "max_batch": max_batch, "max_credit": max_credit, "max_frame": max_frame}
            if starts:
                h["starts"] = True
        case f.Heartbeat():
            h = None
        case f.Bye(reason):
            h = {"reason": reason}
        case f.Confirm(entries):
            h = [list(e) for e in entries]
        case f.Credit(queue, n):
            h = [queue, n]
        case f.Cancel(queue):
            h = [queue]
        case f.Ack(ids, attempts):
            h = [ids, attempts]
        case f.Nack(ids, attempts, requeue, delay_ms, reason):
            h = [ids, attempts, requeue, delay_ms, reason]
        case f.Release(ids):
            h = [ids]
        case f.Extend(ids, attempts, ms):
            h = [ids, attempts, ms]
        case f.Start(ids, attempts):
            h = [ids, attempts]
        case f.Manage(req, op_name, args):
            h = [req, op_name, args]
        case f.ManageReply(req, result):
            h = [req, result]
        case f.Stats(req):
            h = [req]
        case f.StatsReply(req, stats):
            h = [req, stats]
        case f.Error(code, name, text, op, ref):
            h = {"code": code, "name": name, "text": text, "op": op, "ref": ref}
        case _:
            raise TypeError(f"not a frame: {frame!r}")
    return [_COMMANDS[f.OPCODES[type(frame)]], _packb(h)]


def encode_deliver(queue: bytes, ids: list[int], attempts: list[int],
                   headers: list[f.Headers | None], bodies: list[bytes]) -> list[bytes]:
    """Hot-path DELIVER encoder: takes the queue name already encoded."""
    return [_COMMANDS[f.DELIVER], queue, _packb([ids, attempts, headers]), *bodies]


def encode_confirm(entries: list[list[int]]) -> list[bytes]:
    """Hot-path CONFIRM encoder for ``[seq, first_id, count]`` entries."""
    return [_COMMANDS[f.CONFIRM], _packb(entries)]
