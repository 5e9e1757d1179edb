"""Federation under faults, real processes (issue 12, acceptance 2 and 4).

* Router death: one of two routers is SIGKILLed and started again, over and over,
  while producers publish through both (``zq.Client([r1, r2])``) and consumers
  drain. Lost = 0, stored duplicates = 0 (resends through the other router are
  deduplicated by producer id and seq), and a producer's longest stall per failover
  is at most 2 x liveness + 1 s.
* Broker down: one broker is SIGKILLed for a while under load: publishes to its queues
  answer UNAVAILABLE within one liveness period, the other brokers' queues keep
  flowing, and once it is back it serves again within 5 s; lost = 0.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.helpers import eventually, free_endpoint
from tests.procs import Proc
from zq.cluster import load, place

HEARTBEAT = 0.2
LIVENESS = 3  # the default


class Nodes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.file = tmp / "cluster.toml"
        self.endpoints = write_cluster(self.file, ["b1", "b2", "b3"])
        self.brokers: dict[str, Proc] = {}
        self.routers: dict[str, Proc] = {}

    async def start_broker(self, b: str) -> None:
        self.brokers[b] = await start_cluster_broker(self.tmp, self.file, b,
                                                     heartbeat=str(HEARTBEAT))

    async def start_router(self, r: str, endpoint: str = "") -> None:
        args = ("--bind", endpoint) if endpoint else ()
        # --bind given twice: the last one wins, so a restarted router keeps its port.
        self.routers[r] = await start_router(self.tmp, self.file, *args, router_id=r,
                                             heartbeat=str(HEARTBEAT))

    def rows(self) -> Counter[bytes]:
        out: Counter[bytes] = Counter()
        for b in self.brokers:
            db = self.tmp / f"data-{b}" / "zq.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                out.update(bytes(body) for (body,) in conn.execute("SELECT body FROM messages"))
        return out

    async def close(self) -> None:
        for p in [*self.routers.values(), *self.brokers.values()]:
            await p.kill()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        for b in ("b1", "b2", "b3"):
            await n.start_broker(b)
        yield n
    finally:
        await n.close()


async def _publishers(endpoints: list[str], producers: int, queues: list[str],
                      stalls: list[float], confirmed: dict[bytes, int],
                      stop: asyncio.Event) -> None:
    """Producers publishing batches of 20 through ``endpoints`` until ``stop``."""
    loop = asyncio.get_running_loop()

    async def one(k: int) -> None:
        async with zq.Client(endpoints, name=f"producer-{k}", connect_timeout=10) as c:
            start = 0
            while not stop.is_set():
                bodies = [f"p{k}-{i}".encode() for i in range(start, start + 20)]
                t0 = loop.time()
                ids = await c.publish_many(queues[(start // 20) % len(queues)], bodies)
                stalls.append(loop.time() - t0)
                confirmed.update(zip(bodies, ids, strict=True))
                start += 20

    await asyncio.gather(*(one(k) for k in range(producers)))


@pytest.mark.parametrize("kills", [4, pytest.param(12, marks=pytest.mark.slow)])
async def test_router_death_loses_nothing_and_stores_no_duplicate(
        nodes: Nodes, kills: int) -> None:
    r_eps = [free_endpoint(), free_endpoint()]
    await nodes.start_router("r1", r_eps[0])
    await nodes.start_router("r2", r_eps[1])
    queues = [f"rd-{i}" for i in range(8)]
    stalls: list[float] = []
    confirmed: dict[bytes, int] = {}
    stop = asyncio.Event()
    producing = asyncio.create_task(_publishers(r_eps, 4, queues, stalls, confirmed, stop))
    try:
        for i in range(kills + 1):
            target = len(confirmed) + 2000
            await eventually(lambda t=target: len(confirmed) >= t,  # type: ignore[misc]
                             "publishing between kills", 30)
            assert not producing.done(), producing
            if i == kills:
                break
            victim = "r1" if i % 2 == 0 else "r2"
            await nodes.routers[victim].kill()
            await nodes.start_router(victim, r_eps[0 if victim == "r1" else 1])
        stop.set()
        async with asyncio.timeout(30):
            await producing
    finally:
        stop.set()
        producing.cancel()
    stored = nodes.rows()
    dups = [b for b, k in stored.items() if k > 1]
    assert not dups, f"{len(dups)} stored twice, e.g. {dups[:3]}"
    lost = [b for b in confirmed if b not in stored]
    assert not lost, f"{len(lost)} confirmed and not stored, e.g. {lost[:3]}"
    strangers = [b for b in stored if b not in confirmed]
    assert not strangers, f"{len(strangers)} stored and never confirmed: {strangers[:3]}"
    assert max(stalls) <= 2 * HEARTBEAT * LIVENESS + 1.0, f"longest stall {max(stalls):.2f} s"
    # Consumers located through the routers drain everything, once.
    got: Counter[bytes] = Counter()
    per_queue = Counter(_queue_of(confirmed, queues))
    async with zq.Client(r_eps, name="drain") as c:
        async def drain(q: str, n: int) -> None:
            async with c.consume(q, prefetch=500) as consumer:
                for _ in range(n):
                    m = await consumer.get(timeout=10)
                    got[m.body] += 1
                    await m.ack()

        async with asyncio.timeout(60):
            await asyncio.gather(*(drain(q, per_queue[q]) for q in queues))
    assert set(got) == set(confirmed)
    assert max(got.values()) == 1


def _queue_of(confirmed: dict[bytes, int], queues: list[str]) -> list[str]:
    out = []
    for body in confirmed:
        _, i = body.decode()[1:].split("-")
        out.append(queues[(int(i) // 20) % len(queues)])
    return out


async def test_a_broker_down_answers_unavailable_and_serves_again(nodes: Nodes) -> None:
    await nodes.start_router("r1")
    router = nodes.routers["r1"].endpoint
    cfg = load(nodes.file)
    on = {b: next(n for n in (f"bd-{i}" for i in range(200)) if place(n, cfg) == b)
          for b in ("b1", "b2", "b3")}
    loop = asyncio.get_running_loop()
    async with zq.Client(router, name="producer") as c:
        for q in on.values():
            await c.publish(q, b"before")
        await nodes.brokers["b2"].kill()
        t0 = loop.time()

        async def unavailable() -> bool:
            try:
                await c.publish(on["b2"], b"while down")
            except zq.Unavailable:
                return True
            except zq.ZqError:
                return False
            return False

        await eventually(unavailable, "UNAVAILABLE for the dead broker's queue", 5, 0.05)
        assert loop.time() - t0 <= HEARTBEAT * LIVENESS + 0.5
        # The other brokers' queues are served meanwhile.
        for b in ("b1", "b3"):
            await c.publish(on[b], b"during")
        await nodes.start_broker("b2")
        t1 = loop.time()

        async def served() -> bool:
            try:
                await c.publish(on["b2"], b"after")
            except zq.ZqError:
                return False
            return True

        await eventually(served, "the restarted broker serving its queue", 5, 0.05)
        assert loop.time() - t1 <= 5.0
        stored = nodes.rows()
    assert stored[b"before"] == 3
    assert stored[b"during"] == 2
    assert stored[b"after"] >= 1
