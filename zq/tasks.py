"""The task API: ``zq.App``, ``@app.task``, ``TaskHandle``, ``Retry`` and ``TaskFailed``.

A task is a function registered on an :class:`App` under a name (by default
``module.qualname``). ``task.delay(...)`` publishes a message to the task's queue
whose body is msgpack ``{"args": [...], "kwargs": {...}}`` and whose header
``zq-task`` names the task; a :class:`zq.Worker` runs it and reports the outcome
to the broker, which keeps it for the queue's ``result_ttl``. The pure helpers
here (body encoding, error capture, result checks) do no I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import traceback as tb
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload
from weakref import WeakKeyDictionary

import msgpack

from zq.client import Client
from zq.client.client import make_options
from zq.errors import OperationTimeout
from zq.protocol import codec

P = ParamSpec("P")
R = TypeVar("R")

TASK_HEADER = "zq-task"  # header: the registered name of the task a message runs
EXECUTORS = ("auto", "async", "thread", "process")
FINAL_STATES = ("succeeded", "dead")
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


# ------------------------------------------------------------------ pure helpers


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


@dataclass(frozen=True, slots=True)
class Retry:
    """How long a failed task waits before its next attempt (computed by the worker).

    ``backoff`` names a backoff policy (``exponential``: ``base * 2 ** (attempt -
    1)`` with +-10% jitter, or ``fixed``: ``base``, or a plugin's); never more
    than ``cap`` seconds (exponential jitter may exceed it by 10%).
    """

    backoff: str = "exponential"
    base: float = 0.2
    cap: float = 60.0

    def __post_init__(self) -> None:
        from zq import policies

        try:
            policies.check("backoff", self.backoff)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        for what, v in (("base", self.base), ("cap", self.cap)):
            if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                    or v < 0):
                raise ValueError(f"Retry {what} must be seconds >= 0, got {v!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 = the first) failed."""
        return float(_backoff(self.backoff).delay(attempt, self.base, self.cap))


_BACKOFFS: dict[str, Any] = {}


def _backoff(name: str) -> Any:
    policy = _BACKOFFS.get(name)
    if policy is None:
        from zq import policies

        policy = _BACKOFFS[name] = policies.load("backoff", name)
    return policy


# ------------------------------------------------------------------ tasks and handles


class TaskHandle:
    """A published task call. ``await`` it for the broker's confirm (it returns itself).

    ``status()`` and ``result()`` ask the broker; before the confirm ``status()``
    says ``pending``.
    """

    __slots__ = ("_app", "_sent", "queue", "task")

    def __init__(self, app: App, task: str, queue: str, sent: asyncio.Future[int]) -> None:
        self._app = app
        self._sent = sent
        self.task = task
        self.queue = queue

    def __repr__(self) -> str:
        mid = self._sent.result() if self.confirmed else "pending"
        return f"TaskHandle(task={self.task!r}, queue={self.queue!r}, id={mid})"

    def __await__(self) -> Generator[Any, None, TaskHandle]:
        yield from asyncio.shield(self._sent).__await__()
        return self

    @property
    def confirmed(self) -> bool:
        """Whether the broker has confirmed the message (its id is known)."""
        return self._sent.done() and not self._sent.cancelled() \
            and self._sent.exception() is None

    @property
    def id(self) -> int:
        """The message id; RuntimeError until the publish is confirmed (await the handle)."""
        if not self.confirmed:
            raise RuntimeError("the task's publish is not confirmed yet: await the handle")
        return self._sent.result()

    async def status(self) -> dict[str, Any]:
        """The task's state map: ``state`` is pending, ready, delayed, running (with
        ``worker`` and ``attempt``), succeeded (with ``result``), failed (will
        retry; with ``error``), dead (with ``error``) or unknown."""
        if not self._sent.done():
            return {"state": "pending", "queue": self.queue, "id": None, "attempt": 0,
                    "history": []}
        await self
        client = await self._app.client()
        return await client.task_status(self.queue, self.id)

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The task's return value once it succeeded.

        Raises :class:`TaskFailed` if it ended dead, ``zq.OperationTimeout``
        after ``timeout`` seconds, :class:`ResultUnavailable` if the broker keeps
        no outcome for it.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self
        except TimeoutError:
            raise OperationTimeout(f"task {self.task} not confirmed within {timeout}s",
                                   queue=self.queue) from None
        client = await self._app.client()
        left = None if deadline is None else max(0.0, deadline - loop.time())
        state = await client.wait_result(self.queue, self.id, left)
        match state.get("state"):
            case "succeeded":
                return state.get("result")
            case "dead":
                raise failure(state)
            case "unknown":
                raise ResultUnavailable(
                    f"the broker keeps no outcome of task {self.task} (id {self.id}) in "
                    f"queue {self.queue!r}: result_ttl 0 there, or it expired")
        raise OperationTimeout(f"task {self.task} (id {self.id}) not finished within "
                               f"{timeout}s; it is {state.get('state')}",
                               queue=self.queue, id=self.id, state=state)


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function here; ``delay``/``apply`` queue it."""

    def __init__(self, app: App, fn: Callable[P, R], *, name: str, queue: str,
                 max_attempts: int | None, retry: Retry | None, time_limit: float | None,
                 priority: int | None, executor: str) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.retry = retry
        self.time_limit = time_limit
        self.priority = priority
        self.executor = executor
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r} executor={self.executor}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle:
        """Queue a call with these arguments; ``await`` the handle for the confirm."""
        return self.apply(args=args, kwargs=kwargs)

    def apply(self, args: tuple[Any, ...] | list[Any] = (),
              kwargs: dict[str, Any] | None = None, *, delay: float | None = None,
              eta: datetime | float | None = None, priority: int | None = None,
              dedup_id: str | None = None) -> TaskHandle:
        """Queue a call with options: ``delay`` seconds or ``eta``, ``priority``
        (default the task's), ``dedup_id``. Bad arguments raise here, before
        anything is sent. Call it from a coroutine."""
        body = encode_body(args, kwargs)
        prio = self.priority if priority is None else priority
        make_options(prio, delay, eta, None, self.time_limit, self.max_attempts, None, dedup_id)
        opts = {k: v for k, v in (("priority", prio), ("delay", delay), ("eta", eta),
                                  ("time_limit", self.time_limit),
                                  ("max_attempts", self.max_attempts),
                                  ("dedup_id", dedup_id)) if v is not None}
        sent = self.app._publish(self.queue, body, {TASK_HEADER: self.name}, opts)
        return TaskHandle(self.app, self.name, self.queue, sent)


def _executor_for(fn: Callable[..., Any], executor: str) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    is_async = inspect.iscoroutinefunction(fn)
    if executor == "auto":
        return "async" if is_async else "thread"
    if (executor == "async") != is_async:
        raise ValueError(f"executor {executor!r} does not fit {fn.__qualname__}: "
                         f"{'a coroutine function' if is_async else 'a plain function'}")
    if executor == "process" and "<locals>" in fn.__qualname__:
        raise ValueError(f"executor 'process' needs an importable function; "
                         f"{fn.__qualname__} is defined inside a function")
    return executor


class App:
    """A set of tasks and the connection they are published on.

    ``app = zq.App("tcp://127.0.0.1:5555")``; tasks are registered with
    ``@app.task``. The client connects on first use; ``await app.close()`` (or
    ``async with app:``) waits for publishes in progress and closes it. Each task
    queue is declared once per session with ``result_ttl`` (seconds the broker
    keeps outcomes).
    """

    def __init__(self, endpoint: str | None = None, *, name: str | None = None,
                 default_queue: str = "tasks", result_ttl: float = 86400.0) -> None:
        if (not isinstance(result_ttl, int | float) or isinstance(result_ttl, bool)
                or not math.isfinite(result_ttl) or result_ttl < 0):
            raise ValueError(f"result_ttl must be seconds >= 0, got {result_ttl!r}")
        self.endpoint = endpoint
        self.name = name or "zq-app"
        self.default_queue = default_queue
        self.result_ttl = float(result_ttl)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self._declared: WeakKeyDictionary[Client, tuple[Any, set[str]]] = WeakKeyDictionary()
        self._declaring = asyncio.Lock()
        self._pending: set[asyncio.Task[int]] = set()

    def __repr__(self) -> str:
        return f"<App {self.name} endpoint={self.endpoint!r} tasks={len(self.tasks)}>"

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, name: str | None = None, queue: str | None = None,
             max_attempts: int | None = None, retry: Retry | None = None,
             time_limit: float | None = None, priority: int | None = None,
             executor: str = "auto") -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
             queue: str | None = None, max_attempts: int | None = None,
             retry: Retry | None = None, time_limit: float | None = None,
             priority: int | None = None, executor: str = "auto") -> Any:
        """Register a task: ``@app.task`` or ``@app.task(queue=..., retry=zq.Retry(...))``.

        ``executor``: ``async`` (coroutine functions), ``thread`` (the default for
        plain functions) or ``process`` (a module-level function, run in a
        process pool). ``max_attempts``, ``time_limit`` and ``priority`` travel
        with each message; ``retry`` sets the delay before each retry.
        """
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a zq.Retry, got {retry!r}")
        make_options(priority, None, None, None, time_limit, max_attempts)

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            kind = _executor_for(f, executor)
            tname = name or f"{f.__module__}.{f.__qualname__}"
            if tname in self.tasks and self.tasks[tname].fn is not f:
                raise ValueError(f"a task named {tname!r} is already registered")
            t: Task[Any, Any] = Task(self, f, name=tname, queue=queue or self.default_queue,
                     max_attempts=max_attempts, retry=retry, time_limit=time_limit,
                     priority=priority, executor=kind)
            self.tasks[tname] = t
            return t

        return register(fn) if fn is not None else register

    def handle(self, task: Task[Any, Any] | str, id: int) -> TaskHandle:
        """A handle on a task call published earlier (for instance by a producer that
        has restarted since): ``task`` is the Task or its queue's name, ``id`` the
        message id that ``handle.id`` gave."""
        queue = task.queue if isinstance(task, Task) else task
        name = task.name if isinstance(task, Task) else ""
        sent: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sent.set_result(id)
        return TaskHandle(self, name, queue, sent)

    def queues(self) -> list[str]:
        """Every queue the app's tasks use, in registration order."""
        return list(dict.fromkeys(t.queue for t in self.tasks.values()))

    # ------------------------------------------------------------ connection

    async def client(self) -> Client:
        """The app's client, connected on first use (one per event loop)."""
        self._bind_loop()
        assert self._connecting is not None
        async with self._connecting:
            if self._client is None:
                client = Client(self.endpoint, name=self.name)
                await client.connect()
                self._client = client
        return self._client

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop (tests): start afresh
            self._loop, self._client = loop, None
            self._connecting, self._declaring = asyncio.Lock(), asyncio.Lock()
            self._declared.clear()

    async def declare(self, client: Client, queue: str) -> None:
        """Declare ``queue`` with the app's ``result_ttl``, once per client session."""
        known = self._declared.get(client)
        if known is not None and known[0] is client.conn.welcome and queue in known[1]:
            return
        self._bind_loop()
        async with self._declaring:
            session = client.conn.welcome  # a new WELCOME: a new session
            known = self._declared.get(client)
            if known is None or known[0] is not session:
                known = self._declared[client] = (session, set())
            if queue not in known[1]:
                await client.declare_queue(queue, result_ttl=self.result_ttl)
                known[1].add(queue)

    def _publish(self, queue: str, body: bytes, headers: dict[str, Any],
                 opts: dict[str, Any]) -> asyncio.Future[int]:
        async def publish() -> int:
            client = await self.client()
            await self.declare(client, queue)
            return await client.publish(queue, body, headers=headers, **opts)

        t = asyncio.get_running_loop().create_task(publish())
        self._pending.add(t)  # owned by the app: close() awaits what is left
        t.add_done_callback(self._pending.discard)
        return t

    async def close(self) -> None:
        """Wait for publishes in progress, then close the client."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        client, self._client = self._client, None
        self._declared.clear()
        if client is not None:
            await client.close()

    async def __aenter__(self) -> App:
        await self.client()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb_: TracebackType | None) -> None:
        await self.close()

