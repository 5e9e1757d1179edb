"""zq producer and consumer processes: the zq SDK as a user would drive it.

Producers publish with ``publish_many`` in batches of ``batch`` bodies from
enough concurrent tasks to keep the SDK's publish window full; with
``batch == 1`` each task awaits one ``publish()`` per message, so the SDK's
per-turn coalescing is what is measured. Consumers iterate under ``prefetch``
credit and ack every message.

With ``queues > 1`` batch ``j`` (message ``j`` when ``batch == 1``) goes to queue
``j % queues``; a consumer opens one ``client.consume(queue, prefetch=prefetch)``
per queue it takes (the SDK allows one consumer per queue per client) and drains
each from its own task. Before it reports ready it asks the broker for its stats:
the broker handles a session's frames in order, so the answer means every CREDIT
(subscription) was processed. With ``stamp`` bodies are made when published and
carry that time (:mod:`perf.stamps`).

With ``lanes`` (:mod:`perf.lanes`) every batch carries publish options:
``priority`` draws each batch's priority (0-9) at random, ``tenant`` sends batch
``j`` as tenant ``t(j % 4 + 1)`` after declaring every queue with the tenants'
weights (:data:`perf.config.TENANT_WEIGHTS`). The options are chosen before the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from typing import Any, Protocol

import zq
from perf.common import (
    INDEX,
    QUEUE,
    Counts,
    Events,
    WorkerReport,
    WorkerSpec,
    cpu_seconds,
    make_bodies,
    queue_names,
    queue_of,
    run_async_worker,
)
from perf.config import TENANT_WEIGHTS
from perf.hist import HEAD
from perf.stamps import StampLog


def producer_main(spec: WorkerSpec, start: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _produce(spec, start, events, out))


def consumer_main(spec: WorkerSpec, counts: Counts, stop: Event,
                  events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _consume(spec, counts, stop, events, out))


async def _produce(spec: WorkerSpec, start: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    b = spec.batch
    names = queue_names(spec.queues)
    firsts = range(spec.lo, spec.hi, b)
    # (queue, first index, bodies or None when stamped at publish time, publish options)
    opts = lane_options(spec)
    if spec.stamp:
        work_items: list[tuple[str, int, list[bytes] | None, dict[str, Any]]] = [
            (names[queue_of(lo, b, spec.queues)], lo, None, opts(lo)) for lo in firsts]
    else:
        bodies = make_bodies(spec.lo, spec.hi, spec.size)
        work_items = [(names[queue_of(lo, b, spec.queues)], lo,
                       bodies[lo - spec.lo:lo - spec.lo + b], opts(lo)) for lo in firsts]
        del bodies
    pad = b"x" * (spec.size - HEAD.size)
    pack = HEAD.pack
    now = time.monotonic
    hi = spec.hi
    confirmed = 0
    async with zq.Client(spec.endpoint, name=f"perf-producer-{spec.index}",
                         publish_window=spec.window) as client:
        if spec.lanes == "tenant":
            for name in names:
                await client.declare_queue(name, weights=dict(TENANT_WEIGHTS))
        events.put(("ready", spec.role, spec.index))
        if not await asyncio.to_thread(start.wait, spec.timeout):
            raise TimeoutError("no start signal")

        async def plain(it: Any) -> None:  # one queue, bodies made before the run
            nonlocal confirmed
            queue = names[0]
            for body in it:
                await client.publish(queue, body)
                confirmed += 1

        async def one_by_one(it: Any) -> None:
            nonlocal confirmed
            for queue, i, chunk, kw in it:
                body = chunk[0] if chunk is not None else pack(i, now()) + pad
                await client.publish(queue, body, **kw)
                confirmed += 1

        async def in_batches(it: Any) -> None:
            nonlocal confirmed
            for queue, lo, chunk, kw in it:
                if chunk is None:
                    t = now()
                    chunk = [pack(i, t) + pad for i in range(lo, min(lo + b, hi))]
                ids = await client.publish_many(queue, chunk, **kw)  # not inline (+= reads first)
                confirmed += len(ids)

        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        if b > 1:
            work, it = in_batches, iter(work_items)
        elif spec.queues == 1 and not spec.stamp and spec.lanes == "plain":
            work, it = plain, iter([chunk[0] for _, _, chunk, _ in work_items if chunk])
        else:
            work, it = one_by_one, iter(work_items)
        async with asyncio.TaskGroup() as tg:
            for _ in range(spec.tasks):
                tg.create_task(work(it))
        t1 = time.monotonic()
        cpu1 = cpu_seconds()
    out.append(WorkerReport(spec.role, spec.index, count=confirmed, t_first=t0, t_last=t1,
                            cpu_s=cpu1 - cpu0))


def lane_options(spec: WorkerSpec) -> Callable[[int], dict[str, Any]]:
    """A function from a batch's first index to the keyword options it is published with."""
    if spec.lanes == "plain":
        none: dict[str, Any] = {}
        return lambda lo: none
    if spec.lanes == "priority":
        rng = random.Random(spec.seed * 1_000_003 + spec.index)
        return lambda lo: {"priority": rng.randint(0, 9)}
    if spec.lanes == "tenant":
        tenants = [{"tenant": t} for t in TENANT_WEIGHTS]
        return lambda lo: tenants[(lo // spec.batch) % len(tenants)]
    raise ValueError(f"unknown lanes {spec.lanes!r}")


async def _consume(spec: WorkerSpec, counts: Counts, stop: Event,
                   events: Events[Any], out: list[WorkerReport]) -> None:
    names = queue_names(spec.queues)
    mine = list(spec.subscribe or range(spec.queues))
    me = spec.index
    async with zq.Client(spec.endpoint, name=f"perf-consumer-{me}") as client:
        t_sub = time.monotonic()
        consumers = [client.consume(names[k], prefetch=spec.prefetch) for k in mine]
        try:
            for c in consumers:
                await c.__aenter__()
            await client.stats()  # a barrier: every CREDIT before it has been handled
            subscribe_s = time.monotonic() - t_sub
            if spec.stamp:
                await _drain_stamped(spec, client, consumers, mine, counts, stop, events, out,
                                     subscribe_s)
            elif len(consumers) == 1:
                await _drain_one(spec, consumers[0], counts, stop, events, out, subscribe_s)
            else:
                await _drain_many(spec, consumers, counts, stop, events, out, subscribe_s)
        finally:
            for c in consumers:
                await c.close()


async def _drain_one(spec: WorkerSpec, consumer: zq.Consumer, counts: Counts, stop: Event,
                     events: Events[Any], out: list[WorkerReport], subscribe_s: float) -> None:
    """One queue: one loop, no task per queue."""
    seen = bytearray(spec.messages)
    unpack = INDEX.unpack_from
    me = spec.index
    n = dup = 0
    t_last = 0.0
    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_close_when_told(stop, consumer))
        async for msg in consumer:
            i = unpack(msg.body)[0]
            if seen[i]:
                dup += 1
            else:
                seen[i] = 1
            await msg.ack()
            n += 1
            counts[me] = n
            t_last = time.monotonic()
    cpu1 = cpu_seconds()
    out.append(WorkerReport(spec.role, me, count=n, duplicates=dup, t_last=t_last,
                            cpu_s=cpu1 - cpu0, seen=bytes(seen),
                            extra={"subscribe_s": subscribe_s}))


async def _drain_many(spec: WorkerSpec, consumers: list[zq.Consumer], counts: Counts,
                      stop: Event, events: Events[Any], out: list[WorkerReport],
                      subscribe_s: float) -> None:
    """Many queues: one task per consumer, one shared record."""
    seen = bytearray(spec.messages)
    unpack = INDEX.unpack_from
    me = spec.index
    n = dup = 0
    t_last = 0.0

    async def drain(consumer: zq.Consumer) -> None:
        nonlocal n, dup, t_last
        async for msg in consumer:
            i = unpack(msg.body)[0]
            if seen[i]:
                dup += 1
            else:
                seen[i] = 1
            await msg.ack()
            n += 1
            counts[me] = n
            t_last = time.monotonic()

    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_close_when_told(stop, *consumers))
        for c in consumers:
            tg.create_task(drain(c))
    cpu1 = cpu_seconds()
    out.append(WorkerReport(spec.role, me, count=n, duplicates=dup, t_last=t_last,
                            cpu_s=cpu1 - cpu0, seen=bytes(seen),
                            extra={"subscribe_s": subscribe_s}))


async def _drain_stamped(spec: WorkerSpec, client: zq.Client, consumers: list[zq.Consumer],
                         mine: list[int], counts: Counts, stop: Event, events: Events[Any],
                         out: list[WorkerReport], subscribe_s: float) -> None:
    """Stamped bodies: publish->deliver of every message and each queue's first delivery."""
    log = StampLog(spec.messages)
    received = log.received
    me = spec.index

    async def drain(consumer: zq.Consumer, q: int) -> None:
        async for msg in consumer:
            received(q, msg.body, time.monotonic())
            await msg.ack()
            counts[me] = log.count

    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_close_when_told(stop, *consumers))
        for c, q in zip(consumers, mine, strict=True):
            tg.create_task(drain(c, q))
    cpu1 = cpu_seconds()
    out.append(log.report(spec, cpu1 - cpu0, subscribe_s))


async def _close_when_told(stop: Event, *consumers: zq.Consumer) -> None:
    """End the iterations once the harness sees every message received (or gives up)."""
    await asyncio.to_thread(stop.wait)
    for c in consumers:
        await c.close()


class ArrivalLog(Protocol):
    """What a timed consumer records arrivals into (latency and delays logs)."""

    count: int

    def received(self, body: bytes, t: float) -> None: ...

    def report(self, spec: Any, cpu_s: float) -> WorkerReport: ...


async def consume_timed(spec: Any, log: ArrivalLog, name: str, counts: Counts, stop: Event,
                        events: Events[Any], out: list[WorkerReport], *,
                        barrier: bool = False) -> None:
    """One consumer that stamps each arrival with ``time.monotonic()`` into ``log`` and
    acks it, until told to stop; its report goes to ``out``. ``barrier``: wait until
    the broker has taken the credit before saying ready."""
    async with zq.Client(spec.endpoint, name=name) as client, \
            client.consume(QUEUE, prefetch=spec.prefetch) as consumer:
        if barrier:
            await client.stats()
        cpu0 = cpu_seconds()
        events.put(("ready", spec.role, spec.index))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_close_when_told(stop, consumer))
            async for msg in consumer:
                log.received(msg.body, time.monotonic())
                await msg.ack()
                counts[spec.index] = log.count
        cpu1 = cpu_seconds()
    out.append(log.report(spec, cpu1 - cpu0))
