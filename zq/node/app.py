"""The task API: ``zq.App`` and ``@app.task``.

A task is a function registered on an :class:`App` under a name (by default
``module.qualname``). ``task.delay(...)`` publishes a message to the task's queue
(its body and header are in :mod:`zq.node.calls`); a :class:`zq.Worker` runs it
and reports the outcome to the broker, which keeps it for the queue's
``result_ttl``; the :class:`~zq.node.handle.TaskHandle` the call returned asks
for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload
from weakref import WeakKeyDictionary

from zq.client import Client
from zq.client.client import make_options
from zq.errors import Forbidden
from zq.node.calls import TASK_HEADER, encode_body
from zq.node.canvas import Signature
from zq.node.handle import TaskHandle
from zq.node.retry import Retry

P = ParamSpec("P")
R = TypeVar("R")

EXECUTORS = ("auto", "async", "thread", "process")


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function here; ``delay``/``apply`` queue it."""

    def __init__(self, app: App, fn: Callable[P, R], *, name: str, queue: str,
                 max_attempts: int | None, retry: Retry | None, time_limit: float | None,
                 priority: int | None, executor: str, broadcast: bool = False) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue  # a broadcast task's: the topic every worker's queue binds to
        self.broadcast = broadcast
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

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This task with these arguments, for a workflow (``zq.chain``, ``zq.group``,
        ``zq.chord``); in a chain, the result of the step before comes first."""
        return Signature(self, args, kwargs)

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
        if self.broadcast and dedup_id is not None:
            raise ValueError("a broadcast task takes no dedup_id: each worker runs each call")
        body = encode_body(args, kwargs)
        prio = self.priority if priority is None else priority
        make_options(prio, delay, eta, None, self.time_limit, self.max_attempts, None, dedup_id)
        opts = {k: v for k, v in (("priority", prio), ("delay", delay), ("eta", eta),
                                  ("time_limit", self.time_limit),
                                  ("max_attempts", self.max_attempts),
                                  ("dedup_id", dedup_id)) if v is not None}
        sent = self.app._publish(self.queue, body, {TASK_HEADER: self.name}, opts,
                                 self.broadcast)
        return TaskHandle(self.app, self.name, self.queue, sent, broadcast=self.broadcast)


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
             executor: str = "auto", broadcast: bool = False
             ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
             queue: str | None = None, max_attempts: int | None = None,
             retry: Retry | None = None, time_limit: float | None = None,
             priority: int | None = None, executor: str = "auto",
             broadcast: bool = False) -> Any:
        """Register a task: ``@app.task`` or ``@app.task(queue=..., retry=zq.Retry(...))``.

        ``executor``: ``async`` (coroutine functions), ``thread`` (the default for
        plain functions) or ``process`` (a module-level function, run in a
        process pool). ``max_attempts``, ``time_limit`` and ``priority`` travel
        with each message; ``retry`` sets the delay before each retry.

        ``broadcast=True``: every running worker of the app runs each call once. Calls
        go to a topic (``queue``, default ``<default_queue>.broadcast``) that each
        worker binds a queue of its own to while it runs (removed when it stops, or
        after an idle TTL if it died); a call made while no worker runs is dropped.
        Its handle gives the call's id (0 if dropped), not a result.
        """
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a zq.Retry, got {retry!r}")
        make_options(priority, None, None, None, time_limit, max_attempts)

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            kind = _executor_for(f, executor)
            tname = name or f"{f.__module__}.{f.__qualname__}"
            if tname in self.tasks and self.tasks[tname].fn is not f:
                raise ValueError(f"a task named {tname!r} is already registered")
            default = f"{self.default_queue}.broadcast" if broadcast else self.default_queue
            t: Task[Any, Any] = Task(self, f, name=tname, queue=queue or default,
                                     max_attempts=max_attempts, retry=retry,
                                     time_limit=time_limit, priority=priority,
                                     executor=kind, broadcast=broadcast)
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
        """Every queue the app's tasks use, in registration order (not broadcast ones)."""
        return list(dict.fromkeys(t.queue for t in self.tasks.values() if not t.broadcast))

    def broadcast_topics(self) -> list[str]:
        """The topics of the app's broadcast tasks: a worker binds a queue to each."""
        return list(dict.fromkeys(t.queue for t in self.tasks.values() if t.broadcast))

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

    async def declare(self, client: Client, queue: str, topic: bool = False) -> None:
        """Declare ``queue`` with the app's ``result_ttl``, once per client session (a
        broadcast task's topic: set to drop the calls made while no worker runs)."""
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
                if topic:
                    await drop_unroutable(client, queue)
                else:
                    await client.declare_queue(queue, result_ttl=self.result_ttl)
                known[1].add(queue)

    def _publish(self, queue: str, body: bytes, headers: dict[str, Any],
                 opts: dict[str, Any], broadcast: bool = False) -> asyncio.Future[int]:
        async def publish() -> int:
            client = await self.client()
            await self.declare(client, queue, broadcast)
            if broadcast:
                return await client.publish(None, body, headers=headers, topic=queue, key="",
                                            **opts)
            return await client.publish(queue, body, headers=headers, **opts)

        t = asyncio.get_running_loop().create_task(publish())
        self._pending.add(t)  # owned by the app: close() awaits what is left
        t.add_done_callback(self._pending.discard)
        return t

    async def publish_call(self, queue: str, body: bytes, headers: dict[str, Any],
                           **opts: Any) -> int:
        """Publish one call (a workflow's first steps) on the app's client; its id."""
        client = await self.client()
        await self.declare(client, queue)
        return await client.publish(queue, body, headers=headers, **opts)

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


async def drop_unroutable(client: Client, topic: str) -> None:
    """A new broadcast topic drops the calls made while no worker runs (an existing
    one keeps the rule it has; a key without the admin right leaves it as it is)."""
    with contextlib.suppress(Forbidden):
        if topic not in {t["topic"] for t in await client.topics()}:
            await client.set_topic(topic, unroutable="drop")

