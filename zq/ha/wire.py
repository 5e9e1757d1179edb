"""A committed batch as the primary ships it to its standby, and back. No I/O.

One ZeroMQ multipart message: ``[b"ZQR1", header, body, body, ...]``. The header is a
msgpack map: the primary's ``term``, the batch's ``seq`` (1, 2, ... per term, no gap:
a standby applies them in order), and every field of the
:class:`~zq.persistence.base.WriteBatch` except the message bodies, which follow as
raw parts in insert order and are never decoded or copied into the header. A
standby that gets anything else answers with :class:`~zq.errors.MalformedFrame`
naming what was wrong, and applies nothing of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from zq.errors import MalformedFrame
from zq.persistence.base import Rewrite, Update, WriteBatch

MAGIC = b"ZQR1"
CONTROL = b"ZQRC"  # [CONTROL, msgpack map with "op", (a backup's chunk)]: everything else
_packb = msgpack.Packer(use_bin_type=True).pack


@dataclass(frozen=True, slots=True)
class Shipped:
    term: int
    seq: int
    batch: WriteBatch


def encode(term: int, seq: int, batch: WriteBatch) -> list[bytes]:
    """The parts of one shipped batch."""
    updates: list[list[Any]] = []
    for u in batch.updates:
        if isinstance(u, Rewrite):
            updates.append(["r", u.id, u.queue, u.attempts, u.ready_at, u.headers, u.opts])
        else:
            ids, attempts, ready_at, state = u
            updates.append(["u", ids, attempts, ready_at, state])
    header = {
        "term": term, "seq": seq, "created": batch.created,
        "inserts": [[first, queue, headers, len(bodies)]
                    for first, queue, headers, bodies in batch.inserts],
        "placed": batch.placed, "updates": updates, "deletes": batch.deletes,
        "settings": batch.settings, "purges": batch.purges, "dedups": batch.dedups,
        "results": batch.results, "schedules": batch.schedules,
        "produced": batch.produced, "trims": batch.trims,
    }
    parts = [MAGIC, _packb(header)]
    for e in batch.inserts:
        parts.extend(e[3])
    return parts


def decode(parts: list[bytes]) -> Shipped:
    """A shipped batch, checked; MalformedFrame says what is wrong with one that is not."""
    if len(parts) < 2 or parts[0] != MAGIC:
        raise MalformedFrame("not a shipped batch (no ZQR1 magic)")
    h = _unpack_map(parts[1], "a shipped batch's header")
    try:
        shipped = _decode(h, parts[2:])
    except Exception as exc:  # whatever a bad header breaks in the decoding
        raise MalformedFrame(f"a shipped batch's header is wrong: {exc!r}") from None
    shipped.batch.position = (shipped.term, shipped.seq)
    return shipped


def control(op: str, data: bytes | None = None, **fields: Any) -> list[bytes]:
    """A control message: ``op`` and its fields, and a backup's chunk if ``data``."""
    parts = [CONTROL, _packb({"op": op, **fields})]
    if data is not None:
        parts.append(data)
    return parts


# The fields each control op must carry, and their types.
OPS: dict[str, dict[str, type]] = {
    "follow": {"node": str, "term": int, "seq": int},  # standby: where it stands
    "ack": {"term": int, "seq": int},  # standby: applied up to (term, seq)
    "stale": {"term": int},  # standby: it has seen a newer term than the sender's
    "ping": {"term": int},  # primary: still here (the standby answers with an ack)
    "refused": {"why": str},  # primary: not taken as standby
    "chunk": {"term": int, "seq": int, "at": int, "last": bool},  # primary: a backup's part
}


def decode_control(parts: list[bytes]) -> dict[str, Any]:
    """A control message's map, checked against OPS (MalformedFrame if it is not one)."""
    if len(parts) not in (2, 3) or parts[0] != CONTROL:
        raise MalformedFrame("not a replication control message")
    h = _unpack_map(parts[1], "a control message")
    fields = OPS.get(str(h.get("op")))
    if fields is None:
        raise MalformedFrame(f"unknown control message: {h!r:.80}")
    for name, kind in fields.items():
        if type(h.get(name)) is not kind:
            raise MalformedFrame(f"control {h['op']!r}: {name} must be {kind.__name__}")
    if (h["op"] == "chunk") != (len(parts) == 3):
        raise MalformedFrame("only a chunk carries data")
    if "data" in h:
        raise MalformedFrame("a control message's header may not carry data")
    out: dict[str, Any] = h
    if len(parts) == 3:
        out["data"] = parts[2]
    return out


def _unpack_map(part: bytes, what: str) -> dict[Any, Any]:
    """A msgpack map, or MalformedFrame naming ``what`` was not one."""
    try:
        h = msgpack.unpackb(part, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise MalformedFrame(f"{what} is not msgpack") from None
    if not isinstance(h, dict):
        raise MalformedFrame(f"{what} is not a map")
    return h


def _int(v: Any, what: str, low: int = 0) -> int:
    if type(v) is not int or v < low:
        raise ValueError(f"{what} must be an int >= {low}, got {v!r}")
    return v


def _blob(v: Any, what: str) -> bytes | None:
    if v is not None and type(v) is not bytes:
        raise ValueError(f"{what} must be bytes or nil, got {type(v).__name__}")
    return v


def _decode(h: dict[str, Any], bodies: list[bytes]) -> Shipped:
    term, seq = _int(h["term"], "term", 1), _int(h["seq"], "seq", 1)
    b = WriteBatch(created=float(h["created"]))
    at = 0
    for first, queue, headers, n in h["inserts"]:
        n = _int(n, "a frame's count", 1)
        if headers is not None and len(headers) != n:
            raise ValueError("headers and bodies differ in number")
        if at + n > len(bodies):
            raise ValueError("fewer bodies than the inserts name")
        b.inserts.append((_int(first, "an id", 1), str(queue), headers, bodies[at:at + n]))
        at += n
    if at != len(bodies):
        raise ValueError("more bodies than the inserts name")
    b.updates = [_update(u) for u in h["updates"]]
    b.placed = [(int(f), int(last), float(due), _blob(o, "options"))
                for f, last, due, o in h["placed"]]
    b.deletes = [_int(i, "an id", 1) for i in h["deletes"]]
    b.settings = [(str(q), _blob(blob, "settings")) for q, blob in h["settings"]]
    b.purges = [(str(q), int(a), int(z)) for q, a, z in h["purges"]]
    b.dedups = [(str(q), str(k), int(i), float(t)) for q, k, i, t in h["dedups"]]
    b.results = [(int(i), str(q), str(st), bytes(d), float(t))
                 for i, q, st, d, t in h["results"]]
    b.schedules = [(str(name), _blob(spec, "a schedule")) for name, spec in h["schedules"]]
    b.produced = [(bytes(p), int(s), int(f), int(c)) for p, s, f, c in h["produced"]]
    b.trims = [(bytes(p), int(below)) for p, below in h["trims"]]
    return Shipped(term, seq, b)


def _update(u: list[Any]) -> Update | Rewrite:
    if u[0] == "r":
        _, mid, queue, attempts, ready_at, headers, opts = u
        return Rewrite(_int(mid, "an id", 1), str(queue), int(attempts), float(ready_at),
                       headers, _blob(opts, "options"))
    if u[0] == "u":
        _, ids, attempts, ready_at, state = u
        if len(ids) != len(attempts):
            raise ValueError("an update's ids and attempts differ in number")
        return ([_int(i, "an id", 1) for i in ids], [int(a) for a in attempts],
                float(ready_at), int(state))
    raise ValueError(f"unknown update kind {u[0]!r}")
