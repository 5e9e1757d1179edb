"""Checks on the decoded fields of a frame's header. No I/O.

Each takes a decoded msgpack value and the frame's opcode and returns the value
if it has the type section 6 of PROTOCOL.md gives it, or raises: MALFORMED_FRAME
for a broken field (the session ends), FRAME_TOO_LARGE for too many ids, and
INVALID_QUEUE_NAME for a well-formed queue name that breaks the length rule (the
session goes on). Types are checked with ``type(v) is``, so that a bool is not
taken for an int (section 4.1).
"""

from __future__ import annotations

from typing import Any

from zq.errors import FrameTooLarge, InvalidQueueName
from zq.protocol import frames as f
from zq.protocol.limits import MAX_PRODUCER, MAX_QUEUE_NAME, UINT_END, Limits
from zq.protocol.wire import bad


def queue_name(raw: Any, op: int, ref: Any = None) -> str:
    """A queue name part or field. Not text: MALFORMED_FRAME (the frame is broken);
    empty or too long: INVALID_QUEUE_NAME, as from the SDK and for every other
    breach of the rule (the session goes on)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(op, "queue name is not UTF-8") from None
    if not isinstance(raw, str):
        raise bad(op, "queue name must be a string")
    if not raw or len(raw.encode("utf-8", "surrogatepass")) > MAX_QUEUE_NAME:
        raise InvalidQueueName(f"a queue name is 1..{MAX_QUEUE_NAME} bytes of UTF-8, got "
                               f"{len(raw.encode('utf-8', 'surrogatepass'))}", op=op,
                               ref=raw[:MAX_QUEUE_NAME] if ref is None else ref)
    return raw


def uint(v: Any, op: int, what: str, lo: int = 0) -> int:
    """A uint of at least ``lo``."""
    if type(v) is not int or v < lo or v >= UINT_END:
        raise bad(op, f"{what} must be an integer >= {lo}")
    return v


def id_array(v: Any, op: int, what: str, limits: Limits) -> list[int]:
    """A non-empty array of non-negative integers, at most the batch limit."""
    if type(v) is not list or not v:
        raise bad(op, f"{what} must be a non-empty array")
    if len(v) > limits.max_batch:
        raise FrameTooLarge(f"{len(v)} {what} exceed {limits.max_batch}", op=op,
                            limit=limits.max_batch)
    for x in v:
        if type(x) is not int or x < 0:
            raise bad(op, f"{what} must be non-negative integers")
    return v


def message_headers(v: Any, n: int, op: int) -> list[f.Headers | None]:
    """Per-message headers: an empty array, or one map or nil for each of ``n`` bodies."""
    if type(v) is not list:
        raise bad(op, "headers must be an array")
    if not v:
        return v
    if len(v) != n:
        raise bad(op, f"{len(v)} header entries for {n} bodies")
    for h in v:
        if h is not None and type(h) is not dict:
            raise bad(op, "each header entry must be a map or nil")
    return v


def string(v: Any, op: int, what: str) -> str:
    if type(v) is not str:
        raise bad(op, f"{what} must be a string")
    return v


def mapping(v: Any, op: int) -> dict[str, Any]:
    """A header that must be a map."""
    if type(v) is not dict:
        raise bad(op, "header must be a map")
    return v


def array(v: Any, n: int, op: int) -> list[Any]:
    """A header that must be an array of exactly ``n`` elements."""
    if type(v) is not list or len(v) != n:
        raise bad(op, f"header must be an array of {n}")
    return v


def boolean(v: Any, op: int, what: str) -> bool:
    if type(v) is not bool:
        raise bad(op, f"{what} must be a boolean")
    return v


def producer_id(v: Any, op: int) -> bytes:
    """A HELLO producer id: bin of at most MAX_PRODUCER octets (empty: none)."""
    if type(v) is not bytes or len(v) > MAX_PRODUCER:
        raise bad(op, f"producer must be bin of at most {MAX_PRODUCER} octets")
    return v


def optional_map(v: Any, op: int, what: str, required: tuple[str, ...]) -> dict[str, Any] | None:
    """An optional map (nil or absent: None) that must hold the ``required`` keys."""
    if v is None:
        return None
    if type(v) is not dict or not all(type(k) is str for k in v):
        raise bad(op, f"{what} must be a map with string keys")
    missing = [k for k in required if k not in v]
    if missing:
        raise bad(op, f"{what} lacks {', '.join(missing)}")
    return v
