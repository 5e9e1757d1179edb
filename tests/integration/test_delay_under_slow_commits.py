"""Delayed messages are delivered on time even when every commit takes 40 ms (a slow
or busy disk): their attempts are stored ahead of the due time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import zq
from zq.broker import Broker


async def test_slow_commits_do_not_make_delayed_messages_late(
        inproc_broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    store = inproc_broker.store
    commit = store.commit

    async def slow_commit(batch: Any) -> None:
        await asyncio.sleep(0.04)  # an fsync on a busy disk
        await commit(batch)

    monkeypatch.setattr(store, "commit", slow_commit)
    monkeypatch.setattr(store, "commit_now", lambda batch: False)  # all through it
    due: dict[int, float] = {}
    late: list[float] = []
    async with zq.Client(inproc_broker.endpoint) as c, \
            c.consume("later", prefetch=100) as consumer:

        async def receive() -> None:
            while len(late) < 20:
                m = await consumer.get(timeout=10)
                late.append(time.monotonic() - due[m.id])  # arrival, as it happens
                await m.ack()

        receiver = asyncio.ensure_future(receive())
        for i in range(20):
            delay = 1.0 + i * 0.025  # due after every publish is confirmed
            t = time.monotonic()
            due[await c.publish("later", b"x", delay=delay)] = t + delay
        await asyncio.wait_for(receiver, 10)
    assert min(late) >= 0
    assert max(late) < 0.03, sorted(late)  # without storing ahead: 40-80 ms each
