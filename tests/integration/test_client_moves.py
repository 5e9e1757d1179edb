"""What a client sends elsewhere when a node it talks to is lost (PROTOCOL.md 11.4, 17).

* Publishes without an answer on a **side** connection (one opened to follow a
  MOVED) go, with their seqs, to where the queue is now: through the main node
  when it is a router, else to the broker a LOCATE through the main node names
  (waited for within ``connect_timeout`` when that is the lost broker itself).
* Requests without an answer on the **main** connection: those that are safe to
  send twice (reads, ``declare``, ...) go to the next endpoint that answers; the
  others fail with ``zq.ConnectionLost``, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import zq
from tests.helpers import eventually
from tests.integration.cluster_fakes import error, fake, location, moved_to
from zq.protocol import frames as f

MOVED = 22


# ------------------------------------------------------------ publishes on a side connection


async def test_publishes_lost_on_a_side_connection_go_through_the_router_with_their_seqs(
        real: Callable[..., Any], adopted: list[tuple[str, list[int]]]) -> None:
    b = await real(durable=True)
    b.hold()  # B takes what the client sends it and never answers
    seen: list[int] = []  # seqs of PUBLISH frames for q the router got

    def answer(fr: f.Frame) -> list[f.Frame]:
        # The router's view: q is on B (MOVED, once); what comes back after B was
        # lost it forwards to where q is now, which confirms it (ids from 500).
        if isinstance(fr, f.Publish) and fr.queue == "q":
            seen.append(fr.seq)
            if len(seen) == 1:
                return [error(MOVED, "MOVED", f.PUBLISH, fr.seq, moved_to(b.endpoint))]
            return [f.Confirm([(fr.seq, 500 + 10 * len(seen), len(fr.bodies))])]
        return []

    async with fake("r", "router", answer, heartbeat_ms=100) as r, \
            zq.Client(r.endpoint, connect_timeout=3) as c:
        first = asyncio.ensure_future(c.publish("q", b"one"))
        await asyncio.wait_for(b.holding.wait(), 5)  # it went to B, which holds it
        more = asyncio.ensure_future(c.publish_many("q", [b"two", b"three"]))  # to B too
        side = c._nodes.pool.alive(b.endpoint)
        assert side is not None
        await eventually(lambda: side.unconfirmed == 3, "both frames to wait on B")
        assert (len(adopted), len(seen)) == (1, 1)
        await b.kill()  # B dies without a word: the side connection gives it up
        assert await asyncio.wait_for(asyncio.gather(first, more), 5) == [520, [530, 531]]
        assert [ep for ep, _ in adopted] == [b.endpoint, r.endpoint]
        assert adopted[1][1] == seen[1:]  # what B had no answer for, with its seqs
        assert seen[0] == seen[1]  # the first seq: the frame MOVED, then resent
        assert await c.publish("q", b"four") == 540  # through the router, straight
        assert c.conn.resent == 2


async def test_publishes_lost_on_a_side_connection_go_where_locate_says(
        real: Callable[..., Any], adopted: list[tuple[str, list[int]]]) -> None:
    b, c_node = await real(durable=True), await real()
    b.hold()

    def answer(fr: f.Frame) -> list[f.Frame]:  # a broker that says q is on B, then on C
        if isinstance(fr, f.Publish) and fr.queue == "q":
            return [error(MOVED, "MOVED", f.PUBLISH, fr.seq, moved_to(b.endpoint))]
        if isinstance(fr, f.Locate):
            return [location(fr.req, fr.queue, c_node.endpoint)]
        return []

    async with fake("a", "broker", answer, heartbeat_ms=100) as a, \
            zq.Client(a.endpoint, connect_timeout=3) as c:
        pub = asyncio.ensure_future(c.publish("q", b"one"))
        await asyncio.wait_for(b.holding.wait(), 5)
        await b.kill()
        assert await asyncio.wait_for(pub, 5) == 1  # C's id
        [(_, seqs_b), (ep, seqs_c)] = adopted
        assert (ep, seqs_c) == (c_node.endpoint, seqs_b)  # to C, with its seq
        assert a.count(f.Locate) == 1
        assert await c.publish("q", b"two") == 2  # straight to C now
        assert a.count(f.Publish, "q") == 1
        assert await c_node.ready("q") == 2


async def test_a_side_connection_s_broker_back_within_connect_timeout_takes_them_again(
        real: Callable[..., Any], adopted: list[tuple[str, list[int]]]) -> None:
    b = await real(durable=True)

    def answer(fr: f.Frame) -> list[f.Frame]:  # q is on B, always
        if isinstance(fr, f.Publish) and fr.queue == "q":
            return [error(MOVED, "MOVED", f.PUBLISH, fr.seq, moved_to(b.endpoint))]
        if isinstance(fr, f.Locate):
            return [location(fr.req, fr.queue, b.endpoint)]
        return []

    async with fake("a", "broker", answer, heartbeat_ms=100) as a, \
            zq.Client(a.endpoint, connect_timeout=5) as c:
        assert await c.publish("q", b"zero") == 1
        side = c._nodes.pool.alive(b.endpoint)
        assert side is not None
        b.hold()
        pub = asyncio.ensure_future(c.publish("q", b"one"))
        await asyncio.wait_for(b.holding.wait(), 5)
        await b.kill()
        await eventually(lambda: side.broken is not None, "the client to give B up")
        await real(again=b)  # B is back on its endpoint and data folder
        assert await asyncio.wait_for(pub, 5) == 2  # stored once, after the restart
        # "zero" went to B after its MOVED; "one" straight, then again after the loss.
        assert [ep for ep, _ in adopted] == [b.endpoint, b.endpoint]
        assert c.conn.resent == 0  # not through A
        assert a.count(f.Locate) == 1


async def test_publishes_lost_on_a_side_connection_fail_if_their_broker_stays_away(
        real: Callable[..., Any]) -> None:
    b = await real(durable=True)

    def answer(fr: f.Frame) -> list[f.Frame]:
        if isinstance(fr, f.Publish) and fr.queue == "q":
            return [error(MOVED, "MOVED", f.PUBLISH, fr.seq, moved_to(b.endpoint))]
        if isinstance(fr, f.Locate):
            return [location(fr.req, fr.queue, b.endpoint)]
        return []

    async with fake("a", "broker", answer, heartbeat_ms=100) as a, \
            zq.Client(a.endpoint, connect_timeout=0.5) as c:
        b.hold()
        pub = asyncio.ensure_future(c.publish("q", b"one"))
        await asyncio.wait_for(b.holding.wait(), 5)
        await b.kill()
        with pytest.raises(zq.ConnectionLost):
            await asyncio.wait_for(pub, 5)
        assert a.count(f.Locate) == 1


# ------------------------------------------------------------ requests on the main connection


def _silent(fr: f.Frame) -> list[f.Frame]:
    return []  # takes every request, answers none


def _answering(fr: f.Frame) -> list[f.Frame]:
    match fr:
        case f.Manage(req=req, op=op, args=args):
            return [f.ManageReply(req, {"op": op, "queue": args.get("queue"), "node": "b"})]
        case f.Stats(req=req):
            return [f.StatsReply(req, {"node": "b"})]
        case f.Locate(req=req, queue=queue):
            return [location(req, queue, "tcp://127.0.0.1:9")]
    return []


async def test_requests_safe_to_send_twice_move_to_the_next_node_the_others_fail() -> None:
    # Two cluster brokers (a router would take no MANAGE without a queue, as sync).
    async with fake("a", "broker", _silent, heartbeat_ms=100) as a, \
            fake("b", "broker", _answering, heartbeat_ms=100) as b, \
            zq.Client([a.endpoint, b.endpoint], connect_timeout=3) as c:
        moving = {
            "info": c.queue_info("q"), "declare": c._manage("declare", {"queue": "q"}),
            "peek": c._manage("peek", {"queue": "q"}), "list": c._manage("list", {}),
            "stats": c.stats(), "locate": c.locate("q"), "sync": c.sync(),
        }
        failing = {"purge": c.purge_queue("q"), "delete": c.delete_queue("q"),
                   "redrive": c._manage("redrive", {"queue": "q.dlq"})}
        tasks = {k: asyncio.ensure_future(v) for k, v in {**moving, **failing}.items()}
        await eventually(lambda: a.count(f.Manage) + a.count(f.Stats) + a.count(f.Locate)
                         == len(tasks), "every request to reach A")
        await a.kill()
        await asyncio.wait(tasks.values(), timeout=5)
        for k in moving:
            assert tasks[k].done(), k
            assert tasks[k].exception() is None, (k, tasks[k])
        assert tasks["info"].result()["node"] == "b"
        assert tasks["stats"].result() == {"node": "b"}
        assert tasks["locate"].result()["endpoint"] == "tcp://127.0.0.1:9"
        for k in failing:
            assert isinstance(tasks[k].exception(), zq.ConnectionLost), (k, tasks[k])
        ops = sorted(fr.op for fr in b.frames if isinstance(fr, f.Manage))
        assert ops == ["declare", "info", "list", "peek", "sync"]
        assert c.endpoint == b.endpoint


async def test_with_one_endpoint_a_request_fails_when_its_node_is_lost() -> None:
    async with fake("a", "router", _silent, heartbeat_ms=100) as a, \
            zq.Client(a.endpoint) as c:
        info = asyncio.ensure_future(c.queue_info("q"))
        await eventually(lambda: a.count(f.Manage) == 1, "the request to reach A")
        await a.kill()
        with pytest.raises(zq.ConnectionLost):
            await asyncio.wait_for(info, 5)
