"""A task call on the wire, with no I/O: its body, its result, its error report.

``task.delay(...)`` publishes a message whose body is msgpack ``{"args": [...],
"kwargs": {...}}`` and whose header ``zq-task`` names the task. A worker reports
the outcome to the broker: a result (checked here to be a value the broker
decodes) or an error report ``{type, message, traceback}`` of bounded size. A
task that ended dead comes back to its caller as :class:`TaskFailed`.
"""

from __future__ import annotations

import traceback as tb
from typing import Any

import msgpack

from zq.protocol import codec, limits

TASK_HEADER = limits.TASK  # header: the registered name of the task a message runs
MAX_MESSAGE = 4_000  # characters of an exception's message kept in a report
MAX_TRACEBACK = 32_000  # characters of traceback text kept (the end, where it failed)


class TaskFailed(Exception):
    """A task ended dead: its last attempt raised (or it expired, or ran out of attempts).

    ``type``, ``message`` and ``traceback`` describe the remote exception (the
    traceback is the worker's text); ``id`` and ``queue`` name the message and
    ``history`` lists its failed attempts as the broker recorded them.
    """

    def __init__(self, type: str, message: str, traceback: str = "", *,
                 id: int | None = None, queue: str | None = None,
                 history: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.traceback = traceback
        self.id = id
        self.queue = queue
        self.history = history or []

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


class ResultUnavailable(LookupError):
    """The broker keeps no outcome for this task: its queue keeps no results
    (``result_ttl`` 0), the result expired, or the id is not one of that queue's."""


def encode_body(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None) -> bytes:
    """The message body for a call: msgpack ``{"args": [...], "kwargs": {...}}``.

    Raises TypeError for an argument msgpack cannot carry (the call is refused
    before anything is sent).
    """
    kw = dict(kwargs or {})
    if not all(isinstance(k, str) for k in kw):
        raise TypeError("task keyword arguments must have str names")
    try:
        body: bytes = codec.packb({"args": list(args), "kwargs": kw})
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"task arguments must be msgpack values (None, bool, int, float, "
                        f"str, bytes, list, dict): {exc}") from None
    return body


def decode_body(body: bytes) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` from a task message body; ValueError if it is not one."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types; all mean one thing here
        raise ValueError(f"task body is not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"task body must be a map, got {type(obj).__name__}")
    args, kwargs = obj.get("args", []), obj.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not all(isinstance(k, str) for k in kwargs):
        raise ValueError("task body needs 'args' (array) and 'kwargs' (map of str keys)")
    return args, kwargs


def check_result(value: Any, limit: int) -> str | None:
    """Why ``value`` cannot travel to the broker as a result (None if it can).

    Results travel in a MANAGE header, which the broker decodes strictly:
    msgpack values only, map keys str or bytes, at most ``limit`` bytes.
    """
    try:
        data = codec.packb(value)
        msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types; all mean one thing here
        return (f"result of type {type(value).__name__} is not a msgpack value with str "
                f"map keys: {exc}")
    if len(data) > limit:
        return f"result of {len(data)} bytes exceeds the limit of {limit} bytes"
    return None


def type_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``module.QualName`` for the others."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _cut(text: str, limit: int, keep_end: bool) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_end:
        return f"... ({cut} characters cut)\n" + text[-limit:]
    return text[:limit] + f" ... ({cut} characters cut)"


def error_report(exc: BaseException) -> dict[str, str]:
    """``{type, message, traceback}`` for an exception a task raised (text bounded)."""
    return {"type": type_name(exc),
            "message": _cut(str(exc), MAX_MESSAGE, keep_end=False),
            "traceback": _cut("".join(tb.format_exception(exc)), MAX_TRACEBACK, keep_end=True)}


def report(type: str, message: str) -> dict[str, str]:
    """An error report for a failure outside the task's code (no traceback)."""
    return {"type": type, "message": message, "traceback": ""}


def failure(state: dict[str, Any]) -> TaskFailed:
    """The TaskFailed for a final ``dead`` state map from the broker."""
    err = state.get("error")
    history = list(state.get("history") or [])
    if isinstance(err, dict):
        return TaskFailed(str(err.get("type", "Error")), str(err.get("message", "")),
                          str(err.get("traceback", "")), id=state.get("id"),
                          queue=state.get("queue"), history=history)
    # Dead without a reported error: it expired, or its attempts ended by time limit
    # or lost consumers. The last history entry says which.
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    outcome = str(last.get("outcome", "dead"))
    reason = str(last.get("reason", "") or f"the message died ({outcome})")
    return TaskFailed("".join(w.capitalize() for w in outcome.split()) or "Dead", reason,
                      id=state.get("id"), queue=state.get("queue"), history=history)
