"""``zq.Worker``: runs an App's tasks from its queues under credit-based flow control.

One client, one consumer per queue, one pump per consumer that hands messages
to handler tasks under a shared concurrency limit; the :class:`Runner` runs the
functions (on the loop, in threads or in processes) and :class:`CreditSizer`
decides how far the credit grows. Stopping: stop taking work, release what was
prefetched and not started (the broker makes it ready at once, attempt not
counted), let running tasks finish for up to ``drain_timeout``, nack the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zq.client import Client, Consumer, Message
from zq.errors import ClientClosed, ConnectionLost, ZqError
from zq.node import steps
from zq.node.app import App, drop_unroutable
from zq.node.calls import TASK_HEADER, check_result, decode_body, report
from zq.node.canvas import CHORD_POLL, CHORD_TASK
from zq.node.credit import CreditSizer
from zq.node.runner import Runner

log = logging.getLogger("zq.worker")
BROADCAST_IDLE = 120.0  # seconds a dead worker's broadcast queue is kept (its idle_ttl)
REJOIN_CHECK = 0.5  # seconds between looks for a new session (broadcasts to join again)

UNKNOWN_TASK = "UnknownTask"
BAD_BODY = "BadTaskBody"
BAD_RESULT = "ResultNotSerializable"


class _Job:
    """A message being handled: the handler's task and whether it was settled."""

    __slots__ = ("msg", "settled", "task")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.settled = False
        self.task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: a result, or an error report with what the broker should do."""

    ok: bool
    value: Any  # the result, or the error report
    retry: bool = True  # False: dead at once (the task or its body cannot run here)
    delay: float | None = None  # seconds before the retry (the task's Retry), None: none


def result_limit(consumer: Consumer) -> int:
    """Bytes a result may take: what a MANAGE header holds, less room for the rest."""
    limits = consumer.limits
    return max(1024, min(limits.max_header, limits.max_frame) - 64 * 1024)


def _check_settings(concurrency: int, prefetch: int | None, drain_timeout: float) -> None:
    if type(concurrency) is not int or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if prefetch is not None and (type(prefetch) is not int or prefetch < 1):
        raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
    if not math.isfinite(drain_timeout) or drain_timeout < 0:
        raise ValueError(f"drain_timeout must be seconds >= 0, got {drain_timeout!r}")


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
                 connect_timeout: float = 5.0, broadcast_idle_ttl: float = BROADCAST_IDLE
                 ) -> None:
        _check_settings(concurrency, prefetch, drain_timeout)
        self.app = app
        self.queues = list(dict.fromkeys(queues or app.queues()))
        # A queue of its own bound to each broadcast task's topic, for as long as it runs
        # (deleted when it stops; by the broker after broadcast_idle_ttl if it died).
        tag = os.urandom(6).hex()
        self.broadcast = {t: f"{t[:230]}.w.{tag}" for t in app.broadcast_topics()}
        self.broadcast_idle_ttl = broadcast_idle_ttl
        if not self.queues and not self.broadcast:
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
        self._sizer = CreditSizer(concurrency)
        self._runner = Runner(concurrency)
        self._stop = asyncio.Event()
        self._error: ZqError | None = None
        self._force = asyncio.Event()
        self._jobs: set[_Job] = set()
        self._consumers: list[Consumer] = []
        self._slots = asyncio.Semaphore(concurrency)
        self._client: Client | None = None
        self._joined: Any = None  # the WELCOME of the session its broadcasts joined

    @property
    def handle_time(self) -> float:
        """Seconds a task takes here, moving average."""
        return self._sizer.handle_time

    @property
    def round_trip(self) -> float:
        """Seconds for a completion's reply from the broker, moving average."""
        return self._sizer.round_trip

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
        self._client = client  # the next steps of workflows go out on it
        try:
            await client.connect()
            for q in self.queues:
                await self.app.declare(client, q)
            await self._join_broadcasts(client)
            await self._serve(client, on_ready)
            await self._leave_broadcasts(client)
            if self._error is not None:
                raise self._error
        finally:
            # The signal handlers stay (a later signal only calls stop() again) until the
            # loop closes: removing them here would let a second Ctrl-C during the close
            # kill the process instead of letting it exit 0.
            await client.close()
            self._runner.close()
            self.stopped.set()

    async def _join_broadcasts(self, client: Client) -> None:
        """Its own queue for each broadcast topic: declared, bound (calls from now on);
        its dead letters go to one queue per topic (``<topic>.dlq``), which stays."""
        self._joined = client.conn.welcome
        for topic, q in self.broadcast.items():
            await client.declare_queue(q, result_ttl=self.app.result_ttl,
                                       idle_ttl=self.broadcast_idle_ttl,
                                       dlq=f"{topic[:251]}.dlq")
            await drop_unroutable(client, topic)
            await client.bind(topic, q)

    async def _keep_broadcasts(self, client: Client) -> None:
        """A new session (the broker restarted, or dropped a silent worker, and may have
        deleted its queues past their idle TTL): declare and bind them again."""
        while True:
            await asyncio.sleep(REJOIN_CHECK)
            conn = client.conn if client.connected else None
            if conn is not None and conn.welcome is not None and conn.welcome is not \
                    self._joined:
                with contextlib.suppress(ZqError, TimeoutError):
                    async with asyncio.timeout(10.0):
                        await self._join_broadcasts(client)
                        log.info("worker %s: in the broadcasts again (a new session)",
                                 self.name)

    async def _leave_broadcasts(self, client: Client) -> None:
        """Its broadcast queues go (with their bindings) once it has drained."""
        for q in self.broadcast.values():
            with contextlib.suppress(ZqError, TimeoutError):
                async with asyncio.timeout(5.0):
                    await client.delete_queue(q)

    async def _serve(self, client: Client, on_ready: Callable[[], None] | None) -> None:
        first = self.prefetch or self.concurrency
        async with asyncio.TaskGroup() as jobs:
            async with asyncio.TaskGroup() as pumps:
                tasks = []
                for q in [*self.queues, *self.broadcast.values()]:
                    # Messages count as started when a slot takes them, not when the
                    # pump takes them out of the consumer to wait for a slot.
                    consumer = client.consume(q, prefetch=first, auto_start=False)
                    await consumer.__aenter__()
                    self._consumers.append(consumer)
                    tasks.append(pumps.create_task(self._pump(client, consumer, jobs)))
                if self.broadcast:
                    tasks.append(pumps.create_task(self._keep_broadcasts(client)))
                self.ready.set()
                if on_ready is not None:
                    on_ready()
                log.info("worker %s ready: queues %s", self.name,
                         ", ".join([*self.queues, *self.broadcast.values()]))
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
        slot = True
        try:
            self.counters["started"] += 1
            start = loop.time()
            outcome = await self._attempt(job.msg, consumer)
            self._slots.release()
            slot = False
            if not job.settled:  # else the drain gave up on it and nacked it
                job.settled = True
                await self._complete(job.msg, consumer, outcome, loop.time() - start)
        finally:
            if slot:
                self._slots.release()
            self._jobs.discard(job)

    async def _attempt(self, msg: Message, consumer: Consumer) -> Outcome:
        """Run the task ``msg`` names with the arguments its body carries."""
        name = msg.headers.get(TASK_HEADER)
        if name == CHORD_TASK:
            return await self._chord(msg)
        task = self.app.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            return Outcome(False, report(UNKNOWN_TASK, f"no task named {name!r} in this "
                                                       f"worker's app ({self.app.name})"),
                           retry=False)
        try:
            args, kwargs = decode_body(msg.body)
        except ValueError as exc:
            return Outcome(False, report(BAD_BODY, str(exc)), retry=False)
        ok, value = await self._runner.execute(task, args, kwargs, msg)
        if ok:
            problem = check_result(value, result_limit(consumer))
            if problem is None:
                return await self._advanced(msg, value)
            value = report(BAD_RESULT, problem)
        delay = task.retry.delay(msg.attempt) if task.retry is not None else None
        return Outcome(False, value, delay=delay)

    async def _advanced(self, msg: Message, value: Any) -> Outcome:
        """A chain's next step goes out before this one is completed (zq.node.canvas)."""
        client = self._client
        try:
            return Outcome(True, value if client is None else await steps.advance(
                client, msg, value))
        except (ZqError, ValueError, TypeError) as exc:
            return Outcome(False, report("WorkflowError", f"the next step of the chain "
                                                          f"could not be published: {exc}"),
                           delay=CHORD_POLL)

    async def _chord(self, msg: Message) -> Outcome:
        client = self._client
        try:
            _, kwargs = decode_body(msg.body)
            assert client is not None
            state, value = await steps.chord(client, msg, kwargs)
        except (ZqError, ValueError, TypeError, KeyError, AssertionError) as exc:
            return Outcome(False, report("ChordError", str(exc)), delay=CHORD_POLL)
        if state == "done":
            return Outcome(True, value)
        if state == steps.WAIT:
            return Outcome(False, report("ChordWaiting", "members still running"),
                           delay=CHORD_POLL)
        return Outcome(False, value, retry=False)

    async def _complete(self, msg: Message, consumer: Consumer, outcome: Outcome,
                        took: float) -> None:
        """Tell the broker how the attempt ended; measure the reply's round trip."""
        loop = asyncio.get_running_loop()
        self.counters["succeeded" if outcome.ok else "failed"] += 1
        sent = loop.time()
        try:
            if outcome.ok:
                await msg.complete(True, result=outcome.value)
            else:
                await msg.complete(False, error=outcome.value, retry=outcome.retry,
                                   delay=outcome.delay)
        except ZqError as exc:
            self.counters["refused"] += 1
            log.warning("completing message %d attempt %d of %s: %s", msg.id,
                        msg.attempt, msg.queue, exc)
            return
        self._measured(consumer, took, loop.time() - sent)

    def _measured(self, consumer: Consumer, took: float, round_trip: float) -> None:
        """Fold in one handling time and one round trip; grow the credit if it pays."""
        self._sizer.fold(took, round_trip)
        if self.prefetch is not None:
            return
        completed = self.counters["succeeded"] + self.counters["failed"]
        target = self._sizer.grow_to(consumer.prefetch, consumer.max_credit, completed)
        if target is not None:
            log.debug("worker %s: credit for %s %d -> %d", self.name, consumer.queue,
                      consumer.prefetch, target)
            consumer.grow(target)
