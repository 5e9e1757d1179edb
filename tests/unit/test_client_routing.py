"""The client's routing rules without I/O: endpoints, failover order, the MOVED hop
rules, the queue → broker map, one seq space per client, and frames that change
connection (handed over on failover, adopted after a MOVED) with their seqs."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Any

import pytest

from zq.client import routing
from zq.client.consumer import Consumer
from zq.client.dispatch import Dispatch
from zq.client.outbox import Outbox, Sent, Seqs
from zq.client.requests import Requests
from zq.client.session import Session
from zq.errors import Moved, Unavailable, ZqError
from zq.protocol import codec
from zq.protocol import frames as f

W = f.Welcome("b", heartbeat_ms=1000, liveness=3, max_batch=100, max_credit=1000,
              max_frame=1 << 20, starts=True)


def fut() -> Future[Any]:
    return Future()


# ------------------------------------------------------------ endpoints


def test_endpoints_from_a_string_a_comma_list_or_a_sequence() -> None:
    assert routing.endpoints("tcp://a:1") == ("tcp://a:1",)
    assert routing.endpoints("tcp://a:1, tcp://b:2,") == ("tcp://a:1", "tcp://b:2")
    assert routing.endpoints(["tcp://a:1", "tcp://b:2,tcp://c:3"]) == (
        "tcp://a:1", "tcp://b:2", "tcp://c:3")
    assert routing.endpoints(("tcp://a:1", "tcp://a:1")) == ("tcp://a:1",)  # repeats go


@pytest.mark.parametrize("bad", ["", " , ", [], ["tcp://a:1", 5]])
def test_no_endpoint_or_a_bad_one_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        routing.endpoints(bad)


def test_failover_tries_the_next_endpoints_and_the_lost_one_last() -> None:
    eps = ("a", "b", "c")
    assert routing.failover_order(eps, "a") == ["b", "c", "a"]
    assert routing.failover_order(eps, "b") == ["c", "a", "b"]
    assert routing.failover_order(eps, "c") == ["a", "b", "c"]
    assert routing.failover_order(eps, "x") == ["a", "b", "c"]  # not one of ours


def test_connect_timeout_is_split_fairly_among_the_endpoints_left() -> None:
    assert routing.attempt_timeout(6.0, 3) == 2.0
    assert routing.attempt_timeout(5.9, 1) == 5.9  # the last gets all that is left
    assert routing.attempt_timeout(-1.0, 2) == 0.0


# ------------------------------------------------------------ MOVED


def test_a_moved_frame_follows_at_most_three_hops() -> None:
    info = {"queue": "q", "broker": "b2", "endpoint": "tcp://b2:1", "version": 4}
    assert [routing.next_hop(info, h) for h in range(5)] == [
        "tcp://b2:1", "tcp://b2:1", "tcp://b2:1", None, None]
    assert routing.MAX_HOPS == 3


@pytest.mark.parametrize("info", [None, {}, {"endpoint": ""}, {"endpoint": 5}, {"queue": "q"}])
def test_a_moved_without_an_endpoint_is_the_answer(info: Any) -> None:
    assert routing.next_hop(info, 0) is None


def test_a_consumer_follows_three_moves_in_a_row_then_starts_over_after_a_quiet_window() -> None:
    hops = routing.Hops(window=5.0)
    assert [hops.allow(t) for t in (10.0, 10.1, 10.2)] == [True, True, True]
    assert not hops.allow(14.9)  # a fourth within 5 s of the first: a loop
    assert hops.allow(15.3)  # quiet for more than the window: a new move
    assert hops.allow(15.4)


def test_router_and_location_maps() -> None:
    assert routing.is_router({"id": "c", "version": 1, "node": "r1", "role": "router"})
    assert not routing.is_router({"id": "c", "version": 1, "node": "b1", "role": "broker"})
    assert not routing.is_router(None)
    assert routing.located({"endpoint": "tcp://b:1", "exists": True}) == "tcp://b:1"
    assert routing.located({"exists": False}) is None


def test_routes_remember_the_latest_queues_and_forget_a_lost_broker() -> None:
    routes = routing.Routes(limit=3)
    for q, ep in (("a", "e1"), ("b", "e2"), ("c", "e1")):
        routes.remember(q, ep)
    assert routes.get("a") == "e1"  # used: now the most recent
    routes.remember("d", "e2")  # over the limit: the least recently used ("b") goes
    assert list(routes.table) == ["c", "a", "d"]
    assert routes.get("b") is None
    routes.remember("c", "e3")  # a newer MOVED wins
    assert routes.get("c") == "e3"
    assert routes.forget_endpoint("e2") == 1
    assert list(routes.table) == ["a", "c"]
    routes.forget("a")
    routes.forget("nothing")
    assert len(routes) == 1
    with pytest.raises(ValueError, match="limit"):
        routing.Routes(limit=0)


# ------------------------------------------------------------ one seq space per client


def test_connections_of_one_client_never_share_a_seq() -> None:
    seqs = Seqs()
    main, side = Outbox(seqs), Outbox(seqs)
    main.publish("q", b"1", None, fut())
    side.publish("r", b"2", None, fut())
    main.control(codec.encode(f.Stats(main.next_seq())))  # request numbers share it
    side.publish_frame("r", [b"3", b"4"], [], fut())
    seen = [fr.seq if isinstance(fr, f.Publish) else fr.req  # type: ignore[union-attr]
            for o in (main, side) for fr in map(codec.decode, o.take())]
    assert sorted(seen) == [1, 2, 3, 4]
    assert main.seq == side.seq == seqs.last == 4
    assert Outbox().seq == 0  # an outbox on its own counts alone, as before


def test_a_lost_connection_hands_over_its_unanswered_publishes_with_their_seqs() -> None:
    seqs = Seqs()
    old, new = Outbox(seqs), Outbox(seqs)
    confirmed, a, b = fut(), fut(), fut()
    old.publish("q", b"0", None, confirmed)
    old.publish("q", b"1", None, a)
    first = old.take()  # PUBLISH 1: [b"0", b"1"]
    old.publish("r", b"2", {"h": 1}, b)  # still coalescing when the node is lost
    old.ack(7, 1)
    sent = old.hand_over()
    assert [s.frame.seq for s in sent] == [1, 2]
    assert old.unconfirmed == 0
    assert old.sent == {}
    assert [codec.decode(p) for p in old.take()] == [f.Ack([7], [1])]  # no PUBLISH here
    new.adopt(sent)
    frames = new.take()
    assert frames[0] == first[0]  # byte for byte: the same seq, queue and bodies
    assert codec.decode(frames[1]) == f.Publish("r", 2, [b"2"], [{"h": 1}])
    assert (new.unconfirmed, new.resent) == (3, 2)
    answered = new.answered(1)
    assert answered is not None
    answered.resolve(40, 2)
    assert (confirmed.result(), a.result()) == (40, 41)
    new.adopt([])  # nothing to take over: nothing changes
    assert new.resent == 2


def test_a_moved_publish_is_adopted_without_counting_as_resent() -> None:
    outbox = Outbox()
    s = Sent(f.Publish("q", 9, [b"x"]), [fut()], False)
    outbox.adopt([s], resent=False)
    assert (outbox.unconfirmed, outbox.resent, list(outbox.sent)) == (1, 0, [9])


# ------------------------------------------------------------ dispatch of MOVED


def moved(op: int, ref: Any, endpoint: str = "tcp://b:2") -> f.Error:
    return f.Error(22, "MOVED", "elsewhere", op, ref,
                   {"queue": "q", "broker": "b", "endpoint": endpoint, "version": 1})


def test_a_moved_publish_goes_to_whoever_follows_it_else_fails() -> None:
    outbox = Outbox()
    outbox.welcome(W)
    dispatch = Dispatch(Session("me", "tcp://a:1"), outbox, Requests(), {}, errors=deque())
    x, y, z = fut(), fut(), fut()
    for body, fx in ((b"x", x), (b"y", y), (b"z", z)):
        outbox.publish_opts("q", body, None, f.Options(dedup_id=body.decode()), fx)
    outbox.take()  # seqs 1, 2, 3
    # Nobody follows MOVED (a bare connection): the publish fails with it.
    assert dispatch.frame(moved(f.PUBLISH, 1), 1.0) == ()
    assert isinstance(x.exception(), Moved)
    assert x.exception().info["endpoint"] == "tcp://b:2"  # type: ignore[union-attr]
    taken: list[tuple[int, str]] = []

    def follow(sent: Sent, exc: ZqError) -> bool:
        taken.append((sent.frame.seq, exc.attrs["info"]["endpoint"]))
        return sent.frame.seq == 2

    dispatch.moved = follow
    dispatch.frame(moved(f.PUBLISH, 2), 1.1)
    assert taken == [(2, "tcp://b:2")]
    assert not y.done()  # it waits for its answer from there
    assert 2 not in outbox.sent
    assert outbox.unconfirmed == 1
    dispatch.frame(moved(f.PUBLISH, 3), 1.2)  # the follower declines: it fails
    assert isinstance(z.exception(), Moved)
    # UNAVAILABLE is an answer like any other error (retriable).
    w = fut()
    outbox.publish("q", b"w", None, w)
    outbox.take()
    dispatch.frame(f.Error(21, "UNAVAILABLE", "b1 down", f.PUBLISH, 4, {"broker": "b1"}), 1.3)
    assert isinstance(w.exception(), Unavailable)
    assert w.exception().retriable  # type: ignore[union-attr]


def test_locate_is_a_request_answered_by_location_and_resent_on_a_new_session() -> None:
    requests = Requests()
    outbox = Outbox()
    dispatch = Dispatch(Session("me", "tcp://a:1"), outbox, requests, {}, errors=deque())
    got, refused = fut(), fut()
    assert codec.decode(requests.add(1, None, {"queue": "q"}, got, 1, f.LOCATE)) == \
        f.Locate(1, "q")
    requests.add(2, None, {"queue": "r"}, refused, 1, f.LOCATE)
    requests.void(2, ZqError("session unknown"))  # reading: it goes again
    assert [codec.decode(p) for p in requests.resend(2)] == [f.Locate(1, "q"), f.Locate(2, "r")]
    loc = {"queue": "q", "broker": "b", "endpoint": "tcp://b:2", "version": 1, "exists": True}
    dispatch.frame(f.Location(1, loc), 1.0)
    assert got.result() == loc
    dispatch.frame(f.Error(16, "INVALID_ARGUMENT", "no", f.LOCATE, 2), 1.1)
    assert refused.exception() is not None


# ------------------------------------------------------------ a consumer that moves


class FakeConnection:
    """What a Consumer calls on a connection, recorded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.endpoint = f"tcp://{name}:1"
        self.calls: list[Any] = []
        self.consumers: dict[str, Any] = {}
        self.closed = False
        self.broken: ZqError | None = None

    def check(self) -> None:
        pass

    def credit(self, queue: str, n: int) -> None:
        self.calls.append(("credit", queue, n))

    def detach(self, consumer: Any) -> None:
        del self.consumers[consumer.queue]
        self.cancel(consumer.queue)

    def cancel(self, queue: str) -> None:
        self.calls.append(("cancel", queue))

    def ack(self, mid: int, attempt: int) -> None:
        self.calls.append(("ack", mid))

    def release(self, ids: list[int]) -> None:
        self.calls.append(("release", *ids))

    def start(self, mid: int, attempt: int) -> None:
        self.calls.append(("start", mid))

    def owe(self, consumer: Any) -> None:
        self.calls.append(("owe", consumer.queue))

    def note_starting(self, consumer: Any) -> None:
        self.calls.append(("starting", consumer.queue))

    def flush(self) -> None:
        pass


async def test_a_moved_consumer_cancels_there_grants_here_and_settles_old_messages_there() -> None:
    a, b = FakeConnection("a"), FakeConnection("b")
    c = Consumer(a, "q", prefetch=3)  # type: ignore[arg-type]
    await c.__aenter__()
    c.on_deliver(f.Deliver("q", [1, 2], [1, 1], [b"1", b"2"]))
    first = await c.get()
    assert a.calls == [("credit", "q", 3), ("starting", "q")]
    c.move_to(b, lost=False)  # type: ignore[arg-type]
    assert a.calls[-1] == ("cancel", "q")
    assert b.calls == [("credit", "q", 1)]  # the window less the two it holds
    assert c.connection is b  # type: ignore[comparison-overlap]
    assert b.consumers == {"q": c}
    await first.ack()  # delivered by a: settled there; its credit goes to b
    second = await c.get()  # taken after the move: its START goes to a
    assert a.calls[-2:] == [("ack", 1), ("start", 2)]
    assert b.calls[-1] == ("owe", "q")
    await second.release()
    assert a.calls[-1] == ("release", 2)
    c.on_deliver(f.Deliver("q", [1], [1], [b"b1"]))  # ids are per broker
    await c.close()
    assert b.calls[-2:] == [("cancel", "q"), ("release", 1)]  # back where it came from


def test_a_consumer_whose_node_was_lost_starts_afresh_elsewhere() -> None:
    a, b = FakeConnection("a"), FakeConnection("b")
    c = Consumer(a, "q", prefetch=4)  # type: ignore[arg-type]
    a.consumers["q"] = c
    c.on_deliver(f.Deliver("q", [1, 2, 3], [1, 1, 1], [b"1", b"2", b"3"]))
    c.fail(ZqError("lost"))
    c.move_to(b, lost=True)  # type: ignore[arg-type]
    assert (c.held, c.buffered, c.error) == (0, 0, None)  # void with the lost session
    assert b.calls == [("credit", "q", 4)]
