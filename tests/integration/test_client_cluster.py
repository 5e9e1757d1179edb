"""The SDK in a cluster (PROTOCOL.md sections 11.4 and 17), against fake nodes.

No router or clustered broker exists yet, so the nodes that say MOVED, LOCATION or
UNAVAILABLE are fakes written here: a pyzmq asyncio ROUTER socket that speaks ZQ/1
through ``zq.protocol.codec``. The brokers that store messages are real ones, in
this process, on loopback. Failover uses two real brokers; the first is stopped
abruptly (no BYE), so the client learns of it by silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

import zq
from tests.helpers import eventually, free_endpoint
from zq.broker import Broker
from zq.client.connection import Connection
from zq.client.outbox import Sent
from zq.config import BrokerConfig
from zq.protocol import codec
from zq.protocol import frames as f

Answer = Callable[[f.Frame], list[f.Frame]]


class FakeNode:
    """A node that answers HELLO with a WELCOME naming its cluster ``role``,
    HEARTBEAT with HEARTBEAT, and every other frame but BYE with what ``answer``
    returns."""

    def __init__(self, name: str, role: str, answer: Answer, heartbeat_ms: int) -> None:
        self.name = name
        self.role = role
        self.answer = answer
        self.heartbeat_ms = heartbeat_ms
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.frames: list[f.Frame] = []  # every frame received, in order

    def count(self, kind: type[Any], queue: str | None = None) -> int:
        return sum(1 for fr in self.frames if isinstance(fr, kind)
                   and (queue is None or getattr(fr, "queue", None) == queue))

    async def serve(self) -> None:
        while True:
            rid, *parts = await self.sock.recv_multipart()
            frame = codec.decode(parts)
            self.frames.append(frame)
            match frame:
                case f.Hello():
                    replies: list[f.Frame] = [f.Welcome(
                        self.name, heartbeat_ms=self.heartbeat_ms, liveness=3, max_batch=1000,
                        max_credit=1000, max_frame=1 << 20, starts=True,
                        cluster={"id": "c1", "version": 1, "node": self.name,
                                 "role": self.role})]
                case f.Heartbeat():
                    replies = [f.Heartbeat()]
                case f.Bye():
                    replies = []
                case _:
                    replies = self.answer(frame)
            for reply in replies:
                await self.sock.send_multipart([rid, *codec.encode(reply)])


@contextlib.asynccontextmanager
async def fake(name: str, role: str, answer: Answer,
               heartbeat_ms: int = 10_000) -> AsyncIterator[FakeNode]:
    node = FakeNode(name, role, answer, heartbeat_ms)
    task = asyncio.ensure_future(node.serve())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        node.sock.close(linger=0)
        node.ctx.term()


class Real:
    """A real broker in this process that can also die abruptly. In memory, or on
    SQLite in ``data``: a durable broker confirms only after its commit, which
    :meth:`hold` keeps from ever ending."""

    def __init__(self, data: Path | None = None) -> None:
        storage = {"storage": "memory"} if data is None else {"data": str(data)}
        self.broker = Broker(BrokerConfig(bind="tcp://127.0.0.1:*", heartbeat=0.1,
                                          liveness=3, **storage))  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None
        self.holding = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return self.broker.endpoint

    async def start(self) -> Real:
        ready = asyncio.Event()
        self.task = asyncio.ensure_future(self.broker.run(lambda _ep: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        return self

    def hold(self) -> None:
        """From now on PUBLISH frames are taken and never answered (the commit hangs)."""
        async def never(batch: Any) -> None:
            self.holding.set()
            await asyncio.Event().wait()

        self.broker.store.commit = never  # type: ignore[method-assign]

    async def kill(self) -> None:
        """Stop at once: no BYE, no frame at all; the socket just goes away."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.broker.request_stop()
            await asyncio.wait_for(self.task, 10)

    async def ready(self, queue: str) -> int:
        """Messages ready in ``queue``, as the broker tells any client."""
        async with zq.Client(self.endpoint) as c:
            return int((await c.queue_info(queue))["stats"]["ready"])


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Real] = []

    async def make(durable: bool = False) -> Real:
        data = tmp_path / f"data{len(started)}" if durable else None
        node = await Real(data).start()
        started.append(node)
        return node

    yield make
    for node in started:
        await node.stop()


def moved_to(endpoint: str, queue: str = "q") -> dict[str, Any]:
    return {"queue": queue, "broker": "b", "endpoint": endpoint, "version": 1}


def error(code: int, name: str, op: int, ref: Any, info: dict[str, Any] | None) -> f.Error:
    return f.Error(code, name, f"{name.lower()} (fake)", op, ref, info)


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
