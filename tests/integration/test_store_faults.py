"""A store that fails, in every way it can: publishes are refused, nothing hangs."""

from __future__ import annotations

import pytest

import zq
from zq.broker import Broker
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
    committed_deletes: list[int] = []

    async def disk_full_for_inserts(batch: WriteBatch) -> None:
        if full["on"] and batch.inserts:
            raise StorageFull("no space")
        await real(batch)
        committed_deletes.extend(batch.deletes)

    monkeypatch.setattr(store, "commit", disk_full_for_inserts)
    async with zq.Client(inproc_broker.endpoint) as c:
        ids = await c.publish_many("q", [b"a", b"b"])
        full["on"] = True
        async with c.consume("q", prefetch=5) as consumer:
            m = await consumer.get(timeout=5)
            await m.ack()
            # the ack travels with a publish that the full disk refuses ...
            with pytest.raises(zq.StorageFull):
                await c.publish("q", b"c")
            # ... and is stored anyway, on its own
            await c.stats()
            assert ids[0] in committed_deletes
            full["on"] = False
            await c.publish("q", b"d")  # publishing resumes by itself
