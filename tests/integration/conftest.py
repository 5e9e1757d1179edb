from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zq.broker import Broker
from zq.config import BrokerConfig


@pytest.fixture
async def inproc_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A real Broker (real ROUTER socket on loopback, sqlite store in a temporary
    folder) running in the test's own loop."""
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", heartbeat=0.2,
                                 data=str(tmp_path / "data")))
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(broker.run(lambda _ep: ready.set()))
        await ready.wait()
        try:
            yield broker
        finally:
            broker.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
