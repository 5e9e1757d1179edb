"""The logs of zq's processes (broker, router, worker, node): their shape and their pace.

Human-readable lines on stderr by default, as ``logging.basicConfig`` writes them
(``2024-05-01 12:00:00,123 WARNING zq.broker: ...``); with ``--log-json``, one JSON
object a line (:class:`JsonFormatter`), for a log shipper. :func:`options` gives a
process command ``--log-level`` and ``--log-json`` in one line. :class:`Throttle` logs
the warnings an operator must see (a dropped peer, a refused key, a link down) once per
event with its reason, and sums up a flood of them instead of flooding the log.

Nothing here does I/O at import: the broker's core (no I/O) imports :class:`Throttle`.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO, TypeVar

import click
from click.core import ParameterSource

F = TypeVar("F", bound=Callable[..., Any])

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "warning"
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # basicConfig's, as before

# The attributes every LogRecord has: the rest came as ``extra={...}`` and go into the
# JSON object as they are. (taskName arrived in 3.12; message and asctime are set by
# Formatter.format.)
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_MAX_DEPTH = 6  # nested containers in an extra: deeper ones are logged as their repr

_current = {"level": DEFAULT_LEVEL, "json": False}


# ------------------------------------------------------------------ JSON lines


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as something ``json.dumps`` takes: bytes decoded (bad UTF-8 replaced),
    containers converted item by item, infinities and NaN and any other object as
    their ``repr``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {_json_key(k): json_safe(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [json_safe(v, depth + 1) for v in value]
    return repr(value)


def _json_key(key: Any) -> str:
    if isinstance(key, bytes | bytearray):
        return bytes(key).decode("utf-8", "replace")
    return key if isinstance(key, str) else str(key)


def safe_extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as a logging ``extra``: a name every LogRecord has (``process``,
    ``name``) would make logging raise, so it gets the prefix ``extra_``."""
    return {"extra_" + k if k in _RECORD_FIELDS else k: v for k, v in fields.items()}


def _message(record: logging.LogRecord) -> str:
    """The formatted message; a record whose arguments do not fit its format still
    gets a line (logging would print a multi-line "Logging error" instead)."""
    try:
        return record.getMessage()
    except Exception as exc:
        return f"{record.msg!r} % {record.args!r} (unformattable: {exc!r})"


class HumanFormatter(logging.Formatter):
    """The default format, one line per record: control characters in the message (a
    client's name or reason with a newline, an escape sequence) are shown escaped, so
    that nobody can forge a log line or drive the terminal; a traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if text.isprintable():
            return text
        return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                       for ch in text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``ts`` (ISO-8601 UTC, milliseconds),
    ``level``, ``logger``, ``msg``, ``pid``; ``exc`` (the traceback) with exc_info,
    ``stack`` with stack_info; and each ``extra={...}`` key (one named like those
    above becomes ``extra_<key>``).

    Non-ASCII is escaped too (``ensure_ascii``): newlines are escaped by any JSON
    encoder, but a raw U+2028 or U+0085 would split the line for ``str.splitlines``.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
                          .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS:
                out["extra_" + key if key in out else key] = json_safe(value)
        return jsonlib.dumps(out, ensure_ascii=True, allow_nan=False)


# ------------------------------------------------------------------ setup


class _Stderr(logging.StreamHandler[TextIO]):
    """zq's handler: writes to whatever ``sys.stderr`` is when a record comes (a test
    runner swaps it), so a handler set up once never writes to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # (under the handler's lock: Handler.handle took it)
        super().emit(record)


def setup(level: str, json: bool) -> None:
    """Send the logs to stderr at ``level`` (debug, info, warning, error), human-readable
    or (``json``) one JSON object a line. Called again, it changes zq's handler rather
    than adding one. In JSON mode Python's warnings and uncaught exceptions are logged
    too, so that nothing else writes lines of its own to stderr."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if json else HumanFormatter(HUMAN_FORMAT))
    root.setLevel(level.upper())
    logging.captureWarnings(json)
    _hook_uncaught(json)
    _current.update(level=level.lower(), json=json)


def current() -> tuple[str, bool]:
    """The level and the JSON mode :func:`setup` set last."""
    return str(_current["level"]), bool(_current["json"])


def environ() -> dict[str, str]:
    """Environment variables that give a child ``zq`` process these logging settings
    (a node's workers log as the node does)."""
    level, as_json = current()
    return {"ZQ_LOG_LEVEL": level, "ZQ_LOG_JSON": "1" if as_json else "0"}


def notice(text: str, logger: str = "zq", **extra: Any) -> None:
    """A line for the operator at any level (a process's summary as it exits): on
    stderr as it is, or in JSON mode as a JSON line (level INFO), like the logs."""
    if not _current["json"]:
        click.echo(text, err=True)
        return
    record = logging.getLogger(logger).makeRecord(logger, logging.INFO, "", 0, text, (),
                                                  None, extra=extra)
    sys.stderr.write(JsonFormatter().format(record) + "\n")
    sys.stderr.flush()


def _uncaught(kind: type[BaseException], exc: BaseException,
              tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("zq").critical("uncaught exception: %r", exc, exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("zq").critical(
        "uncaught exception in thread %s: %r", args.thread.name if args.thread else "?",
        args.exc_value, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _hook_uncaught(on: bool) -> None:
    if on:
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread
    else:  # put back Python's own, if ours are in place
        if sys.excepthook is _uncaught:
            sys.excepthook = sys.__excepthook__
        if threading.excepthook is _uncaught_in_thread:
            threading.excepthook = threading.__excepthook__


# ------------------------------------------------------------------ click options

_META = "zq.logs"
# Where a value came from, weakest first: a flag given on a subcommand beats the
# group's (``zq --log-json broker --log-level info``), and a flag beats the environment.
_RANK = {ParameterSource.DEFAULT: 0, ParameterSource.DEFAULT_MAP: 1,
         ParameterSource.ENVIRONMENT: 2, ParameterSource.COMMANDLINE: 3,
         ParameterSource.PROMPT: 3}


def _depth(ctx: click.Context) -> int:
    n = 0
    while ctx.parent is not None:
        ctx, n = ctx.parent, n + 1
    return n


def _configure(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Callback of both options: keep the strongest value of each, then set up (also
    when neither is given: the defaults)."""
    chosen: dict[str, tuple[tuple[int, int], Any]] = ctx.meta.setdefault(_META, {})
    if value is not None and param.name is not None:
        source = ctx.get_parameter_source(param.name)
        rank = (_RANK.get(source, 0) if source is not None else 0, _depth(ctx))
        if param.name not in chosen or rank >= chosen[param.name][0]:
            chosen[param.name] = (rank, value)
    level = chosen.get("log_level", ((0, 0), DEFAULT_LEVEL))[1]
    as_json = chosen.get("log_json", ((0, 0), False))[1]
    setup(level, bool(as_json))


def options(fn: F) -> F:
    """``--log-level`` and ``--log-json`` (and $ZQ_LOG_LEVEL, $ZQ_LOG_JSON) for a
    command; they set up logging as they are parsed and pass nothing to ``fn``."""
    fn = click.option("--log-json", is_flag=True, default=None, expose_value=False,
                      envvar="ZQ_LOG_JSON", show_envvar=True, callback=_configure,
                      help="Log one JSON object per line (ts, level, logger, msg, pid, "
                           "and the event's fields) instead of text lines.")(fn)
    return click.option("--log-level", default=None, expose_value=False,
                        type=click.Choice(LEVELS, case_sensitive=False),
                        envvar="ZQ_LOG_LEVEL", show_envvar=True, callback=_configure,
                        help=f"Log level (logs go to stderr). [default: {DEFAULT_LEVEL}]"
                        )(fn)


# ------------------------------------------------------------------ pace


class Throttle:
    """Warnings of one kind (``event``): each logged with its reason, up to
    ``per_second`` a second; past that they are counted by kind and summed up in one
    line (``summary % (count, kinds)``) when the second is over: at the next one, or
    at :meth:`flush`, which the owner calls at least once a second (``pending`` tells
    it that lines are held back). A thousand peers lost at once, or an attacker's
    connections, must not flood the log, nor go unsaid.

    ``now`` comes from the caller's clock (a core that takes ``now``), else
    ``time.monotonic()``.
    """

    def __init__(self, logger: logging.Logger, event: str, summary: str, *,
                 per_second: int = 20, pending: Callable[[], None] | None = None) -> None:
        self.logger = logger
        self.event = event
        self.summary = summary
        self.per_second = per_second
        self.pending = pending
        self._second: float | None = None
        self._logged = 0
        self._held: Counter[str] = Counter()

    def say(self, msg: str, *args: Any, reason: str, kind: str | None = None,
            now: float | None = None, level: int = logging.WARNING, exc_info: Any = False,
            **extra: Any) -> bool:
        """Log ``msg % args`` with ``event``, ``reason`` and ``extra`` as fields (an
        ``event`` in ``extra`` names this one otherwise), or count it under ``kind``
        (default: ``reason``); True if it was logged."""
        now = time.monotonic() if now is None else now
        if self._second is None or not 0.0 <= now - self._second < 1.0:
            self.flush()
            self._second, self._logged = now, 0
        if self._logged < self.per_second:
            self._logged += 1
            self.logger.log(level, msg, *args, exc_info=exc_info,
                            extra=safe_extra({"event": self.event, "reason": reason, **extra}))
            return True
        if not self._held and self.pending is not None:
            self.pending()
        self._held[kind or reason] += 1
        return False

    def flush(self) -> None:
        """Sum up what was not logged one by one."""
        if not self._held:
            return
        count = sum(self._held.values())
        top = self._held.most_common(8)
        what = ", ".join(f"{n} {k}" for k, n in sorted(top))
        rest = count - sum(n for _, n in top)
        if rest:
            what += f", {rest} of {len(self._held) - len(top)} other kind(s)"
        self.logger.warning(self.summary, count, what, extra={
            "event": self.event, "count": count, "reasons": dict(top)})
        self._held.clear()
