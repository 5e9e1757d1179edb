"""Checks of what the application passes to :class:`zq.Client`, before anything is sent.

Each raises the error the broker would (``zq.InvalidArgument``,
``zq.InvalidQueueName``, ``zq.FrameTooLarge``) or ``TypeError``, so that a bad
call fails at once and sends nothing.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import msgpack

from zq.errors import FrameTooLarge, InvalidArgument, InvalidQueueName
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import check_publishable
from zq.settings import MAX_COUNT

MAX_PRIORITY = 9
_MAX_KEY = 255  # UTF-8 bytes in a tenant or a dedup id
_MS_MAX = 100 * 365 * 86_400_000  # a century: the broker's bound on every duration
_ETA_MAX = 1 << 62


def check_fits(queue: str, body: bytes, headers: dict[str, Any] | None,
                limits: codec.Limits) -> None:
    hsize = codec.header_size(headers)
    if not codec.fits_stored(len(body), hsize, limits):
        raise FrameTooLarge(codec.too_large_text(0, len(body), hsize, limits),
                            limit=limits.max_frame)


def check_queue(queue: str) -> None:
    """A name that can name an existing queue (see zq.protocol.names for new ones)."""
    if not isinstance(queue, str) or not queue or len(queue.encode()) > codec.MAX_QUEUE_NAME:
        raise InvalidQueueName(f"queue name must be a non-empty str of at most "
                               f"{codec.MAX_QUEUE_NAME} UTF-8 bytes, got {queue!r}", queue=queue)


_publishable: set[str] = set()  # names checked already: publishing checks each name once


def check_publishable_once(queue: str) -> None:
    """The broker's rule for queues a producer writes to (so the error comes before
    anything is sent, and is the broker's: zq.InvalidQueueName)."""
    if queue not in _publishable:
        check_publishable(queue)
        if len(_publishable) < 10_000:
            _publishable.add(queue)


def check_body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"message body must be bytes, got {type(body).__name__}")


def seconds(value: Any, what: str) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise InvalidArgument(f"{what} must be a number of seconds, got {value!r}")
    return float(value)


def to_ms(value: Any, what: str, lo: int) -> int:
    """Seconds to whole milliseconds, rounded up (a delay or a limit is never short)."""
    secs = seconds(value, what)
    if secs < 0:
        raise InvalidArgument(f"{what} must be >= 0 seconds, got {value!r}")
    ms = math.ceil(round(secs * 1000, 6))
    if not lo <= ms <= _MS_MAX:
        if ms < lo:
            raise InvalidArgument(f"{what} must be > 0 seconds, got {value!r}")
        raise InvalidArgument(f"{what} must be at most a century, got {value!r}")
    return ms


def wall(value: Any, what: str) -> float:
    """A datetime (aware, or naive in local time) or epoch seconds -> epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    secs = seconds(value, what)
    if secs < 0:
        raise InvalidArgument(f"{what} must be epoch seconds >= 0, got {value!r}")
    return secs


def check_key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > _MAX_KEY:
        raise InvalidArgument(f"{what} must be a str of 1..{_MAX_KEY} UTF-8 bytes, "
                              f"got {value!r}")
    return value


def make_options(priority: int | None = None, delay: float | None = None,
                 eta: datetime | float | None = None, ttl: float | None = None,
                 time_limit: float | None = None, max_attempts: int | None = None,
                 tenant: str | None = None, dedup_id: str | None = None) -> f.Options | None:
    """Validate publish options and convert them to the wire's :class:`Options`.

    Raises ``zq.InvalidArgument`` for a bad value. None when nothing is set.
    """
    if priority is not None and (type(priority) is not int
                                 or not 0 <= priority <= MAX_PRIORITY):
        raise InvalidArgument(f"priority must be an int 0..{MAX_PRIORITY}, got {priority!r}")
    delay_ms = to_ms(delay, "delay", 0) if delay is not None else None
    eta_ms = None
    if eta is not None:
        eta_ms = math.ceil(round(wall(eta, "eta") * 1000, 3))
        if eta_ms > _ETA_MAX:
            raise InvalidArgument(f"eta is too far away: {eta!r}")
    ttl_ms = to_ms(ttl, "ttl", 1) if ttl is not None else None
    limit_ms = to_ms(time_limit, "time_limit", 1) if time_limit is not None else None
    if max_attempts is not None and (type(max_attempts) is not int
                                     or not 1 <= max_attempts <= 1_000_000):
        raise InvalidArgument(f"max_attempts must be an int 1..1000000, got {max_attempts!r}")
    if tenant is not None:
        check_key(tenant, "tenant")
    if dedup_id is not None:
        check_key(dedup_id, "dedup_id")
    opts = f.Options(priority, delay_ms or None, eta_ms, ttl_ms, limit_ms, max_attempts,
                     tenant, dedup_id)
    return opts if opts != _NO_OPTIONS else None


_NO_OPTIONS = f.Options()


def check_headers(headers: Any) -> f.Headers | None:
    if headers is None:
        return None
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise TypeError("headers must be a dict with str keys")
    return headers


def redrive_args(dlq: str, to: str | None, match: str | None,
                 since: datetime | float | None, until: datetime | float | None,
                 limit: int) -> dict[str, Any]:
    """The MANAGE ``redrive`` arguments (see :meth:`zq.Client.redrive`)."""
    check_queue(dlq)
    args: dict[str, Any] = {"queue": dlq}
    if to is not None:
        check_publishable(to)  # back to work: never into a dead-letter queue
        args["to"] = to
    if match is not None:
        if not isinstance(match, str):
            raise InvalidArgument(f"match must be a str, got {match!r}")
        args["match"] = match
    if since is not None:
        args["since"] = wall(since, "since")
    if until is not None:
        args["until"] = wall(until, "until")
    if type(limit) is not int or not 0 <= limit <= MAX_COUNT:
        raise InvalidArgument(f"limit must be an int 0..{MAX_COUNT}, got {limit!r}")
    if limit:
        args["limit"] = limit
    return args


def complete_args(queue: str, mid: int, attempt: int, ok: bool, result: Any = None,
                  error: dict[str, str] | None = None, retry: bool = True,
                  delay: float | None = None) -> dict[str, Any]:
    """The MANAGE ``complete`` arguments (checked: InvalidArgument for a bad value)."""
    args: dict[str, Any] = {"queue": queue, "id": mid, "attempt": attempt, "ok": bool(ok)}
    if ok:
        try:  # the broker decodes MANAGE strictly: a bad map key would end the session
            msgpack.unpackb(codec.packb(result), raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises many types; all mean one thing here
            raise InvalidArgument(f"result must be a msgpack value with str map keys: "
                                  f"{exc}") from None
        args["result"] = result
        return args
    err = error or {}
    if not isinstance(err, dict) or not all(
            isinstance(err.get(k, ""), str) for k in ("type", "message", "traceback")):
        raise InvalidArgument("error must be a dict with str type, message and traceback")
    args["error"] = {k: err.get(k, "") for k in ("type", "message", "traceback")}
    args["retry"] = bool(retry)
    if delay is not None:
        if (not isinstance(delay, int | float) or isinstance(delay, bool)
                or not math.isfinite(delay) or delay < 0):
            raise InvalidArgument(f"delay must be seconds >= 0, got {delay!r}")
        ms = math.ceil(round(delay * 1000, 6))
        if ms > _MS_MAX:
            raise InvalidArgument(f"delay must be at most a century, got {delay!r}")
        if ms:
            args["delay_ms"] = ms
    return args
