"""zq producer and consumer processes: the zq SDK as a user would drive it.

Producers publish with ``publish_many`` in batches of ``batch`` bodies from
enough concurrent tasks to keep the SDK's publish window full; with
``batch == 1`` each task awaits one ``publish()`` per message, so the SDK's
per-turn coalescing is what is measured. Consumers iterate under ``prefetch``
credit and ack every message.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.synchronize import Event
from typing import Any

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
    run_worker,
)
from zq.broker import run_loop


def producer_main(spec: WorkerSpec, start: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        out: list[WorkerReport] = []
        run_loop(_produce(spec, start, events, out))
        return out[0]

    run_worker(spec, events, body)


def consumer_main(spec: WorkerSpec, counts: Counts, stop: Event,
                  events: Events[Any]) -> None:
    def body() -> WorkerReport:
        out: list[WorkerReport] = []
        run_loop(_consume(spec, counts, stop, events, out))
        return out[0]

    run_worker(spec, events, body)


async def _produce(spec: WorkerSpec, start: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    bodies = make_bodies(spec.lo, spec.hi, spec.size)
    b = spec.batch
    batches = [bodies[i:i + b] for i in range(0, len(bodies), b)]
    confirmed = 0
    async with zq.Client(spec.endpoint, name=f"perf-producer-{spec.index}",
                         publish_window=spec.window) as client:
        events.put(("ready", spec.role, spec.index))
        if not await asyncio.to_thread(start.wait, spec.timeout):
            raise TimeoutError("no start signal")

        async def one_by_one(it: Any) -> None:
            nonlocal confirmed
            for body in it:
                await client.publish(QUEUE, body)
                confirmed += 1

        async def in_batches(it: Any) -> None:
            nonlocal confirmed
            for chunk in it:
                ids = await client.publish_many(QUEUE, chunk)  # not inline: += reads first
                confirmed += len(ids)

        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        work, it = (one_by_one, iter(bodies)) if b == 1 else (in_batches, iter(batches))
        async with asyncio.TaskGroup() as tg:
            for _ in range(spec.tasks):
                tg.create_task(work(it))
        t1 = time.monotonic()
        cpu1 = cpu_seconds()
    out.append(WorkerReport(spec.role, spec.index, count=confirmed, t_first=t0, t_last=t1,
                            cpu_s=cpu1 - cpu0))


async def _consume(spec: WorkerSpec, counts: Counts, stop: Event,
                   events: Events[Any], out: list[WorkerReport]) -> None:
    total = spec.messages
    seen = bytearray(total)
    unpack = INDEX.unpack_from
    me = spec.index
    n = dup = 0
    t_last = 0.0
    async with zq.Client(spec.endpoint, name=f"perf-consumer-{me}") as client, \
            client.consume(QUEUE, prefetch=spec.prefetch) as consumer:
        cpu0 = cpu_seconds()
        events.put(("ready", spec.role, me))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_close_when_told(consumer, stop))
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
                            cpu_s=cpu1 - cpu0, seen=bytes(seen)))


async def _close_when_told(consumer: zq.Consumer, stop: Event) -> None:
    """End the iteration once the harness sees every message received (or gives up)."""
    await asyncio.to_thread(stop.wait)
    await consumer.close()
