"""PUBLISH options (PROTOCOL.md section 11.1): a map of known keys, each in range. No I/O.

A bad option is INVALID_ARGUMENT naming the frame's seq, and the session goes on:
the frame itself was well formed. The bounds are the ones in
:mod:`zq.protocol.limits`; the SDK checks the same bounds before it sends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zq.errors import InvalidArgument
from zq.protocol import frames as f
from zq.protocol.limits import (
    MAX_ATTEMPTS,
    MAX_DURATION_MS,
    MAX_ETA_MS,
    MAX_KEY,
    MAX_PRIORITY,
)


def publish_options(v: Any, n: int, seq: int) -> f.Options:
    """The options of a PUBLISH of ``n`` bodies: a map of known keys.

    A bad option is INVALID_ARGUMENT naming the seq (the session goes on), not
    MALFORMED_FRAME: the frame itself was well formed.
    """

    def bad(what: str) -> InvalidArgument:
        return InvalidArgument(f"PUBLISH: {what}", op=f.PUBLISH, ref=seq)

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
    key = _routing_key(v.get("key"), dedup, bad)
    return f.Options(num("priority", 0, MAX_PRIORITY), num("delay_ms", 0, MAX_DURATION_MS),
                     num("eta_ms", 0, MAX_ETA_MS), num("ttl_ms", 1, MAX_DURATION_MS),
                     num("time_limit_ms", 1, MAX_DURATION_MS),
                     num("max_attempts", 1, MAX_ATTEMPTS), text("tenant"), dedup, key)


def _routing_key(key: Any, dedup: str | None, bad: Callable[[str], InvalidArgument]
                 ) -> str | None:
    """The ``key`` option: a PUBLISH to a topic (PROTOCOL.md section 20), 0..255 bytes."""
    if key is None:
        return None
    if type(key) is not str or len(key.encode()) > MAX_KEY:
        raise bad(f"key must be a string of 0..{MAX_KEY} bytes")
    if dedup is not None:
        raise bad("dedup_id is not taken on a topic's publish (key): publish to a queue")
    return key

