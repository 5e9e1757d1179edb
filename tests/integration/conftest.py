from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_fakes import Real
from zq.broker import Broker
from zq.client.connection import Connection
from zq.client.outbox import Sent
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


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start in-process brokers (:class:`Real`): ``await real()`` in memory,
    ``real(durable=True)`` on SQLite, ``real(again=dead)`` where ``dead`` died (its
    endpoint and data folder). Each still running is stopped at teardown."""
    started: list[Real] = []

    async def make(durable: bool = False, again: Real | None = None) -> Real:
        if again is not None:
            node = Real(again.data, bind=again.endpoint)
        else:
            node = Real(tmp_path / f"data{len(started)}" if durable else None)
        started.append(await node.start())
        return node

    yield make
    for node in started:
        await node.stop()


@pytest.fixture
def adopted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """(endpoint, seqs) of every batch of PUBLISH frames a connection took from another."""
    seen: list[tuple[str, list[int]]] = []
    original = Connection.adopt

    def spy(self: Connection, sents: list[Sent], *, resent: bool) -> None:
        seen.append((self.endpoint, [s.frame.seq for s in sents]))
        original(self, sents, resent=resent)

    monkeypatch.setattr(Connection, "adopt", spy)
    return seen
