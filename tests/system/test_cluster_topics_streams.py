"""Topics and streams in a cluster (issue 17): a topic and the queues bound to it live on
one broker, as a stream and its groups do: the broker their names are placed on by the
cluster file (a pin puts a prefix's names together). Real brokers and a router."""

from __future__ import annotations

from pathlib import Path

import pytest

import zq
from tests.cluster_helpers import start_cluster_broker, start_router, write_cluster, zq_cli
from tests.procs import Proc
from zq.cluster.config import load
from zq.cluster.placement import place


def _named_on(cluster: Path, broker: str, prefix: str) -> str:
    """A name that the cluster file places on ``broker`` (by the hash)."""
    cfg = load(cluster)
    return next(n for i in range(1000) if place(n := f"{prefix}{i}", cfg) == broker)


async def test_a_topic_its_queues_and_a_stream_live_where_their_names_are_placed(
        tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    eps = write_cluster(cluster, ["b1", "b2"], extra='[pins]\n"shop." = "b2"\n')
    procs: list[Proc] = []
    try:
        for b in ("b1", "b2"):
            procs.append(await start_cluster_broker(tmp_path, cluster, b))
        router = await start_router(tmp_path, cluster)
        procs.append(router)
        elsewhere = _named_on(cluster, "b1", "other-")
        async with zq.Client(router.endpoint, name="shop") as c:
            # The pin puts the topic and its queues on b2: bound through the router.
            assert await c.bind("shop.events", "shop.billing")
            assert await c.bind("shop.events", "shop.eu", pattern="shop.eu.#")
            with pytest.raises(zq.InvalidArgument, match="pin"):
                await c.bind("shop.events", elsewhere)  # placed on b1: not with its topic
            first = await c.publish(None, b"order-1", topic="shop.events", key="shop.eu.paid")
            await c.publish(None, b"order-2", topic="shop.events", key="shop.us.paid")
            async with c.consume("shop.billing") as billing:
                got = [(await billing.get(10)) for _ in range(2)]
                assert [m.body for m in got] == [b"order-1", b"order-2"]
                for m in got:
                    await m.ack()
            async with c.consume("shop.eu") as eu:
                m = await eu.get(10)
                assert (m.id, m.body) == (first + 1, b"order-1")
                await m.ack()
            # A topic placed on b1 by the hash, with a queue placed there too.
            topic, queue = _named_on(cluster, "b1", "t-"), _named_on(cluster, "b1", "q-")
            assert await c.bind(topic, queue)
            await c.publish(None, b"b1", topic=topic, key="k")

            # A stream and its groups, on the broker of the stream's name.
            made = await c.declare_stream("shop.log")
            assert made["created"]
            ids = await c.publish_many("shop.log", [b"e%d" % i for i in range(50)])
            async with c.consume("shop.log", group="audit", start="first") as audit:
                seen = [(await audit.get(10)) for _ in range(50)]
                assert [m.offset for m in seen] == ids
                for m in seen:
                    await m.ack()
            assert (await c.stream("shop.log"))["groups"][0]["committed"] == ids[-1]

        async with zq.Client(eps["b2"]) as b2, zq.Client(eps["b1"]) as b1:
            assert [t["topic"] for t in await b2.topics()] == ["shop.events"]
            assert [t["topic"] for t in await b1.topics()] == [topic]
            assert (await b1.queue_info(queue))["stats"]["ready"] == 1
            assert [s["stream"] for s in await b2.streams()] == ["shop.log"]
            assert await b1.streams() == []
            with pytest.raises(zq.Moved):  # b1 is not where the name goes
                await b1._nodes.main.manage("stream_declare", {"stream": "shop.other"})
        code, text = await zq_cli("queue", "move", "shop.billing", "--to", "b1",
                                  "--endpoint", eps["b2"])
        assert code != 0
        assert "bound to topic" in text, text
    finally:
        for p in reversed(procs):
            await p.terminate_and_expect_exit(0, within=10)
