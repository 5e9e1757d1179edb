"""A store that fails, in every way it can: publishes are refused, nothing hangs."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

import zq
from zq.broker import Broker
from zq.config import BrokerConfig
from zq.core import Commit
from zq.errors import StorageFull
from zq.persistence.base import WriteBatch


async def test_unexpected_store_exception_is_storage_error_and_the_broker_goes_on(
        inproc_broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    store = inproc_broker.store
    real = store.commit
    fail = {"left": 1}

    async def flaky(batch: WriteBatch) -> None:
        if fail["left"] and batch.inserts:
            fail["left"] -= 1
            raise RuntimeError("disk controller on fire")
        await real(batch)

    monkeypatch.setattr(store, "commit", flaky)
    monkeypatch.setattr(store, "commit_now", lambda batch: False)  # all through it
    async with zq.Client(inproc_broker.endpoint) as c:
        with pytest.raises(zq.StorageError) as info:
            await c.publish("q", b"lost")
        assert info.value.retriable
        mid = await c.publish("q", b"kept")  # the next commit works
        async with c.consume("q", prefetch=5) as consumer:
            m = await consumer.get(timeout=5)
            assert (m.id, m.body) == (mid, b"kept")
            await m.ack()


async def test_acks_commit_on_their_own_when_publishes_cannot(
        inproc_broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    store = inproc_broker.store
    real = store.commit
    full = {"on": False}
    acked: set[int] = set()
    ack_stored = asyncio.Event()

    async def disk_full_for_inserts(batch: WriteBatch) -> None:
        if full["on"] and batch.inserts:
            raise StorageFull("no space")
        await real(batch)
        acked.update(batch.deletes)
        if acked:
            ack_stored.set()

    monkeypatch.setattr(store, "commit", disk_full_for_inserts)
    monkeypatch.setattr(store, "commit_now", lambda batch: False)  # all through it
    async with zq.Client(inproc_broker.endpoint) as c:
        ids = await c.publish_many("q", [b"a", b"b"])
        full["on"] = True
        refused = 0

        async def keep_publishing() -> None:
            # Every batch from now on carries a publish that the full disk refuses.
            nonlocal refused
            while not ack_stored.is_set():
                with contextlib.suppress(zq.StorageFull):
                    await c.publish("q", b"more")
                refused += 1

        async with c.consume("q", prefetch=5) as consumer, asyncio.TaskGroup() as tg:
            tg.create_task(keep_publishing())
            m = await consumer.get(timeout=5)
            await m.ack()
            await asyncio.wait_for(ack_stored.wait(), 5)  # the ack was stored all the same
        assert acked == {ids[0]}
        assert refused > 0
        full["on"] = False
        await c.publish("q", b"d")  # publishing resumes by itself


async def test_on_a_full_disk_the_batch_is_retried_without_its_inserts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", data=str(tmp_path)))
    seen: list[tuple[bool, list[int]]] = []

    async def full_for_inserts(batch: WriteBatch) -> None:
        seen.append((bool(batch.inserts), list(batch.deletes)))
        if batch.inserts:
            raise StorageFull("no space")

    monkeypatch.setattr(broker.store, "commit", full_for_inserts)
    monkeypatch.setattr(broker.store, "commit_now", lambda batch: False)  # all through it
    batch = WriteBatch(inserts=[(10, "q", None, [b"x"])], deletes=[3, 4])
    await broker.commits.commit(Commit(batch, [], []))
    # the acks did not wait for a batch without publishes, which may never come
    assert seen == [(True, [3, 4]), (False, [3, 4])]
    assert not broker.core.has_unstored()
