"""A client outlives a broker restart, graceful (BYE) or not, on the same endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import zq
from tests.helpers import free_port
from zq.broker import Broker
from zq.config import BrokerConfig


async def start(endpoint: str, data: Path) -> tuple[Broker, asyncio.Task[None]]:
    broker = Broker(BrokerConfig(bind=endpoint, heartbeat=0.1, data=str(data)))
    ready = asyncio.Event()
    task = asyncio.ensure_future(broker.run(lambda _ep: ready.set()))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raise what stopped it
    return broker, task


async def stop(broker: Broker, task: asyncio.Task[None]) -> None:
    broker.request_stop()  # graceful: every client hears BYE
    await asyncio.wait_for(task, 5)


async def test_consumer_resumes_after_a_graceful_restart(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = await start(endpoint, tmp_path / "data")
    second = None
    try:
        async with zq.Client(endpoint, name="survivor") as c, \
                c.consume("q", prefetch=1) as consumer:
            await c.publish("q", b"before")
            m = await consumer.get(timeout=5)
            await m.ack(wait=True)
            await stop(*first)
            with contextlib.suppress(zq.ConnectionLost):
                await consumer.get(timeout=5)  # the consumer learns the broker went away
            second = await start(endpoint, tmp_path / "data")  # a new one, same endpoint
            await c.wait_connected(timeout=5)
            await c.publish("q", b"after")
            m = await consumer.get(timeout=5)
            assert m.body == b"after"
            await m.ack(wait=True)
    finally:
        if not first[1].done():
            await stop(*first)
        if second is not None:
            await stop(*second)
