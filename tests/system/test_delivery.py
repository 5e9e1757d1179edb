"""Delivery under credit, with real broker processes (issue 2, acceptance 2-5)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import zq
from tests.procs import Proc


async def _consume_all(client: zq.Client, queue: str, prefetch: int, total: int,
                       seen: Counter[bytes], done: asyncio.Event) -> zq.Consumer:
    async with client.consume(queue, prefetch=prefetch) as consumer:
        while sum(seen.values()) < total:
            try:
                msg = await consumer.get(timeout=0.2)
            except TimeoutError:
                if done.is_set():
                    break
                continue
            assert consumer.held <= prefetch
            seen[msg.body] += 1
            await msg.ack()
            if sum(seen.values()) >= total:
                done.set()
        return consumer


async def test_three_producers_two_consumers_prefetch_50(broker: Proc) -> None:
    total = 30_000
    got_a: Counter[bytes] = Counter()
    got_b: Counter[bytes] = Counter()
    done = asyncio.Event()

    async def produce(p: int) -> list[int]:
        async with zq.Client(broker.endpoint, name=f"producer-{p}") as c:
            ids: list[int] = []
            for start in range(0, 10_000, 500):
                ids += await c.publish_many("work", [f"{p}:{i}".encode()
                                                     for i in range(start, start + 500)])
            return ids

    async with zq.Client(broker.endpoint, name="consumer-a") as ca, \
            zq.Client(broker.endpoint, name="consumer-b") as cb, \
            zq.Client(broker.endpoint, name="observer") as obs:

        async def consume(client: zq.Client, mine: Counter[bytes]) -> int:
            async with client.consume("work", prefetch=50) as consumer:
                while not done.is_set():
                    try:
                        msg = await consumer.get(timeout=0.2)
                    except TimeoutError:
                        continue
                    mine[msg.body] += 1
                    await msg.ack()
                    if sum(got_a.values()) + sum(got_b.values()) >= total:
                        done.set()
                # checked from the consumer's own count
                assert consumer.peak_held <= 50
                assert consumer.peak_held > 0
                stats = await obs.stats()
                for peer in stats["peers"].values():  # and from the broker's counters
                    for sub in peer["subs"].values():
                        assert sub["peak_in_flight"] <= 50, peer
                return consumer.received

        async with asyncio.timeout(120):
            results = await asyncio.gather(
                consume(ca, got_a), consume(cb, got_b), *(produce(p) for p in range(3)))
        ids = [i for r in results[2:] for i in r]  # type: ignore[union-attr]
        assert len(ids) == total
        assert len(set(ids)) == total
        both = got_a + got_b
        expected = {f"{p}:{i}".encode() for p in range(3) for i in range(10_000)}
        assert set(both) == expected  # nothing lost
        assert max(both.values()) == 1  # nothing delivered (and acked) twice
        assert got_a
        assert got_b
        stats = await obs.stats()
        c = stats["counters"]
        assert c["published"] == total
        assert c["acked"] == total
        assert c["redelivered"] == 0
        assert stats["queues"]["work"]["ready"] == 0


async def test_deliver_frames_carry_batches(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        for _ in range(20):
            await c.publish_many("backlog", [b"x" * 100] * 1000)
        n = 0
        async with asyncio.timeout(60), c.consume("backlog", prefetch=1000) as consumer:
            async for msg in consumer:
                await msg.ack()
                n += 1
                if n == 20_000:
                    break
        s = await c.stats()
        assert s["counters"]["delivered"] == 20_000
        assert s["counters"]["avg_deliver_batch"] > 10, s["counters"]


async def test_killed_consumer_messages_go_to_another_with_attempt_2(
        broker_factory: Callable[..., Awaitable[Proc]], tmp_path: Path) -> None:
    hb = 0.3
    broker = await broker_factory("--heartbeat", str(hb), "--liveness", "3")
    holder = await Proc.start([sys.executable, "-m", "tests.system.holder", broker.endpoint,
                               "jobs", "20"], tmp_path / "holder.log")
    try:
        async with zq.Client(broker.endpoint) as c:
            ids = await c.publish_many("jobs", [f"job-{i}".encode() for i in range(20)])
            line = await holder.wait_for_line("HOLDING 20 ")
            assert sorted(map(int, line.split()[2].split(","))) == ids
            async with c.consume("jobs", prefetch=100) as consumer:
                loop = asyncio.get_running_loop()
                await holder.kill()
                killed_at = loop.time()
                got = []
                async with asyncio.timeout(10):
                    while len(got) < 20:
                        msg = await consumer.get()
                        got.append(msg)
                elapsed = loop.time() - killed_at
                assert elapsed <= 3 * hb + 1.0, elapsed
                assert sorted(m.id for m in got) == ids
                assert {m.attempt for m in got} == {2}
                for m in got:
                    await m.ack()
    finally:
        await holder.kill()


async def test_nack_requeue_and_delay(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        await c.publish("retry", b"a")
        async with c.consume("retry", prefetch=1) as consumer:
            m1 = await consumer.get(timeout=5)
            assert (m1.body, m1.attempt) == (b"a", 1)
            await m1.nack(requeue=True)
            m2 = await consumer.get(timeout=5)
            assert (m2.id, m2.attempt) == (m1.id, 2)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await m2.nack(requeue=True, delay=0.5)
            m3 = await consumer.get(timeout=5)
            waited = loop.time() - t0
            assert m3.id == m1.id
            assert m3.attempt == 3
            assert waited >= 0.5, waited
            assert waited < 1.5, waited
            await m3.nack(requeue=False)
        s = await c.stats()
        assert s["counters"]["dead"] == 1
        assert s["queues"]["retry"]["ready"] == 0


async def test_release_and_unacked_on_close_come_back(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as producer:
        await producer.publish_many("q", [b"1", b"2", b"3"])
        async with zq.Client(broker.endpoint) as c1:
            async with c1.consume("q", prefetch=3) as consumer:
                m = await consumer.get(timeout=5)
                # all three were stored before we asked: they came in one DELIVER, and
                # the other two sit in the buffer
                assert consumer.received == 3
            # closing the consumer gave the two buffered ones back; m is still ours
            await m.release()  # after the close, so nothing is sent back to us
        async with zq.Client(broker.endpoint) as c2, c2.consume("q", prefetch=3) as consumer:
            got = [await consumer.get(timeout=5) for _ in range(3)]
            assert sorted(m.body for m in got) == [b"1", b"2", b"3"]
            assert {m.attempt for m in got} == {1}  # released: not counted as attempts
            for m in got:
                await m.ack()
                try:
                    await m.ack()
                except zq.AlreadySettled:
                    pass
                else:
                    raise AssertionError("double ack accepted")
