"""Arguments of the schedule operations (``schedule_add``): parsed and checked
before anything is sent, so a bad value fails with one clear ``InvalidArgument``."""

from __future__ import annotations

import math
import re
from typing import Any

from zq.cron import Cron
from zq.errors import InvalidArgument
from zq.schedules import MIN_EVERY_MS

MISFIRE_RULES = ("once", "skip")
_MAX_NAME = 255  # UTF-8 bytes
_EVERY_MAX_S = 366 * 86_400.0  # the broker's bounds on an interval: 10 ms .. 366 days
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_every(value: Any) -> float:
    """An interval in seconds from a number of seconds or a text like ``"10s"``.

    Texts are one or more ``<number><unit>`` parts with units ``ms``, ``s``,
    ``m``, ``h``, ``d`` (``"500ms"``, ``"5m"``, ``"1h30m"``, ``"1.5s"``), or a
    bare number of seconds (``"10"``). The interval must be 10 ms to 366 days.

    >>> parse_every("1h30m")
    5400.0
    """
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        secs = _parse_text(text)
        if secs is None:
            raise InvalidArgument(
                f"every must be seconds or a duration like '10s', '5m', '1h', '500ms' or "
                f"'1h30m', got {value!r}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        secs = float(value)
    else:
        raise InvalidArgument(f"every must be a number of seconds or a duration text like "
                              f"'10s', got {value!r}")
    if math.isfinite(secs) and secs < MIN_EVERY_MS / 1000:
        raise InvalidArgument(f"every must be at least {MIN_EVERY_MS} ms, got {value!r}")
    if not secs <= _EVERY_MAX_S:  # also NaN and infinity
        raise InvalidArgument(f"every must be at most 366 days, got {value!r}")
    return secs


def _parse_text(text: str) -> float | None:
    try:
        return float(text) if text and not text[-1].isalpha() else _parse_units(text)
    except ValueError:
        return None


def _parse_units(text: str) -> float | None:
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def check_cron(expr: Any) -> str:
    """A cron text of five fields (minute hour day-of-month month day-of-week, UTC),
    parsed here as the broker will parse it."""
    if not isinstance(expr, str):
        raise InvalidArgument(f"cron must be a str like '*/5 * * * *', got {expr!r}")
    Cron.parse(expr)
    return " ".join(expr.split())


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name.encode()) > _MAX_NAME:
        raise InvalidArgument(f"schedule name must be a str of 1..{_MAX_NAME} UTF-8 bytes, "
                              f"got {name!r}")
    return name


def schedule_args(name: Any, queue: str, body: bytes, headers: dict[str, Any] | None,
                  every: Any, cron: Any, misfire: Any,
                  options: dict[str, Any] | None) -> dict[str, Any]:
    """The MANAGE ``schedule_add`` arguments; ``options`` is a wire options map."""
    args: dict[str, Any] = {"name": check_name(name), "queue": queue, "body": body}
    if (every is None) == (cron is None):
        raise InvalidArgument("give exactly one of every= (an interval) or cron= "
                              "(a cron expression)")
    if every is not None:
        args["every_ms"] = math.ceil(round(parse_every(every) * 1000, 6))
    else:
        args["cron"] = check_cron(cron)
    if misfire not in MISFIRE_RULES:
        raise InvalidArgument(f"misfire must be one of {', '.join(MISFIRE_RULES)}, "
                              f"got {misfire!r}")
    args["misfire"] = misfire
    if headers:
        args["headers"] = headers
    if options:
        args["options"] = options
    return args
