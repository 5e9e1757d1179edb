"""No message stays in flight for ever because its headers outgrew a DELIVER frame.

Issue 10, acceptance 2, on a real broker: the two repros of the hostile test end
with the message delivered again (its history trimmed to fit) within a second,
and the SDK drops nothing in silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import zq
from tests.procs import Proc
from tests.system.rawpeer import Raw
from zq import history
from zq.protocol import codec
from zq.protocol import frames as f

Factory = Callable[..., Awaitable[Proc]]


async def test_the_biggest_headers_accepted_plus_a_long_nack_still_deliver(
        broker_factory: Factory) -> None:
    broker = await broker_factory("--heartbeat", "0.5")
    async with zq.Client(broker.endpoint, name="c") as c:
        limits = c.conn.limits
        # The old repro: 4 MiB - 200 bytes of headers was accepted, then undeliverable.
        with pytest.raises(zq.FrameTooLarge, match="max_frame"):
            await c.publish("big", b"x", headers={"k": "v" * (4 * 1024 * 1024 - 200)})
        room = codec.header_budget(1, limits) - codec.reserve(limits)
        hdr = {"k": "v" * (room - 16)}
        while not codec.fits_stored(1, codec.header_size(hdr), limits):
            hdr["k"] = hdr["k"][:-1]
        mid = await c.publish("big", b"x", headers=hdr)
        async with c.consume("big", prefetch=1) as con:
            m = await con.get(timeout=5)
            await m.nack(reason="r" * 1000)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            m = await con.get(timeout=1)
            assert loop.time() - t0 < 1.0
            assert (m.id, m.attempt, m.headers["k"]) == (mid, 2, hdr["k"])
            assert [e["reason"] for e in m.history] == ["r" * 1000]
            await m.ack(wait=True)
        assert list(c.conn.errors) == []  # nothing dropped or refused on the way


async def test_a_peer_with_a_huge_name_nacking_again_and_again(
        broker_factory: Factory, raw: Callable[[str], Raw]) -> None:
    broker = await broker_factory("--heartbeat", "0.5")
    async with zq.Client(broker.endpoint, name="producer") as c:
        mid = await c.publish("named", b"x")
        peer = raw(broker.endpoint)
        await peer.send(codec.encode(f.Hello("n" * 1_500_000)))  # 1.5 MB of name
        assert isinstance(await peer.recv(), f.Welcome)
        for attempt in (1, 2, 3):
            await peer.send(codec.encode(f.Credit("named", 1)))
            d = await peer.recv()
            assert isinstance(d, f.Deliver)
            assert (d.ids, d.attempts) == ([mid], [attempt])
            await peer.send(codec.encode(f.Nack(d.ids, d.attempts, True, 0, "no")))
        await peer.send(codec.encode(f.Bye("done")))
        async with c.consume("named", prefetch=1) as con:
            m = await con.get(timeout=1)
            assert (m.id, m.attempt) == (mid, 4)
            assert [e["consumer"] for e in m.history] == ["n" * history.MAX_NAME] * 3
            await m.ack(wait=True)
        assert list(c.conn.errors) == []


async def test_an_undecodable_deliver_is_reported_and_given_back(
        broker_factory: Factory) -> None:
    """The SDK side: a DELIVER it cannot decode is kept in ``errors``, logged, and
    NACKed, so the broker retries or dead-letters it instead of leaving it leased.
    (The broker no longer builds such frames; a client with smaller limits than
    the broker's stands in for one that did.)"""
    broker = await broker_factory("--heartbeat", "0.5")
    async with zq.Client(broker.endpoint, name="c") as c:
        await c.declare_queue("odd", max_attempts=2)
        mid = await c.publish("odd", b"y" * 20_000)
        conn = c.conn
        conn.limits = codec.Limits(max_frame=16_000, max_batch=conn.limits.max_batch)
        async with c.consume("odd", prefetch=1) as con:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3
            while "odd.dlq" not in await c.queues():
                assert loop.time() < deadline, "the undecodable delivery was never returned"
                await asyncio.sleep(0.02)
            assert con.buffered == 0
        assert [e.name for e in conn.errors] == ["FRAME_TOO_LARGE"] * 2
        with pytest.raises(zq.FrameTooLarge):  # an undecodable reply fails its request
            await asyncio.wait_for(c.peek("odd.dlq"), 5)  # the 20 kB dead letter
        conn.limits = codec.Limits(max_batch=conn.limits.max_batch)
        [dead] = await c.peek("odd.dlq")
        assert dead["id"] == mid
        assert "could not decode the DELIVER" in dead["headers"]["zq-reason"]
