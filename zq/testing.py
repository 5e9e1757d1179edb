"""Test helpers for apps built on zq: a real broker inside the test's event loop.

:class:`Broker` runs the real :class:`zq.broker.Broker` (the same core that
``zq broker`` runs: acks, retries with their delays, leases, time limits, dead
letters, results, schedules) in the caller's event loop, with the in-memory
store, on an ``inproc://`` endpoint: no process is started and no port opened.
Heartbeats are fast (0.1 s; a peer silent for 0.5 s is presumed dead and its
messages go to others), so lost-lease paths take a fraction of a second.

:func:`run_until_idle` runs a :class:`zq.Worker` for an app until the app's
queues have nothing ready, delayed or in flight, then stops it. Retry delays are
real time: give tasks short ``zq.Retry`` delays in tests.

With plain pytest (no plugin, no setting), decorate an ``async def`` test with
:func:`with_broker`: it runs the test in a fresh event loop with a
:class:`Broker` for the app around it, and pytest still injects the test's
fixtures::

    import zq.testing

    from myapp.tasks import app, send_welcome   # app = zq.App(...), any endpoint

    @zq.testing.with_broker(app)                # points app at the test broker
    async def test_welcome_mail_is_sent_despite_a_flaky_relay(tmp_path):
        handle = await send_welcome.delay("ann@example.com")
        counts = await zq.testing.run_until_idle(app)
        assert await handle.result(timeout=1) == "sent"
        assert counts["failed"] == 2            # it took three attempts

The decorated function is a plain function, so the same works in a
``unittest.TestCase`` method or a script. It is made for tests that pytest
calls as plain functions: do not mark it with ``pytest.mark.asyncio`` or
``pytest.mark.anyio``, and keep async fixtures out of it (they would run in
another event loop): set up async resources inside the test.

Where a plugin already runs async tests (pytest-asyncio, anyio), use the
broker directly in the test's own loop::

    async def test_welcome_mail():             # e.g. @pytest.mark.asyncio
        async with zq.testing.Broker(app):
            handle = await send_welcome.delay("ann@example.com")
            await zq.testing.run_until_idle(app)
            assert await handle.result(timeout=1) == "sent"

Apps given to :class:`Broker` publish to it inside the block and get their
endpoint back afterwards. The store forgets everything when the broker stops,
and ``inproc://`` endpoints are reachable from this process only
(``Broker(endpoint="tcp://127.0.0.1:*")`` serves other processes too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from zq import broker as _broker
from zq.client import Client
from zq.client.connection import shared_context
from zq.config import BrokerConfig
from zq.tasks import App
from zq.worker import Worker

__all__ = ["Broker", "run_until_idle", "with_broker"]

P = ParamSpec("P")
R = TypeVar("R")

_seq = itertools.count(1)
_POLL = 0.01  # seconds between looks at the queues in run_until_idle


class Broker:
    """An in-process zq broker, for tests: ``async with zq.testing.Broker(app) as b:``.

    ``apps``: :class:`zq.App` objects to point at this broker while it runs
    (their clients are closed on the way in and out, their endpoints restored
    afterwards). ``endpoint``: where to bind; by default a fresh ``inproc://``
    name, served through the ZeroMQ context every ``zq.Client`` of this
    process uses.
    Other keywords are :class:`zq.config.BrokerConfig` settings, for instance
    ``queues={"mail": {"max_attempts": 3}}`` or ``heartbeat=0.5``; the storage
    is always ``memory``.

    Inside the block, ``endpoint`` is the bound endpoint (with the real port
    for ``tcp://127.0.0.1:*``) and ``broker`` the running
    :class:`zq.broker.Broker`. Leaving the block stops it as SIGTERM would and
    raises whatever error stopped it early.
    """

    def __init__(self, *apps: App, endpoint: str | None = None, heartbeat: float = 0.1,
                 liveness: int = 5, **settings: Any) -> None:
        if not all(isinstance(a, App) for a in apps):
            raise TypeError("zq.testing.Broker(*apps): each must be a zq.App")
        self.apps = apps
        self._app_endpoints: list[str | None] = []
        if settings.get("storage", "memory") != "memory":
            raise ValueError("zq.testing.Broker keeps messages in memory only")
        settings.pop("storage", None)
        self.bind = endpoint or f"inproc://zq-testing-{os.getpid()}-{next(_seq)}"
        self.config = BrokerConfig(bind=self.bind, storage="memory", heartbeat=heartbeat,
                                   liveness=liveness, **settings)
        self.endpoint = ""
        self._broker: _broker.Broker | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def broker(self) -> _broker.Broker:
        """The running broker (its ``core`` holds queues, peers and counters)."""
        if self._broker is None:
            raise RuntimeError("the broker runs only inside 'async with zq.testing.Broker()'")
        return self._broker

    def client(self, name: str = "", **options: Any) -> Client:
        """A :class:`zq.Client` for this broker (use it with ``async with``)."""
        return Client(self.endpoint, name=name, **options)

    async def __aenter__(self) -> Broker:
        if self._task is not None:
            raise RuntimeError("this zq.testing.Broker is already running")
        # One ZeroMQ context for the broker and the clients: inproc:// endpoints
        # exist only within one context.
        b = _broker.Broker(self.config, context=shared_context())
        ready = asyncio.Event()

        def on_ready(endpoint: str) -> None:
            self.endpoint = endpoint
            ready.set()

        # The task is owned here and awaited in __aexit__ (or below if it fails).
        self._task = asyncio.get_running_loop().create_task(b.run(on_ready),
                                                            name=f"zq.testing {self.bind}")
        waiter = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: do not leave it running
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if not ready.is_set():  # run() ended before it was ready: bind or store failed
            task, self._task = self._task, None
            await task
            raise RuntimeError(f"the test broker on {self.bind} stopped before it was ready")
        self._broker = b
        try:
            for app in self.apps:
                await app.close()  # a client it opened before talks to another broker
                self._app_endpoints.append(app.endpoint)
                app.endpoint = self.endpoint
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        b, self._broker = self._broker, None
        if task is None or b is None:
            return
        try:
            for app in self.apps:
                await app.close()  # says BYE while the broker still listens
        finally:
            for app, endpoint in zip(self.apps, self._app_endpoints, strict=False):
                app.endpoint = endpoint
            self._app_endpoints.clear()
            b.request_stop()
            await task


def with_broker(*apps: App, **settings: Any
                ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, R]]:
    """Run an ``async def`` test in a fresh event loop, with a :class:`Broker` around it.

    ``@zq.testing.with_broker(app)`` on ``async def test_x(tmp_path): ...`` makes
    a plain function of the same name and signature, so pytest (with no plugin)
    collects it and injects the same fixtures. Each call starts a new event
    loop, runs the function inside ``async with Broker(*apps, **settings)``,
    stops the broker, closes the loop and returns the function's result.

    The arguments are those of :class:`Broker`; they are checked here, when the
    test module is imported, and each call gets a broker of its own.
    """
    if len(apps) == 1 and not isinstance(apps[0], App) and callable(apps[0]):
        raise TypeError("use @zq.testing.with_broker(app), naming the apps to point at "
                        "the test broker")
    Broker(*apps, **settings)  # bad apps or settings fail at import, not in every test

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@zq.testing.with_broker needs an 'async def' function, got {fn!r}")

        @functools.wraps(fn)  # __wrapped__ gives pytest the signature: fixtures still come
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            __tracebackhide__ = True  # pytest: show the test's frames, not these
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                raise RuntimeError(
                    f"{fn.__qualname__} runs its own event loop (zq.testing.with_broker): "
                    "call it from sync code; in an async test use "
                    "'async with zq.testing.Broker(...)' instead")

            async def main() -> R:
                __tracebackhide__ = True
                async with Broker(*apps, **settings):
                    return await fn(*args, **kwargs)

            with asyncio.Runner() as runner:
                return runner.run(main())

        return run

    return decorate


async def run_until_idle(app: App, *, timeout: float = 10.0,  # noqa: ASYNC109
                         queues: list[str] | None = None, concurrency: int = 8,
                         prefetch: int | None = None) -> dict[str, int]:
    """Run a :class:`zq.Worker` for ``app`` until its queues are idle; return its counters.

    Idle: every queue the worker consumes (``queues``, by default those of the
    app's tasks) has nothing ready, delayed (retries waiting out their backoff
    included) or in flight, all at one moment as the broker sees it. Messages a
    task publishes and awaits before it returns are counted before its own
    completion is, so chains of tasks run to their end. Messages that died are
    in the dead-letter queue, not counted.

    Returns the worker's counters (``started``, ``succeeded``, ``failed``, ...).
    Raises ``TimeoutError`` if the queues are not idle within ``timeout``
    seconds (the worker is stopped at once then), or what stopped the worker.
    """
    worker = Worker(app, queues, concurrency=concurrency, prefetch=prefetch,
                    drain_timeout=timeout, name="zq-testing-worker", handle_signals=False)
    client = await app.client()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    run = loop.create_task(worker.run(), name="zq.testing worker")  # awaited below
    try:
        while True:
            left = await _busy(client, worker.queues)
            if not left:
                break
            if run.done():
                await run  # raises what stopped it
                raise RuntimeError(f"the worker stopped before its queues were idle: {left}")
            if loop.time() >= deadline:
                raise TimeoutError(f"queues not idle after {timeout:g}s: {left}")
            await asyncio.sleep(_POLL)
    except BaseException:
        worker.stop()
        worker.stop()  # the second stop cuts the drain short
        with contextlib.suppress(Exception):
            await run
        raise
    worker.stop()
    await run
    return dict(worker.counters)


async def _busy(client: Client, queues: list[str]) -> dict[str, dict[str, int]]:
    """What is left in ``queues``, from one snapshot of the broker's queues."""
    stats = await client.queues()
    left: dict[str, dict[str, int]] = {}
    for name in queues:
        st = stats.get(name, {})
        counts = {k: int(st.get(k, 0)) for k in ("ready", "delayed", "in_flight")}
        if any(counts.values()):
            left[name] = counts
    return left
