"""Federation with real processes: three brokers, two routers (issue 12, acceptance 1, 7).

* Placement and routing: 100 queues x 500 messages published alternately through
  both routers; each queue's rows are in exactly one broker's database (read from
  the files after the brokers stop); consumers located through a router get every
  message: lost = 0, unexpected = 0, stored duplicates = 0. Over 1,000 new names
  each broker owns 33 % +- 5 points.
* Misdirected clients: a producer and a consumer pointed at a broker that does not
  own the queue get MOVED and carry on at the owner within 1 s. Then, with more
  traffic through both routers and a broker misdirected again, every router's and
  broker's STATS: the FORWARD frames the routers sent are those the brokers received
  (and back), each PUBLISH sent through a router was forwarded once, and brokers
  have links from routers only (a broker never forwards).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster
from tests.procs import Proc
from zq.cluster import load, place

IDS = ["b1", "b2", "b3"]


@dataclass
class Cluster:
    file: Path
    endpoints: dict[str, str]
    brokers: dict[str, Proc]
    routers: list[Proc]
    tmp: Path

    def db(self, broker: str) -> Path:
        return self.tmp / f"data-{broker}" / "zq.db"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    file = tmp_path / "cluster.toml"
    endpoints = write_cluster(file, IDS)
    brokers = {b: await start_cluster_broker(tmp_path, file, b) for b in IDS}
    routers = [await start_router(tmp_path, file, router_id=f"r{i}") for i in (1, 2)]
    c = Cluster(file, endpoints, brokers, routers, tmp_path)
    try:
        yield c
    finally:
        for p in [*routers, *brokers.values()]:
            await p.kill()


def rows_of(db: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [(str(q), bytes(b)) for q, b in conn.execute(
            "SELECT q.name, m.body FROM messages m JOIN queues q USING (qid)")]


async def test_placement_and_routing_through_two_routers(cluster: Cluster) -> None:
    queues = [f"orders-{i:03d}" for i in range(100)]
    per_queue = 500
    r1, r2 = (r.endpoint for r in cluster.routers)
    confirmed: dict[bytes, int] = {}
    async with zq.Client(r1, name="p1") as c1, zq.Client(r2, name="p2") as c2:
        async def produce(q: str) -> None:
            for k in range(0, per_queue, 50):
                client = c1 if (k // 50) % 2 == 0 else c2  # alternately through both
                bodies = [f"{q}/{i}".encode() for i in range(k, k + 50)]
                ids = await client.publish_many(q, bodies)
                confirmed.update(zip(bodies, ids, strict=True))

        async with asyncio.timeout(60):
            await asyncio.gather(*(produce(q) for q in queues))
    assert len(confirmed) == len(queues) * per_queue

    # The files, read while the brokers run: every confirmed message stored once, in
    # the database of the broker its queue is placed on, and nothing else.
    cfg = load(cluster.file)
    stored: Counter[bytes] = Counter()
    for b in IDS:
        for q, body in rows_of(cluster.db(b)):
            assert place(q, cfg) == b, f"{q} has rows on {b}"
            stored[body] += 1
    assert set(stored) == set(confirmed), "lost or unexpected rows"
    assert max(stored.values()) == 1, "a message stored twice"

    # Consumers located through a router receive everything, from the owner directly.
    got: Counter[bytes] = Counter()
    async with zq.Client(r1, name="consumer") as c:
        async def drain(q: str) -> None:
            async with c.consume(q, prefetch=500) as consumer:
                for _ in range(per_queue):
                    m = await consumer.get(timeout=10)
                    got[m.body] += 1
                    await m.ack()

        async with asyncio.timeout(60):
            await asyncio.gather(*(drain(q) for q in queues))
        loc = await c.locate(queues[0])
        assert loc["exists"] is True
        assert loc["broker"] == place(queues[0], cfg)
    assert set(got) == set(confirmed), "lost or unexpected messages"
    assert max(got.values()) == 1, "a message delivered twice"


async def test_new_names_spread_over_the_brokers_by_weight(cluster: Cluster) -> None:
    names = [f"spread-{i}" for i in range(1000)]
    async with zq.Client(cluster.routers[0].endpoint, name="spreader") as c:
        locs = await asyncio.gather(*(c.locate(n) for n in names))
        ids = await asyncio.gather(*(c.publish(n, b"x") for n in names[:300]))
    assert len(ids) == 300
    share = Counter(loc["broker"] for loc in locs)
    for b in IDS:
        assert abs(share[b] / len(names) - 1 / 3) <= 0.05, share
    async with zq.Client(cluster.endpoints["b1"]) as direct:
        held = set(await direct.queues())
    on_b1 = {loc["queue"] for loc in locs[:300] if loc["broker"] == "b1"}
    assert on_b1 == {n for n in held if n.startswith("spread-")}


async def test_misdirected_producer_and_consumer_carry_on_at_the_owner(
        cluster: Cluster) -> None:
    cfg = load(cluster.file)
    q = next(n for n in (f"lost-{i}" for i in range(100)) if place(n, cfg) == "b2")
    wrong = cluster.endpoints["b1"]
    loop = asyncio.get_running_loop()
    async with zq.Client(wrong, name="misdirected") as c:
        t0 = loop.time()
        mid = await c.publish(q, b"first")
        assert loop.time() - t0 < 1.0
        async with c.consume(q, prefetch=10) as consumer:
            t1 = loop.time()
            m = await consumer.get(timeout=5)
            assert loop.time() - t1 < 1.0
            assert (m.id, m.body) == (mid, b"first")
            await m.ack(wait=True)
        await c.publish(q, b"second")  # straight to the owner now
    async with zq.Client(cluster.endpoints["b1"]) as b1, \
            zq.Client(cluster.endpoints["b2"]) as b2:
        assert q not in await b1.queues()
        info = await b2.queue_info(q)
        assert info["stats"]["published"] == 2
        s1 = await b1.stats()
        assert s1["counters"]["errors_sent"] >= 2  # the MOVED answers
    # The same queue and one on each broker through both routers, alongside a client
    # misdirected again: then every router's and broker's count of what was forwarded.
    queues = [q, *(next(n for n in (f"via-{b}-{i}" for i in range(100))
                        if place(n, cfg) == b) for b in IDS)]
    sent_through_routers = await _publish_through_routers_and_one_broker(cluster, queues)
    await _check_forwarding_counts(cluster, sent_through_routers)


async def _publish_through_routers_and_one_broker(cluster: Cluster, queues: list[str]) -> int:
    """20 PUBLISH frames per queue through each router (one publish_many each) and as
    many through b1 directly, MOVED for all but its own queue; the PUBLISH frames the
    routers' clients sent, resends counted by the SDK (``resent``)."""
    r1, r2 = (r.endpoint for r in cluster.routers)
    async with zq.Client(r1, name="via-r1") as c1, zq.Client(r2, name="via-r2") as c2, \
            zq.Client(cluster.endpoints["b1"], name="misdirected-2") as c3:
        async def produce(client: zq.Client, q: str) -> None:
            for k in range(20):
                await client.publish_many(q, [f"{client.name}/{q}/{k}/{i}".encode()
                                              for i in range(5)])

        async with asyncio.timeout(30):
            await asyncio.gather(*(produce(c, q) for c in (c1, c2, c3) for q in queues))
        return 2 * 20 * len(queues) + c1.conn.resent + c2.conn.resent


async def _stats(endpoint: str) -> dict[str, Any]:
    async with zq.Client(endpoint, name="stats") as c:
        return await c.stats()


async def _check_forwarding_counts(cluster: Cluster, publishes: int) -> None:
    """No frame forwarded twice, counted on every router and broker (acceptance 7): what
    the routers sent on their links is what the brokers received on links, and the
    other way round; each PUBLISH a client sent through a router was forwarded once;
    the brokers' links are the routers' only (a broker never forwards to a broker)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while True:  # the clients' BYE frames may still be on their way to the brokers
        routers = [await _stats(r.endpoint) for r in cluster.routers]
        brokers = [await _stats(e) for e in cluster.endpoints.values()]
        out = sum(link["forwarded_out"] for s in routers for link in s["links"].values())
        back = sum(link["forwarded_in"] for s in routers for link in s["links"].values())
        got = sum(s["counters"]["forwards_in"] for s in brokers)
        sent = sum(s["counters"]["forwards_out"] for s in brokers)
        if (out, back) == (got, sent) or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert [s["counters"]["links_lost"] for s in routers] == [0, 0]  # no fault here
    assert out == got > publishes  # the PUBLISH frames, inner HELLO and BYE frames
    assert back == sent > 0
    assert sum(s["counters"]["forwarded_publishes"] for s in routers) == publishes
    links = [link for s in brokers for link in s["cluster"]["by_link"].values()]
    assert {link["name"] for link in links} == {"router r1", "router r2"}
    assert sum(link["forwards_out"] for link in links) == sent
