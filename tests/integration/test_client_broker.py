"""The SDK against a real broker socket, in one process (no subprocesses)."""

from __future__ import annotations

import asyncio

import pytest

import zq
from zq.broker import Broker
from zq.client.connection import Connection


async def test_publishes_in_one_turn_travel_as_one_frame(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        before = inproc_broker.core.counters["frames_in"]
        ids = await asyncio.gather(*(c.publish("q", b"%d" % i) for i in range(1000)))
        frames = inproc_broker.core.counters["frames_in"] - before
        assert sorted(ids) == list(range(ids[0], ids[0] + 1000))
        assert ids == sorted(ids)  # ids follow call order
        # 1000 publishes from one loop turn: one PUBLISH frame (max_batch is 1000)
        assert frames == 1, frames


async def test_publish_window_bounds_unconfirmed(inproc_broker: Broker,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    peak = 0
    original = Connection.publish

    def spy(self: Connection, *args: object) -> asyncio.Future[object]:
        nonlocal peak
        fut = original(self, *args)  # type: ignore[arg-type]
        peak = max(peak, self.unconfirmed)
        return fut

    monkeypatch.setattr(Connection, "publish", spy)
    async with zq.Client(inproc_broker.endpoint, publish_window=50) as c:
        ids = await asyncio.gather(*(c.publish("w", b"x") for _ in range(2000)))
    assert len(set(ids)) == 2000
    assert 0 < peak <= 50, peak


async def test_publish_many_window_and_ids(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint, publish_window=300) as c:
        ids = await c.publish_many("m", [b"a"] * 2500)
        assert ids == list(range(ids[0], ids[0] + 2500))
        assert c.conn.unconfirmed == 0


async def test_headers_round_trip(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish("h", b"one", headers={"k": "v", "n": 3})
        await c.publish_many("h", [b"two", b"three"], headers=[None, {"x": b"\x00"}])
        async with c.consume("h", prefetch=10) as consumer:
            got = [await consumer.get(timeout=5) for _ in range(3)]
        assert [(m.body, m.headers) for m in got] == [
            (b"one", {"k": "v", "n": 3}), (b"two", {}), (b"three", {"x": b"\x00"})]


async def test_bad_arguments_raise_clear_errors(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        with pytest.raises(zq.InvalidQueueName):
            await c.publish("", b"x")
        with pytest.raises(zq.InvalidQueueName):
            await c.publish("q" * 300, b"x")
        with pytest.raises(TypeError):
            await c.publish("q", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await c.publish("q", b"x", headers={1: "x"})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="prefetch"):
            c.consume("q", prefetch=0)
        with pytest.raises(zq.FrameTooLarge):
            await c.publish("q", b"x" * (c.conn.limits.max_frame + 1))
        assert await c.publish("q", b"still fine") > 0


async def test_credit_is_regranted_as_messages_are_acked(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c:
        await c.publish_many("r", [b"%d" % i for i in range(100)])
        async with c.consume("r", prefetch=7) as consumer:
            for _ in range(100):
                m = await consumer.get(timeout=5)
                assert consumer.held <= 7
                await m.ack()
            assert consumer.peak_held == 7
        s = await c.stats()
        assert s["counters"]["acked"] == 100


async def test_second_consumer_on_same_queue_in_one_client_is_refused(
        inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c, c.consume("dup") as first:
        assert first.queue == "dup"
        with pytest.raises(ValueError, match="already consumes"):
            async with c.consume("dup"):
                pass


async def test_connect_to_nothing_fails_fast() -> None:
    with pytest.raises(zq.ConnectionLost, match="no zq broker answered"):
        async with zq.Client("tcp://127.0.0.1:1", connect_timeout=0.3):
            pass


async def test_stopped_broker_is_noticed_by_consumer(inproc_broker: Broker) -> None:
    async with zq.Client(inproc_broker.endpoint) as c, c.consume("gone") as consumer:
        inproc_broker.request_stop()
        with pytest.raises(zq.ConnectionLost, match="BYE"):
            await consumer.get(timeout=5)
