"""Decode the parts of one ZeroMQ multipart message into a frame. No I/O.

Decoding is bounded and checks in the order of PROTOCOL.md section 4.2: sizes are
checked before msgpack runs, msgpack itself is given limits, and every failure
becomes one of MalformedFrame, FrameTooLarge, UnknownOpcode, UnsupportedVersion
(fatal for the session), or InvalidQueueName, InvalidArgument (not fatal), each
carrying the opcode when known and, for PUBLISH, its seq.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from zq.errors import FrameTooLarge, MalformedFrame, UnknownOpcode, UnsupportedVersion
from zq.protocol import frames as f
from zq.protocol.fields import (
    array,
    boolean,
    id_array,
    mapping,
    message_headers,
    optional_map,
    producer_id,
    queue_name,
    string,
    uint,
)
from zq.protocol.limits import (
    CATALOG_KINDS,
    CLUSTER_KEYS,
    DEFAULT_LIMITS,
    ENVELOPE,
    LINK_KEYS,
    MAX_KEY_OCTETS,
    MAX_NAME,
    MAX_QUEUE_NAME,
    PER_MESSAGE,
    UINT_END,
    Limits,
)
from zq.protocol.options import publish_options
from zq.protocol.sizing import fits_stored, header_size, reserve, too_large_text
from zq.protocol.wire import COMMANDS, bad, no_ext, unpack


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
        raise FrameTooLarge(f"message of {total} bytes exceeds max_frame = {limits.max_frame} "
                            f"(broker setting max_frame, zq broker --max-frame)", op=op,
                            limit=limits.max_frame)
    if op == f.DELIVER:
        return _deliver(parts, limits)
    if op == f.FORWARD:
        return _forward(parts)
    if op == f.MANAGE and len(parts) > 2:
        return _manage_with_bodies(parts, limits)
    if len(parts) != 2:
        raise bad(op, f"expects 2 parts, got {len(parts)}")
    h = unpack(parts[1], limits, op)
    return _DECODERS[op](h, op, limits)


def _forward(parts: Sequence[bytes]) -> f.Forward:
    op = f.FORWARD
    if len(parts) < 3:
        raise bad(op, "needs command, client key and at least one part of a frame")
    key = parts[1]
    if not 1 <= len(key) <= MAX_KEY_OCTETS:
        raise bad(op, f"client key must be 1 to {MAX_KEY_OCTETS} octets")
    return f.Forward(key, list(parts[2:]))


def _deliver(parts: Sequence[bytes], limits: Limits) -> f.Deliver:
    op = f.DELIVER
    if len(parts) < 4:
        raise bad(op, "needs command, queue, header and at least one body")
    queue = queue_name(parts[1], op)
    bodies = list(parts[3:])
    if len(bodies) > limits.max_batch:
        raise FrameTooLarge(f"{len(bodies)} bodies exceed {limits.max_batch}", op=op,
                            limit=limits.max_batch)
    h = array(unpack(parts[2], limits, op), 3, op)
    ids = id_array(h[0], op, "ids", limits)
    attempts = id_array(h[1], op, "attempts", limits)
    if len(ids) != len(bodies) or len(attempts) != len(bodies):
        raise bad(op, "ids, attempts and bodies differ in count")
    return f.Deliver(queue, ids, attempts, bodies, message_headers(h[2], len(bodies), op))


def _publish(parts: Sequence[bytes], total: int, limits: Limits) -> f.Publish:
    """PUBLISH: the header is read first, so that a size error can name the seq."""
    op = f.PUBLISH
    if len(parts) < 4:
        raise bad(op, "needs command, queue, header and at least one body")
    h = unpack(parts[2], limits, op)
    if type(h) is not list or len(h) not in (2, 3):
        raise bad(op, "header must be an array of 2 or 3")
    seq = uint(h[0], op, "seq")
    queue = queue_name(parts[1], op, seq)
    bodies = list(parts[3:])
    if total > limits.max_frame:
        raise FrameTooLarge(f"PUBLISH of {total} bytes exceeds max_frame = {limits.max_frame} "
                            f"(broker setting max_frame, zq broker --max-frame)", op=op,
                            limit=limits.max_frame, ref=seq)
    if len(bodies) > limits.max_batch:
        raise FrameTooLarge(f"{len(bodies)} bodies exceed {limits.max_batch} per PUBLISH "
                            f"(broker setting max_publish_batch)", op=op,
                            limit=limits.max_batch, ref=seq)
    headers = message_headers(h[1], len(bodies), op)
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


def deliver_ids(parts: Sequence[bytes]) -> tuple[list[int], list[int]] | None:
    """The ids and attempts of a DELIVER that failed to decode, if they can be read
    (to settle it rather than drop it); None if it is not a DELIVER or they cannot."""
    if len(parts) < 3 or parts[0] != COMMANDS[f.DELIVER]:
        return None
    try:
        h = msgpack.unpackb(parts[2], raw=False, max_ext_len=0, ext_hook=no_ext)
        ids, attempts = h[0], h[1]
    except Exception:  # msgpack raises many types; all mean "cannot read"
        return None
    ok = (type(ids) is list and type(attempts) is list and len(ids) == len(attempts)
          and all(type(x) is int and 0 <= x < UINT_END for x in ids + attempts))
    return (ids, attempts) if ok and ids else None


def reply_req(parts: Sequence[bytes]) -> int | None:
    """The ``req`` of a STATS_REPLY or MANAGE_REPLY that failed to decode, if it can be
    read (so the request waiting for it fails instead of waiting for ever)."""
    if len(parts) != 2 or parts[0] not in (COMMANDS[f.STATS_REPLY], COMMANDS[f.MANAGE_REPLY]):
        return None
    try:
        req = msgpack.unpackb(parts[1], raw=False, max_ext_len=0, ext_hook=no_ext)[0]
    except Exception:  # msgpack raises many types; all mean "cannot read"
        return None
    return req if type(req) is int else None


# --------------------------------------------- frames of two parts, by opcode


def _d_hello(h: Any, op: int, limits: Limits) -> f.Frame:
    m = mapping(h, op)
    return f.Hello(string(m.get("name", ""), op, "name"),
                   uint(m.get("heartbeat_ms", 0), op, "heartbeat_ms"),
                   boolean(m.get("starts", False), op, "starts"),
                   producer_id(m.get("producer", b""), op),
                   optional_map(m.get("link"), op, "link", LINK_KEYS),
                   _user(m.get("user"), op))


def _user(v: Any, op: int) -> str | None:
    if v is None:
        return None
    user = string(v, op, "user")
    if not 0 < len(user) <= MAX_NAME:
        raise bad(op, f"user must be 1 to {MAX_NAME} characters")
    return user


def _d_welcome(h: Any, op: int, limits: Limits) -> f.Frame:
    m = mapping(h, op)
    try:
        return f.Welcome(
            string(m["broker"], op, "broker"),
            uint(m["heartbeat_ms"], op, "heartbeat_ms", 1),
            uint(m["liveness"], op, "liveness", 1),
            uint(m["max_batch"], op, "max_batch", 1),
            uint(m["max_credit"], op, "max_credit", 1),
            uint(m["max_frame"], op, "max_frame", 1),
            boolean(m.get("starts", False), op, "starts"),
            optional_map(m.get("cluster"), op, "cluster", CLUSTER_KEYS),
        )
    except KeyError as exc:
        raise bad(op, f"missing field {exc}") from None


def _d_heartbeat(h: Any, op: int, limits: Limits) -> f.Frame:
    if h is not None:
        raise bad(op, "header must be nil")
    return f.Heartbeat()


def _d_bye(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Bye(string(mapping(h, op).get("reason", ""), op, "reason"))


def _d_confirm(h: Any, op: int, limits: Limits) -> f.Frame:
    if type(h) is not list or not h or len(h) > limits.max_batch:
        raise bad(op, "entries must be a non-empty array")
    out: list[tuple[int, int, int]] = []
    for e in h:
        e = array(e, 3, op)
        out.append((uint(e[0], op, "seq"), uint(e[1], op, "first_id"),
                    uint(e[2], op, "count", 1)))
    return f.Confirm(out)


def _d_credit(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 2, op)
    n = h[1]
    if type(n) is not int:
        raise bad(op, "n must be an integer")
    return f.Credit(queue_name(h[0], op), n)  # n's range is the credit window's business


def _d_cancel(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Cancel(queue_name(array(h, 1, op)[0], op))


def _pair(h: Any, op: int, limits: Limits, n: int) -> tuple[list[Any], list[int], list[int]]:
    h = array(h, n, op)
    ids = id_array(h[0], op, "ids", limits)
    attempts = id_array(h[1], op, "attempts", limits)
    if len(attempts) != len(ids):
        raise bad(op, "ids and attempts differ in count")
    return h, ids, attempts


def _d_ack(h: Any, op: int, limits: Limits) -> f.Frame:
    _, ids, attempts = _pair(h, op, limits, 2)
    return f.Ack(ids, attempts)


def _d_nack(h: Any, op: int, limits: Limits) -> f.Frame:
    h, ids, attempts = _pair(h, op, limits, 5)
    return f.Nack(ids, attempts, boolean(h[2], op, "requeue"), uint(h[3], op, "delay_ms"),
                  string(h[4], op, "reason"))


def _d_start(h: Any, op: int, limits: Limits) -> f.Frame:
    _, ids, attempts = _pair(h, op, limits, 2)
    return f.Start(ids, attempts)


def _d_release(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Release(id_array(array(h, 1, op)[0], op, "ids", limits))


def _d_extend(h: Any, op: int, limits: Limits) -> f.Frame:
    h, ids, attempts = _pair(h, op, limits, 3)
    return f.Extend(ids, attempts, uint(h[2], op, "ms", 1))


def _d_manage(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 3, op)
    op_name = string(h[1], op, "op")
    if not op_name:
        raise bad(op, "op must be a non-empty string")
    return f.Manage(uint(h[0], op, "req"), op_name, mapping(h[2], op))


def _manage_with_bodies(parts: Sequence[bytes], limits: Limits) -> f.Manage:
    """MANAGE with raw parts after its header: bodies for ``move_in`` (section 17.5)."""
    op = f.MANAGE
    if len(parts) - 2 > limits.max_batch:
        raise FrameTooLarge(f"{len(parts) - 2} bodies exceed {limits.max_batch}", op=op,
                            limit=limits.max_batch)
    m = _d_manage(unpack(parts[1], limits, op), op, limits)
    assert isinstance(m, f.Manage)
    return f.Manage(m.req, m.op, m.args, list(parts[2:]))


def _d_manage_reply(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 2, op)
    return f.ManageReply(uint(h[0], op, "req"), mapping(h[1], op))


def _d_stats(h: Any, op: int, limits: Limits) -> f.Frame:
    return f.Stats(uint(array(h, 1, op)[0], op, "req"))


def _d_stats_reply(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 2, op)
    return f.StatsReply(uint(h[0], op, "req"), mapping(h[1], op))


def _d_error(h: Any, op: int, limits: Limits) -> f.Frame:
    m = mapping(h, op)
    return f.Error(
        uint(m.get("code", 1), op, "code"),
        string(m.get("name", ""), op, "name"),
        string(m.get("text", ""), op, "text"),
        uint(m.get("op", 0), op, "op"),
        m.get("ref"),
        optional_map(m.get("info"), op, "info", ()),
    )


def _d_locate(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 2, op)
    return f.Locate(uint(h[0], op, "req"), queue_name(h[1], op, h[0]))


def _d_location(h: Any, op: int, limits: Limits) -> f.Frame:
    h = array(h, 2, op)
    return f.Location(uint(h[0], op, "req"), mapping(h[1], op))


def _d_catalog(h: Any, op: int, limits: Limits) -> f.Frame:
    moved = None
    if type(h) is list and len(h) == 4:
        moved = _moved_map(h[3], op)
        h = h[:3]
    h = array(h, 3, op)
    kind = string(h[1], op, "kind")
    if kind not in CATALOG_KINDS:
        raise bad(op, f"kind must be one of {', '.join(CATALOG_KINDS)}")
    names = h[2]
    if type(names) is not list or len(names) > limits.max_batch * 100:
        raise bad(op, "queues must be an array of names")
    return f.Catalog(uint(h[0], op, "seq"), kind, [queue_name(n, op) for n in names], moved)


def _moved_map(raw: Any, op: int) -> dict[str, str]:
    """CATALOG's ``moved``: queue name -> broker id, both strings."""
    if type(raw) is not dict or not all(
            type(k) is str and type(v) is str and k and v for k, v in raw.items()):
        raise bad(op, "moved must be a map of queue names to broker ids")
    return raw


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
    f.LOCATE: _d_locate,
    f.LOCATION: _d_location,
    f.CATALOG: _d_catalog,
}
