"""The SDK in a cluster (PROTOCOL.md sections 11.4 and 17), against fake nodes.

The nodes that say MOVED, LOCATION or UNAVAILABLE are fakes
(:mod:`tests.integration.cluster_fakes`): a pyzmq asyncio ROUTER socket that speaks
ZQ/1 through ``zq.protocol.codec``. The brokers that store messages are real ones, in
this process, on loopback. Failover uses two real brokers; the first is stopped
abruptly (no BYE), so the client learns of it by silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import zq
from tests.helpers import eventually, free_endpoint
from tests.integration.cluster_fakes import error, fake, location, moved_to
from zq.protocol import frames as f

# ------------------------------------------------------------ MOVED: publishes


async def test_a_moved_publish_goes_to_the_broker_named_and_the_next_goes_there_straight(
        real: Callable[[], Any], adopted: list[tuple[str, list[int]]]) -> None:
    b = await real()

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Publish) and fr.queue == "q":
            return [error(22, "MOVED", f.PUBLISH, fr.seq, moved_to(b.endpoint))]
        if isinstance(fr, f.Manage) and fr.op == "sync":
            return [f.ManageReply(fr.req, {})]
        return []

    async with fake("a", "broker", answer) as a, zq.Client(a.endpoint) as c:
        first = await c.publish("q", b"one")
        assert a.count(f.Publish, "q") == 1
        [moved] = [fr for fr in a.frames if isinstance(fr, f.Publish)]
        assert adopted == [(b.endpoint, [moved.seq])]  # the same seq, sent to B
        assert await b.ready("q") == 1
        second = await c.publish("q", b"two")
        more = await c.publish_many("q", [b"three", b"four"])
        assert [second, *more] == [first + 1, first + 2, first + 3]  # B's ids
        await c.sync()  # A has read every frame sent to it before
        assert a.count(f.Manage) == 1
        assert a.count(f.Publish, "q") == 1  # A saw nothing more for q
        assert await b.ready("q") == 4
        assert c.endpoint == a.endpoint  # the main node is still A


async def test_a_queue_operation_follows_moved_too(real: Callable[..., Any]) -> None:
    b = await real()

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Manage) and fr.args.get("queue") == "m":
            return [error(22, "MOVED", f.MANAGE, fr.req, moved_to(b.endpoint, "m"))]
        if isinstance(fr, f.Manage):
            return [f.ManageReply(fr.req, {})]
        return []

    async with fake("a", "broker", answer) as a, zq.Client(a.endpoint) as c:
        settings = await c.declare_queue("m", max_length=7)
        assert settings["max_length"] == 7  # B's answer
        assert (await c.queue_info("m"))["settings"]["max_length"] == 7  # straight to B
        assert [fr.op for fr in a.frames if isinstance(fr, f.Manage)] == ["declare"]
        await c.sync()  # on A and on B
        assert [fr.op for fr in a.frames if isinstance(fr, f.Manage)] == ["declare", "sync"]


async def test_a_publish_follows_three_moves_then_fails_with_moved() -> None:
    endpoint: list[str] = []

    def answer(fr: f.Frame) -> list[f.Frame]:  # "it is here", said again and again
        assert isinstance(fr, f.Publish)
        return [error(22, "MOVED", f.PUBLISH, fr.seq, moved_to(endpoint[0]))]

    async with fake("a", "broker", answer) as a, zq.Client(a.endpoint) as c:
        endpoint.append(a.endpoint)
        with pytest.raises(zq.Moved) as caught:
            await c.publish("q", b"x")
        seqs = [fr.seq for fr in a.frames if isinstance(fr, f.Publish)]
        assert len(seqs) == 4  # the first answer and three hops
        assert len(set(seqs)) == 1  # always the same frame
        assert caught.value.info["endpoint"] == a.endpoint  # type: ignore[attr-defined]


async def test_sync_with_a_router_as_main_node_asks_the_brokers_only(
        real: Callable[..., Any]) -> None:
    b = await real()

    def answer(fr: f.Frame) -> list[f.Frame]:  # as a router: MANAGE must name a queue
        if isinstance(fr, f.Manage) and "queue" not in fr.args:
            return [error(16, "INVALID_ARGUMENT", f.MANAGE, fr.req, None)]
        if isinstance(fr, f.Locate):
            return [location(fr.req, fr.queue, b.endpoint)]
        return []

    async with fake("r", "router", answer) as r, zq.Client(r.endpoint) as c:
        await c.sync()  # nothing to ask: no broker yet
        async with c.consume("q") as consumer:
            await c.sync()  # the broker the consumer is on
            assert consumer.connection.endpoint == b.endpoint
        assert r.count(f.Manage) == 0


async def test_unavailable_fails_the_publish_as_a_retriable_error() -> None:
    def answer(fr: f.Frame) -> list[f.Frame]:
        assert isinstance(fr, f.Publish)
        return [error(21, "UNAVAILABLE", f.PUBLISH, fr.seq, {"broker": "b1"})]

    async with fake("r", "router", answer) as r, zq.Client(r.endpoint) as c:
        with pytest.raises(zq.Unavailable) as caught:
            await c.publish("q", b"x")
        assert caught.value.retriable
        assert r.count(f.Publish) == 1


# ------------------------------------------------------------ consumers


async def test_a_consumer_whose_credit_is_moved_consumes_from_the_broker_named(
        real: Callable[[], Any]) -> None:
    b = await real()

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Credit):
            return [error(22, "MOVED", f.CREDIT, fr.queue, moved_to(b.endpoint, fr.queue))]
        return []

    async with fake("a", "broker", answer) as a, zq.Client(a.endpoint) as c, \
            zq.Client(b.endpoint) as producer:
        await producer.publish("q", b"waiting on B")
        async with c.consume("q", prefetch=5) as consumer:
            m = await consumer.get(timeout=5)
            assert m.body == b"waiting on B"
            assert consumer.connection.endpoint == b.endpoint
            await m.ack(wait=True)  # on B, where it came from
            await producer.publish("q", b"next")
            assert (await consumer.get(timeout=5)).body == b"next"
        await eventually(lambda: a.count(f.Cancel) > 0, "the CANCEL to reach A")
        assert [type(fr) for fr in a.frames if isinstance(fr, f.Credit | f.Cancel)] == [
            f.Credit, f.Cancel]  # one credit refused, then the consumer left A
        assert await b.ready("q") == 0


async def test_through_a_router_a_consumer_locates_its_broker_and_consumes_there(
        real: Callable[[], Any]) -> None:
    b = await real()

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Locate):
            return [f.Location(fr.req, {"queue": fr.queue, "broker": "b",
                                        "endpoint": b.endpoint, "version": 1,
                                        "exists": True})]
        return []

    async with fake("r", "router", answer) as r, zq.Client([r.endpoint]) as c, \
            zq.Client(b.endpoint) as producer:
        loc = await c.locate("jobs")
        assert (loc["endpoint"], loc["exists"]) == (b.endpoint, True)
        await producer.publish("jobs", b"j1")
        async for m in c.consume("jobs", prefetch=2):
            assert m.body == b"j1"
            await m.ack(wait=True)
            break
        assert r.count(f.Locate) == 2
        assert r.count(f.Credit) == 0  # consumers never ask a router for messages


async def test_a_consumer_whose_broker_is_lost_locates_it_again_until_a_node_answers(
        real: Callable[..., Any]) -> None:
    b1, b2 = await real(), await real()
    owner = [b1.endpoint]  # where the fake router says the queue is

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Locate):
            return [f.Location(fr.req, {"queue": fr.queue, "broker": "b", "endpoint": owner[0],
                                        "version": 1, "exists": True})]
        return []

    async with fake("r", "router", answer, heartbeat_ms=100) as r, \
            zq.Client(r.endpoint) as c, zq.Client(b2.endpoint) as producer:
        async with c.consume("q", prefetch=2) as consumer:
            assert consumer.connection.endpoint == b1.endpoint
            owner[0] = b2.endpoint  # the queue is taken over by B2...
            await b1.kill()  # ...and B1 dies without a word
            await producer.publish("q", b"on B2")
            await eventually(lambda: consumer.connection.endpoint == b2.endpoint,
                             "the consumer to move to B2")
            await c.wait_connected(timeout=5)
            m = await consumer.get(timeout=5)
            assert m.body == b"on B2"
            await m.ack(wait=True)
        assert r.count(f.Locate) >= 2  # once to place it, then again after the loss
        assert c.endpoint == r.endpoint


async def test_locate_needs_a_cluster_node(real: Callable[[], Any]) -> None:
    b = await real()
    async with zq.Client(b.endpoint) as c:
        with pytest.raises(zq.InvalidArgument, match="not a cluster node"):
            await c.locate("q")


# ------------------------------------------------------------ endpoints and failover


async def test_the_client_connects_to_the_first_endpoint_that_answers(
        real: Callable[[], Any]) -> None:
    b = await real()
    dead = free_endpoint()
    async with zq.Client(f"{dead}, {b.endpoint}", connect_timeout=1.0) as c:
        assert c.endpoints == (dead, b.endpoint)
        assert c.endpoint == b.endpoint
        assert await c.publish("q", b"x") == 1
    with pytest.raises(zq.ConnectionLost, match="no zq node answered"):
        async with zq.Client([free_endpoint(), free_endpoint()], connect_timeout=0.4):
            pass


async def test_zq_endpoint_may_name_several_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZQ_ENDPOINT", "tcp://127.0.0.1:1, tcp://127.0.0.1:2")
    c = zq.Client()
    assert c.endpoints == ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert c.endpoint == "tcp://127.0.0.1:1"  # before connecting: the first
    assert zq.Client(("tcp://h:1",)).endpoints == ("tcp://h:1",)


async def test_failover_resends_unanswered_publishes_with_their_seqs_to_the_next_node(
        real: Callable[..., Any], adopted: list[tuple[str, list[int]]]) -> None:
    a, b = await real(durable=True), await real()
    # After A, an endpoint where nothing answers: it holds the failover up for a
    # third of connect_timeout, while new publishes wait.
    async with zq.Client([a.endpoint, free_endpoint(), b.endpoint], connect_timeout=3) as c:
        assert await c.publish("q", b"stored on A") == 1
        consumer = c.consume("r", prefetch=3)
        await consumer.__aenter__()
        a.hold()  # A takes the next publishes and never answers them
        taken = [asyncio.ensure_future(c.publish("q", b"m%d" % i)) for i in range(20)]
        await asyncio.wait_for(a.holding.wait(), 5)
        await a.kill()  # then dies without a word
        unheard = [asyncio.ensure_future(c.publish("q", b"late%d" % i)) for i in range(5)]
        await eventually(lambda: not c.connected, "the client to give A up", timeout=5)
        waiting = asyncio.ensure_future(c.publish("q", b"while failing over"))
        ids = await asyncio.wait_for(asyncio.gather(*taken, *unheard), 10)
        assert sorted(ids) == list(range(1, 26))  # B's ids: each stored there once
        assert await asyncio.wait_for(waiting, 10) == 26
        assert c.endpoint == b.endpoint
        assert await b.ready("q") == 26
        [seqs] = [seqs for ep, seqs in adopted if ep == b.endpoint]
        assert len(seqs) == len(set(seqs)) >= 2  # the frames A took, then those after
        assert c.conn.resent == len(seqs)
        # The consumer followed the main connection to B.
        await c.wait_connected(timeout=5)
        await c.publish("r", b"for the consumer")
        assert (await consumer.get(timeout=5)).body == b"for the consumer"
        await consumer.close()


async def test_failover_fails_publishes_with_connection_lost_only_if_no_node_answers(
        real: Callable[..., Any]) -> None:
    a = await real(durable=True)
    async with zq.Client([a.endpoint, free_endpoint()], connect_timeout=0.5) as c:
        await c.publish("q", b"x")
        a.hold()
        pub = asyncio.ensure_future(c.publish("q", b"y"))
        await asyncio.wait_for(a.holding.wait(), 5)
        await a.kill()
        with pytest.raises(zq.ConnectionLost):
            await asyncio.wait_for(pub, 10)
        await eventually(lambda: not c.connected, "the client to notice")
        with pytest.raises(zq.ConnectionLost):
            await c.publish("q", b"z")
