"""``zq.Worker``: runs an App's tasks from its queues under credit-based flow control.

One client, one consumer per queue, one pump per consumer that hands messages
to handler tasks under a shared concurrency limit. Coroutine tasks run on the
loop; plain functions run in a thread pool (or a process pool), so the loop
stays free and the connection's heartbeats keep the leases alive.

Credit starts at ``concurrency`` per queue and grows only while handling is
short compared with the broker's round trip, so a worker does not hoard
messages that another idle worker could run. Stopping: stop taking work,
release what was prefetched and not started (the broker makes it ready at once,
attempt not counted), let running tasks finish for up to ``drain_timeout``, nack
the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import contextlib
import contextvars
import functools
import importlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zq.client import Client, Consumer, Message
from zq.errors import ClientClosed, ConnectionLost, ZqError
from zq.tasks import (
    TASK_HEADER,
    App,
    Task,
    check_result,
    decode_body,
    error_report,
    report,
)

log = logging.getLogger("zq.worker")

UNKNOWN_TASK = "UnknownTask"
BAD_BODY = "BadTaskBody"
BAD_RESULT = "ResultNotSerializable"
MAX_PREFETCH = 1000  # automatic credit never grows past this (or concurrency, if larger)
_EWMA = 0.2


class _Job:
    """A message being handled: the handler's task and whether it was settled."""

    __slots__ = ("msg", "settled", "task")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.settled = False
        self.task: asyncio.Task[None] | None = None


class Worker:
    """Run ``app``'s tasks from ``queues`` (default: every queue of the app's tasks).

    ``concurrency``: most tasks running at once. ``prefetch``: credit per queue
    (None: start at ``concurrency`` and grow while tasks are short compared
    with the broker's round trip). ``await worker.run()`` returns after
    :meth:`stop` (or SIGTERM / SIGINT when ``handle_signals``) has drained it.
    """

    def __init__(self, app: App, queues: list[str] | None = None, concurrency: int = 8,
                 prefetch: int | None = None, drain_timeout: float = 30.0, *,
                 name: str | None = None, handle_signals: bool = True,
                 connect_timeout: float = 5.0) -> None:
        if type(concurrency) is not int or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if prefetch is not None and (type(prefetch) is not int or prefetch < 1):
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        if not math.isfinite(drain_timeout) or drain_timeout < 0:
            raise ValueError(f"drain_timeout must be seconds >= 0, got {drain_timeout!r}")
        self.app = app
        self.queues = list(dict.fromkeys(queues or app.queues()))
        if not self.queues:
            raise ValueError("no queues to consume: the app has no tasks and none were given")
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.drain_timeout = drain_timeout
        self.name = name or f"worker-{socket.gethostname()}-{os.getpid()}"
        self.handle_signals = handle_signals
        self.connect_timeout = connect_timeout
        self.ready = asyncio.Event()  # set once every queue has its credit
        self.stopped = asyncio.Event()  # set when run() is about to return
        self.counters = {"started": 0, "succeeded": 0, "failed": 0, "released": 0,
                         "abandoned": 0, "refused": 0}
        self.handle_time = 0.0  # seconds, moving average
        self.round_trip = 0.0  # seconds for a completion's reply, moving average
        self._stop = asyncio.Event()
        self._error: ZqError | None = None
        self._force = asyncio.Event()
        self._jobs: set[_Job] = set()
        self._consumers: list[Consumer] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None

    def stop(self) -> None:
        """Stop taking work and drain; a second call cuts the drain short."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    # ------------------------------------------------------------ running

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Consume until stopped, then drain. ``on_ready`` is called once every
        queue has its credit."""
        loop = asyncio.get_running_loop()
        signals = self.handle_signals and threading.current_thread() is threading.main_thread()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        client = Client(self.app.endpoint, name=self.name, connect_timeout=self.connect_timeout)
        try:
            await client.connect()
            for q in self.queues:
                await self.app.declare(client, q)
            await self._serve(client, on_ready)
            if self._error is not None:
                raise self._error
        finally:
            # The signal handlers stay (a later signal only calls stop() again) until the
            # loop closes: removing them here would let a second Ctrl-C during the close
            # kill the process instead of letting it exit 0.
            await client.close()
            for pool in (self._threads, self._processes):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
            self.stopped.set()

    async def _serve(self, client: Client, on_ready: Callable[[], None] | None) -> None:
        first = self.prefetch or self.concurrency
        async with asyncio.TaskGroup() as jobs:
            async with asyncio.TaskGroup() as pumps:
                tasks = []
                for q in self.queues:
                    # Messages count as started when a slot takes them, not when the
                    # pump takes them out of the consumer to wait for a slot.
                    consumer = client.consume(q, prefetch=first, auto_start=False)
                    await consumer.__aenter__()
                    self._consumers.append(consumer)
                    tasks.append(pumps.create_task(self._pump(client, consumer, jobs)))
                self.ready.set()
                if on_ready is not None:
                    on_ready()
                log.info("worker %s ready: queues %s", self.name, ", ".join(self.queues))
                await self._stop.wait()
                for t in tasks:
                    t.cancel()
            # No more credit; what the broker sent and no handler took goes back.
            for consumer in self._consumers:
                self.counters["released"] += consumer.buffered
                await consumer.close()
            await self._drain()
        with contextlib.suppress(ZqError, TimeoutError):
            async with asyncio.timeout(5.0):
                await client.sync()  # every settlement is stored before we say BYE

    async def _pump(self, client: Client, consumer: Consumer, jobs: asyncio.TaskGroup) -> None:
        while True:
            try:
                msg = await consumer.get()
            except ConnectionLost:
                await client.wait_connected()  # the consumer gets its credit back then
                continue
            except (StopAsyncIteration, ClientClosed):
                return
            except ZqError as exc:  # the broker refused this consumer (its credit, say)
                log.error("worker %s: consuming %s: %s", self.name, consumer.queue, exc)
                self._error = self._error or exc
                self.stop()
                return
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:
                await msg.release()  # prefetched, never started
                self.counters["released"] += 1
                raise
            # The START leaves at the end of this loop turn, before the task's first step:
            # if the task kills this process, the broker knows which message it was.
            msg.mark_started()
            job = _Job(msg)
            self._jobs.add(job)
            job.task = jobs.create_task(self._run(job, consumer))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[Any]] = {j.task for j in self._jobs if j.task is not None}
        if pending:
            log.info("worker %s: waiting up to %gs for %d running task(s)", self.name,
                     self.drain_timeout, len(pending))
            deadline = loop.time() + self.drain_timeout
            force = loop.create_task(self._force.wait())  # a second stop() cuts it short
            try:
                while pending and not force.done() and loop.time() < deadline:
                    done, _ = await asyncio.wait(pending | {force},
                                                 timeout=deadline - loop.time(),
                                                 return_when=asyncio.FIRST_COMPLETED)
                    pending -= done
            finally:
                force.cancel()
        for job in list(self._jobs):
            if job.task is not None and not job.task.done() and not job.settled:
                job.settled = True
                self.counters["abandoned"] += 1
                with contextlib.suppress(ZqError):
                    await job.msg.nack(reason="worker stopped before the task finished")
                job.task.cancel()

    # ------------------------------------------------------------ one message

    async def _run(self, job: _Job, consumer: Consumer) -> None:
        loop = asyncio.get_running_loop()
        msg = job.msg
        slot = True
        try:
            self.counters["started"] += 1
            name = msg.headers.get(TASK_HEADER)
            task = self.app.tasks.get(name) if isinstance(name, str) else None
            start = loop.time()
            retry, delay = True, None
            if task is None:
                ok, value = False, report(UNKNOWN_TASK, f"no task named {name!r} in this "
                                                        f"worker's app ({self.app.name})")
                retry = False
            else:
                try:
                    args, kwargs = decode_body(msg.body)
                except ValueError as exc:
                    ok, value, retry = False, report(BAD_BODY, str(exc)), False
                else:
                    ok, value = await self._execute(task, args, kwargs, msg)
                    if ok:
                        problem = check_result(value, result_limit(consumer))
                        if problem is not None:
                            ok, value = False, report(BAD_RESULT, problem)
                if not ok and task.retry is not None:
                    delay = task.retry.delay(msg.attempt)
            self._slots.release()
            slot = False
            took = loop.time() - start
            if job.settled:
                return
            job.settled = True
            self.counters["succeeded" if ok else "failed"] += 1
            sent = loop.time()
            try:
                if ok:
                    await msg.complete(True, result=value)
                else:
                    await msg.complete(False, error=value, retry=retry, delay=delay)
            except ZqError as exc:
                self.counters["refused"] += 1
                log.warning("completing message %d attempt %d of %s: %s", msg.id,
                            msg.attempt, msg.queue, exc)
                return
            self._measured(consumer, took, loop.time() - sent)
        finally:
            if slot:
                self._slots.release()
            self._jobs.discard(job)

    async def _execute(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any],
                       msg: Message | None = None) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, error report)``."""
        token = _current.set(msg)
        try:
            if task.executor == "async":
                return True, await task.fn(*args, **kwargs)
            loop = asyncio.get_running_loop()
            if task.executor == "process":
                status, value = await loop.run_in_executor(
                    self._pool("process"), run_in_process, task.fn.__module__,
                    task.fn.__qualname__, args, kwargs)
                return status == "ok", value
            ctx = contextvars.copy_context()  # current_message() works in the thread too
            return True, await loop.run_in_executor(
                self._pool("thread"), functools.partial(ctx.run, task.fn, *args, **kwargs))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return False, error_report(_from_task(exc))
        finally:
            _current.reset(token)

    def _pool(self, kind: str) -> Executor:
        if kind == "process":
            if self._processes is None:
                self._processes = ProcessPoolExecutor(
                    max_workers=min(self.concurrency, os.cpu_count() or 1),
                    mp_context=multiprocessing.get_context("spawn"))
            return self._processes
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.concurrency,
                                               thread_name_prefix="zq-task")
        return self._threads

    # ------------------------------------------------------------ credit sizing

    def _measured(self, consumer: Consumer, took: float, round_trip: float) -> None:
        """Fold in one handling time and one round trip; grow the credit if it pays."""
        if self.handle_time == 0.0:
            self.handle_time, self.round_trip = took, round_trip
        else:
            self.handle_time += _EWMA * (took - self.handle_time)
            self.round_trip += _EWMA * (round_trip - self.round_trip)
        if self.prefetch is None and self.counters["succeeded"] + self.counters["failed"] >= 8:
            target = auto_prefetch(self.concurrency, self.handle_time, self.round_trip)
            target = min(target, max(consumer.prefetch, consumer.max_credit))
            if target > consumer.prefetch:
                log.debug("worker %s: credit for %s %d -> %d", self.name, consumer.queue,
                          consumer.prefetch, target)
                consumer.grow(target)


_OUR_FILES = frozenset({__file__, concurrent.futures.thread.__file__})


def _from_task(exc: BaseException) -> BaseException:
    """``exc`` with the worker's own frames taken off the front of its traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None \
            and tb.tb_frame.f_code.co_filename in _OUR_FILES:
        tb = tb.tb_next
    return exc.with_traceback(tb)


def result_limit(consumer: Consumer) -> int:
    """Bytes a result may take: what a MANAGE header holds, less room for the rest."""
    limits = consumer.limits
    return max(1024, min(limits.max_header, limits.max_frame) - 64 * 1024)


def auto_prefetch(concurrency: int, handle_time: float, round_trip: float) -> int:
    """Credit that keeps ``concurrency`` slots busy without hoarding.

    While a slot's next message travels (one round trip), a slot finishing
    every ``handle_time`` seconds needs ``round_trip / handle_time`` more in the
    buffer. Below half a task per slot the extra is not worth holding messages
    other workers could take, so the credit stays at ``concurrency``.
    """
    cap = max(concurrency, MAX_PREFETCH)
    if handle_time <= 0:
        return cap
    ratio = round_trip / handle_time
    if ratio < 0.5:
        return concurrency
    return min(cap, concurrency + math.ceil(concurrency * ratio))


def run_in_process(module: str, qualname: str, args: list[Any], kwargs: dict[str, Any]
                   ) -> tuple[str, Any]:
    """Run a task's function in a pool process: ``("ok", value)`` or ``("error", report)``.

    The function is found by name (the module attribute is the Task, which wraps it).
    """
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        fn = obj.fn if isinstance(obj, Task) else obj
        return "ok", fn(*args, **kwargs)
    except Exception as exc:
        return "error", error_report(exc)


def load_app(spec: str) -> App:
    """The App named by ``MODULE:ATTR`` (ATTR may be dotted); ValueError if it is not one."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import {module!r}: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say where
        where = ""
        tb = exc.__traceback__
        while tb is not None:
            if not tb.tb_frame.f_code.co_filename.startswith("<frozen"):
                where = f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
            tb = tb.tb_next
        raise ValueError(f"cannot import {module!r}: {type(exc).__name__}: {exc}{where}"
                         ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise ValueError(f"{spec} is a {type(obj).__name__}, not a zq.App")
    return obj


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What ``zq worker`` runs: the App ``MODULE:ATTR`` and the Worker's settings."""

    app: str
    queues: tuple[str, ...] = ()
    concurrency: int = 8
    prefetch: int | None = None
    drain_timeout: float = 30.0
    endpoint: str | None = None  # None: the App's
    connect_timeout: float = 5.0  # seconds to wait for the broker's answer at start

    def __post_init__(self) -> None:
        if ":" not in self.app:
            raise ValueError(f"expected MODULE:ATTR, got {self.app!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.prefetch is not None and self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {self.prefetch}")
        if not math.isfinite(self.drain_timeout) or self.drain_timeout < 0:
            raise ValueError(f"drain timeout must be seconds >= 0, got {self.drain_timeout}")


def build_worker(cfg: WorkerConfig) -> Worker:
    """Import the App (the current directory first on ``sys.path``) and make its Worker."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    app = load_app(cfg.app)
    if cfg.endpoint:
        app.endpoint = cfg.endpoint
    unknown = [q for q in cfg.queues if q not in app.queues()]
    if unknown:
        raise ValueError(f"no task of {cfg.app} uses queue(s) {', '.join(unknown)}; its "
                         f"queues are {', '.join(app.queues()) or 'none'}")
    return Worker(app, list(cfg.queues) or None, cfg.concurrency, cfg.prefetch,
                  cfg.drain_timeout, connect_timeout=cfg.connect_timeout)


async def serve(worker: Worker, on_ready: Callable[[], None] | None = None) -> None:
    """Run ``worker`` until SIGTERM / SIGINT, then close its App's client."""
    try:
        await worker.run(on_ready)
    finally:
        await worker.app.close()


_current: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "zq_current_message", default=None)


def current_message() -> Message | None:
    """The message the calling task runs for (its id, attempt, headers), in a worker.

    Works in async tasks and in plain functions run in the worker's threads; None
    outside a task and in tasks run in a process pool.
    """
    return _current.get()


def stuck_threads() -> int:
    """Task threads still running (a sync task past the drain timeout)."""
    return sum(1 for t in threading.enumerate()
               if t.name.startswith("zq-task") and t.is_alive())
