"""BrokerCore without I/O: what the spec promises about credit, confirms and redelivery."""

from __future__ import annotations

from typing import Any

import pytest

from zq.config import BrokerConfig
from zq.core import MAX_HEARTBEAT, BrokerCore
from zq.errors import StorageError, StorageFull
from zq.policies import make_dispatch
from zq.protocol import codec
from zq.protocol import frames as f

P = b"producer"
A = b"consumer-a"
B = b"consumer-b"


class Harness:
    """One BrokerCore, a clock, and helpers that decode what it sends."""

    def __init__(self, policy: str = "round-robin", **cfg: Any) -> None:
        self.core = BrokerCore(BrokerConfig(dispatch=policy, **cfg), make_dispatch(policy),
                               "test-broker")
        self.now = 100.0
        self.seq = 0

    def send(self, identity: bytes, frame: f.Frame | list[bytes],
             at: float | None = None) -> None:
        parts = frame if isinstance(frame, list) else codec.encode(frame)
        self.core.receive(identity, parts, self.now if at is None else at)

    def hello(self, *identities: bytes, heartbeat_ms: int = 0) -> None:
        for identity in identities:
            self.send(identity, f.Hello(identity.decode(), heartbeat_ms))
        assert all(isinstance(fr, f.Welcome) for _, fr in self.take())

    def publish(self, n: int, queue: str = "q", commit: bool = True) -> int:
        self.seq += 1
        self.send(P, f.Publish(queue, self.seq, [b"m%d" % i for i in range(n)]))
        if commit:
            self.core.committed()
        return self.seq

    def run(self) -> list[tuple[bytes, f.Frame]]:
        """One loop pass after the frames sent so far: commit, dispatch, collect."""
        self.core.committed()
        self.core.dispatch()
        return self.take()

    def take(self) -> list[tuple[bytes, f.Frame]]:
        out, self.core.out = self.core.out, []
        return [(identity, codec.decode(parts)) for identity, parts, _ in out]

    def raw_take(self) -> list[tuple[bytes, list[bytes], Any]]:
        out, self.core.out = self.core.out, []
        return out


def delivers(out: list[tuple[bytes, f.Frame]]) -> list[tuple[bytes, f.Deliver]]:
    return [(i, fr) for i, fr in out if isinstance(fr, f.Deliver)]


def errors_of(out: list[tuple[bytes, f.Frame]]) -> list[tuple[bytes, f.Error]]:
    return [(i, fr) for i, fr in out if isinstance(fr, f.Error)]


def only(out: list[tuple[bytes, f.Frame]], kind: type[Any]) -> Any:
    frames = [fr for _, fr in out if isinstance(fr, kind)]
    assert len(frames) == 1, out
    return frames[0]


@pytest.fixture
def h() -> Harness:
    return Harness()


# ------------------------------------------------------------------ sessions


def test_hello_gets_welcome_with_the_brokers_terms() -> None:
    h = Harness(heartbeat=0.5, liveness=4, max_batch=7, max_credit=50, max_frame=4096)
    h.send(A, f.Hello("a"))
    assert h.take() == [(A, f.Welcome("test-broker", 500, 4, 7, 50, 4096, starts=True))]


def test_work_before_hello_is_session_unknown(h: Harness) -> None:
    h.send(A, f.Ack([1], [1]))  # id 1 was never assigned: UNKNOWN_DELIVERY first
    h.send(A, f.Publish("q", 9, [b"x"]))
    h.send(A, f.Manage(3, "sync", {}))
    errs = errors_of(h.run())
    assert [(e.name, e.op, e.ref) for _, e in errs] == [
        ("UNKNOWN_DELIVERY", f.ACK, [1]), ("SESSION_UNKNOWN", f.ACK, None),
        ("SESSION_UNKNOWN", f.PUBLISH, None), ("SESSION_UNKNOWN", f.MANAGE, None)]
    assert A not in h.core.peers
    assert "q" not in h.core.queues or not h.core.queues["q"].ready_count()
    assert h.core.next_id == 1


def test_bye_from_a_stranger_is_ignored(h: Harness) -> None:
    h.send(A, f.Bye("bye"))
    assert h.run() == []
    assert A not in h.core.peers


def test_hello_twice_ends_the_session(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Hello("again"))
    err = only(h.take(), f.Error)
    assert (err.name, err.op) == ("PROTOCOL_VIOLATION", f.HELLO)
    assert A not in h.core.peers


def test_broker_frame_from_client_ends_the_session(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Confirm([(1, 1, 1)]))
    assert only(h.take(), f.Error).name == "PROTOCOL_VIOLATION"
    assert A not in h.core.peers


def test_stats_request_gets_reply_with_same_req(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Stats(77))
    reply = only(h.take(), f.StatsReply)
    assert reply.req == 77
    assert reply.stats["broker"] == "test-broker"


# ------------------------------------------------------------------ publish and confirm


def test_confirm_only_after_committed(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 10))
    seq = h.publish(3, commit=False)
    h.core.dispatch()
    assert h.take() == []  # not stored yet: no confirm, no delivery
    assert h.core.stats()["queues"]["q"]["ready"] == 0
    h.core.committed()
    assert h.take() == [(P, f.Confirm([(seq, 1, 3)]))]
    h.core.dispatch()
    (who, d), = delivers(h.take())
    assert who == A
    assert d.ids == [1, 2, 3]


def test_one_confirm_frame_per_producer_per_commit(h: Harness) -> None:
    h.hello(P, A)
    h.send(P, f.Publish("q", 10, [b"a", b"b"]))
    h.send(P, f.Publish("other", 11, [b"c"]))
    h.send(A, f.Publish("q", 5, [b"d"]))
    h.core.committed()
    out = h.take()
    assert out == [(P, f.Confirm([(10, 1, 2), (11, 3, 1)])), (A, f.Confirm([(5, 4, 1)]))]


def test_ids_are_consecutive_in_body_order(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 10))
    h.send(P, f.Publish("q", 1, [b"x", b"y", b"z"], [{"n": 0}, None, {"n": 2}]))
    out = h.run()
    assert only(out, f.Confirm) == f.Confirm([(1, 1, 3)])
    d = only(out, f.Deliver)
    assert list(zip(d.ids, d.bodies, strict=True)) == [(1, b"x"), (2, b"y"), (3, b"z")]
    assert d.headers == [{"n": 0}, None, {"n": 2}]
    assert d.attempts == [1, 1, 1]


def test_commit_failed_refuses_publishes_and_queues_nothing(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 10))
    h.send(P, f.Publish("q", 41, [b"a"]))
    h.send(P, f.Publish("q", 42, [b"b", b"c"]))
    h.core.commit_failed(StorageFull("disk full"))
    errs = errors_of(h.take())
    assert [(i, e.name, e.code, e.op, e.ref) for i, e in errs] == [
        (P, "STORAGE_FULL", 30, f.PUBLISH, 41), (P, "STORAGE_FULL", 30, f.PUBLISH, 42)]
    assert h.run() == []  # a later commit neither confirms nor delivers them
    assert h.core.stats()["queues"]["q"]["ready"] == 0
    assert h.core.counters["published"] == 0


def test_commit_failed_then_next_pass_works(h: Harness) -> None:
    h.hello(P)
    h.send(P, f.Publish("q", 1, [b"a"]))
    h.core.commit_failed(StorageError("io"))
    assert only(h.take(), f.Error).ref == 1
    h.send(P, f.Publish("q", 2, [b"b"]))
    h.core.committed()
    assert only(h.take(), f.Confirm).entries[0][0] == 2


def test_publish_while_stopping_is_refused(h: Harness) -> None:
    h.hello(P)
    h.core.stopping = True
    h.send(P, f.Publish("q", 17, [b"a"]))
    out = h.run()
    err = only(out, f.Error)
    assert (err.name, err.op, err.ref, err.code) == ("SHUTTING_DOWN", f.PUBLISH, 17, 20)
    assert not any(isinstance(fr, f.Confirm) for _, fr in out)
    assert P in h.core.peers  # not fatal


def test_too_many_bodies_is_refused_with_ref_seq() -> None:
    h = Harness(max_publish_batch=3)
    h.hello(P)
    h.send(P, f.Publish("q", 5, [b"a"] * 4))
    err = only(h.run(), f.Error)
    assert (err.name, err.op, err.ref) == ("FRAME_TOO_LARGE", f.PUBLISH, 5)
    assert P in h.core.peers


def test_closing_sessions_says_bye_to_every_session_and_forgets_it(h: Harness) -> None:
    h.hello(A, B)
    h.core.close_sessions("stopping")
    assert sorted(h.take()) == [(A, f.Bye("stopping")), (B, f.Bye("stopping"))]
    assert h.core.peers == {}


# ------------------------------------------------------------------ credit and dispatch


@pytest.mark.parametrize(("credit", "published", "batches", "left"), [
    (10, 8, [3, 3, 2], 0),
    (5, 8, [3, 2], 3),
    (2, 8, [2], 6),
    (10, 3, [3], 0),
])
def test_deliver_batch_is_min_of_credit_and_max_batch(credit: int, published: int,
                                                       batches: list[int], left: int) -> None:
    h = Harness(max_batch=3)
    h.hello(P, A)
    h.send(A, f.Credit("q", credit))
    h.publish(published)
    out = h.run()
    assert [len(d.ids) for _, d in delivers(out)] == batches
    assert h.core.stats()["queues"]["q"]["ready"] == left


def test_never_more_in_flight_than_granted(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 4))
    h.publish(10)
    (_, d), = delivers(h.run())
    assert len(d.ids) == 4
    h.send(A, f.Ack(d.ids, d.attempts))  # settling does not restore credit
    h.publish(5)
    assert delivers(h.run()) == []
    h.send(A, f.Credit("q", 2))
    (_, d2), = delivers(h.run())
    assert d2.ids == [5, 6]
    peer = h.core.stats()["peers"][A.hex()]["subs"]["q"]
    assert peer["peak_in_flight"] == 4


def test_credit_beyond_max_credit_is_invalid() -> None:
    h = Harness(max_credit=10)
    h.hello(P, A)
    h.send(A, f.Credit("q", 11))
    err = only(h.take(), f.Error)
    assert (err.name, err.op, err.ref) == ("INVALID_CREDIT", f.CREDIT, "q")
    h.send(A, f.Credit("q", 6))
    h.publish(6)
    assert len(only(h.run(), f.Deliver).ids) == 6
    h.send(A, f.Credit("q", 5))  # 6 in flight + 5 > 10
    assert only(h.take(), f.Error).name == "INVALID_CREDIT"
    h.send(A, f.Credit("q", 4))  # 6 + 4 == 10 is fine
    assert h.take() == []
    assert A in h.core.peers  # not fatal
    sub = h.core.stats()["peers"][A.hex()]["subs"]["q"]
    assert sub["available"] + sub["in_flight"] == 10


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_credit_is_invalid(h: Harness, n: int) -> None:
    h.hello(A)
    h.send(A, f.Credit("q", n))
    err = only(h.take(), f.Error)
    assert (err.name, err.ref) == ("INVALID_CREDIT", "q")


def test_cancel_voids_credit_but_in_flight_must_still_be_settled(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 5))
    h.publish(2)
    (_, d), = delivers(h.run())
    h.send(A, f.Cancel("q"))
    h.publish(3)
    assert delivers(h.run()) == []
    assert h.core.stats()["queues"]["q"]["ready"] == 3
    assert h.core.stats()["queues"]["q"]["in_flight"] == 2  # still held after CANCEL
    h.send(A, f.Ack(d.ids, d.attempts))
    assert errors_of(h.run()) == []
    assert h.core.counters["acked"] == 2
    h.send(A, f.Credit("q", 1))  # subscribes again
    (_, d2), = delivers(h.run())
    assert d2.ids == [3]


def test_cancel_of_unknown_queue_is_ignored(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Cancel("nothing"))
    assert h.run() == []
    assert A in h.core.peers


def test_round_robin_shares_a_backlog() -> None:
    h = Harness("round-robin", max_batch=2)
    h.hello(P, A, B)
    h.send(A, f.Credit("q", 10))
    h.send(B, f.Credit("q", 10))
    h.publish(8)
    ds = delivers(h.run())
    assert [who for who, _ in ds] == [A, B, A, B]
    assert [d.ids for _, d in ds] == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_round_robin_skips_consumers_without_credit() -> None:
    h = Harness("round-robin", max_batch=2)
    h.hello(P, A, B)
    h.send(A, f.Credit("q", 2))
    h.send(B, f.Credit("q", 10))
    h.publish(8)
    ds = delivers(h.run())
    assert sum(len(d.ids) for who, d in ds if who == A) == 2
    assert sum(len(d.ids) for who, d in ds if who == B) == 6


def test_least_loaded_serves_the_consumer_with_fewest_in_flight() -> None:
    h = Harness("least-loaded")
    h.hello(P, A, B)
    h.send(A, f.Credit("q", 10))
    h.publish(3)
    assert [who for who, _ in delivers(h.run())] == [A]  # A holds 3
    h.send(B, f.Credit("q", 10))
    for _ in range(2):
        h.publish(1)
        assert [who for who, _ in delivers(h.run())] == [B]  # B holds 0, then 1
    h.publish(2)
    assert [who for who, _ in delivers(h.run())] == [B]  # B holds 2 < 3
    h.publish(1)
    assert [who for who, _ in delivers(h.run())] == [A]  # B holds 4 > 3


# ------------------------------------------------------------------ settling


def _delivered(h: Harness, n: int = 1, who: bytes = A, credit: int = 10) -> f.Deliver:
    h.send(who, f.Credit("q", credit))
    h.publish(n)
    (_, d), = delivers(h.run())
    return d


def test_ack_removes(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 3)
    h.send(A, f.Ack(d.ids, d.attempts))
    assert errors_of(h.run()) == []
    q = h.core.stats()["queues"]["q"]
    assert (q["ready"], q["in_flight"], q["acked"]) == (0, 0, 3)
    assert h.core.stats()["peers"][A.hex()]["held"] == 0


def test_ack_of_unknown_ids_is_unknown_delivery_with_ref(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2)
    h.send(A, f.Ack([d.ids[0], 999, 1000], [1, 1, 1]))
    err = only(h.run(), f.Error)
    assert (err.name, err.code, err.op, err.ref) == ("UNKNOWN_DELIVERY", 11, f.ACK, [999, 1000])
    assert h.core.counters["acked"] == 1  # the known one was settled
    h.send(A, f.Ack([d.ids[0]], [1]))  # twice: no longer held, but it was delivered
    err = only(h.run(), f.Error)
    assert (err.name, err.ref) == ("STALE_DELIVERY", [d.ids[0]])
    assert h.core.counters["acked"] == 1
    assert A in h.core.peers


def test_ack_with_wrong_attempt_is_stale(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2)
    h.send(A, f.Ack(d.ids, [2, 1]))
    err = only(h.run(), f.Error)
    assert (err.name, err.code, err.op, err.ref) == ("STALE_DELIVERY", 12, f.ACK, [d.ids[0]])
    assert h.core.stats()["peers"][A.hex()]["held"] == 1  # a stale delivery stays held
    h.send(A, f.Ack([d.ids[0]], [1]))
    assert errors_of(h.run()) == []


def test_nack_with_unknown_and_stale_ids_reports_both(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 1)
    h.send(A, f.Nack([d.ids[0], 50], [7, 1]))
    errs = [(e.name, e.op, e.ref) for _, e in errors_of(h.run())]
    assert errs == [("UNKNOWN_DELIVERY", f.NACK, [50]), ("STALE_DELIVERY", f.NACK, [d.ids[0]])]


def test_nack_requeue_redelivers_with_next_attempt(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2, credit=2)
    h.send(A, f.Nack(d.ids, d.attempts, requeue=True))
    assert delivers(h.run()) == []  # requeued, but no credit left
    assert h.core.stats()["queues"]["q"]["ready"] == 2
    h.send(A, f.Credit("q", 2))
    (_, d2), = delivers(h.run())
    assert (d2.ids, d2.attempts) == (d.ids, [2, 2])
    assert h.core.counters["redelivered"] == 2
    assert h.core.counters["nacked"] == 2


def test_requeued_messages_go_to_the_head(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2, credit=2)
    h.publish(3)  # ids 3..5 wait behind
    h.send(A, f.Nack(d.ids, d.attempts))
    h.send(A, f.Credit("q", 5))
    (_, d2), = delivers(h.run())
    assert d2.ids == [1, 2, 3, 4, 5]
    assert d2.attempts == [2, 2, 1, 1, 1]


def test_nack_delay_holds_the_message_back() -> None:
    h = Harness(heartbeat=10.0)
    h.hello(P, A)
    d = _delivered(h, 1)
    t0 = h.now
    h.send(A, f.Nack(d.ids, d.attempts, requeue=True, delay_ms=500))
    assert delivers(h.run()) == []
    assert h.core.stats()["queues"]["q"]["delayed"] == 1
    h.core.tick(t0 + 0.499)
    h.core.dispatch()
    assert delivers(h.take()) == []
    h.core.tick(t0 + 0.5)
    h.core.dispatch()
    (_, d2), = delivers(h.take())
    assert (d2.ids, d2.attempts) == (d.ids, [2])
    assert h.core.stats()["queues"]["q"]["delayed"] == 0


def test_delayed_messages_join_the_tail(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 1, credit=1)
    h.send(A, f.Nack(d.ids, d.attempts, delay_ms=100))
    h.publish(2)
    h.core.tick(h.now + 1.0)
    h.send(A, f.Credit("q", 3))
    (_, d2), = delivers(h.run())
    assert d2.ids == [2, 3, 1]


def test_nack_without_requeue_is_dead(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2)
    h.send(A, f.Nack(d.ids, d.attempts, requeue=False, reason="poison"))
    assert delivers(h.run()) == []
    q = h.core.stats()["queues"]["q"]
    assert (q["ready"], q["in_flight"], q["dead"], q["nacked"]) == (0, 0, 2, 2)
    assert h.core.counters["dead"] == 2
    h.core.tick(h.now + 1000)  # and it does not come back later
    h.core.dispatch()
    assert delivers(h.take()) == []


def test_release_does_not_count_an_attempt(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 2, credit=2)
    h.send(A, f.Release(d.ids))
    h.send(A, f.Credit("q", 2))
    (_, d2), = delivers(h.run())
    assert (d2.ids, d2.attempts) == (d.ids, [1, 1])
    assert h.core.counters["released"] == 2
    h.send(A, f.Release([99]))
    err = only(h.run(), f.Error)
    assert (err.name, err.op, err.ref) == ("UNKNOWN_DELIVERY", f.RELEASE, [99])


def test_attempts_count_deliveries_across_release_and_nack(h: Harness) -> None:
    h.hello(P, A)
    d = _delivered(h, 1, credit=1)
    h.send(A, f.Nack(d.ids, d.attempts))  # attempt 1 counted
    h.send(A, f.Credit("q", 1))
    (_, d), = delivers(h.run())
    assert d.attempts == [2]
    h.send(A, f.Release(d.ids))  # attempt 2 not counted
    h.send(A, f.Credit("q", 1))
    (_, d), = delivers(h.run())
    assert d.attempts == [2]
    h.send(A, f.Ack(d.ids, [2]))
    assert errors_of(h.run()) == []


# ------------------------------------------------------------------ peers and heartbeats


def test_tick_sends_heartbeats_to_every_session() -> None:
    h = Harness(heartbeat=1.0)
    h.hello(A, B)
    h.core.tick(h.now)
    assert sorted(h.take()) == [(A, f.Heartbeat()), (B, f.Heartbeat())]
    h.core.tick(h.now + 0.5)  # not yet due
    assert h.take() == []
    h.core.tick(h.now + 1.0)
    assert len(h.take()) == 2


def test_silent_peer_is_dropped_and_its_messages_go_to_another_consumer() -> None:
    h = Harness(heartbeat=1.0, liveness=3)
    h.hello(P, A, B)
    d = _delivered(h, 3, who=A)
    h.send(B, f.Credit("q", 10))
    assert delivers(h.run()) == []
    t0 = h.now
    h.core.tick(t0 + 2.0)
    h.send(B, f.Heartbeat(), at=t0 + 2.0)
    h.send(P, f.Heartbeat(), at=t0 + 2.0)
    h.take()
    h.core.tick(t0 + 3.0)  # silent for exactly 3 s: not yet
    assert A in h.core.peers
    h.core.tick(t0 + 4.0)  # silent for 4 s > 1 s x 3
    assert A not in h.core.peers
    assert B in h.core.peers
    assert P in h.core.peers
    h.core.dispatch()
    (who, d2), = delivers(h.take())
    assert who == B
    assert (d2.ids, d2.attempts) == (d.ids, [2, 2, 2])
    assert h.core.counters["peers_dropped"] == 1
    h.send(A, f.Ack(d.ids, d.attempts), at=t0 + 4.0)  # the dropped peer comes back late
    errs = errors_of(h.take())  # its leases are gone: STALE for the ids, then "say HELLO"
    assert [(e.name, e.op, e.ref) for _, e in errs] == [
        ("STALE_DELIVERY", f.ACK, d.ids), ("SESSION_UNKNOWN", f.ACK, None)]
    assert h.core.counters["acked"] == 0
    assert h.core.stats()["peers"][B.hex()]["held"] == 3  # B's attempts are untouched


def test_any_accepted_frame_counts_as_life() -> None:
    h = Harness(heartbeat=1.0, liveness=2)
    h.hello(P, A)
    t0 = h.now
    for t in (1.5, 3.0, 4.5, 6.0):
        h.send(A, f.Stats(1), at=t0 + t)
        h.core.tick(t0 + t)
    assert A in h.core.peers
    assert P not in h.core.peers


def test_a_refused_request_still_counts_as_life() -> None:
    h = Harness(heartbeat=1.0, liveness=2)
    h.hello(A)
    t0 = h.now
    h.core.tick(t0)
    h.send(A, f.Credit("q", 0), at=t0 + 1.5)  # accepted by the session, refused by the window
    assert only(h.take(), f.Error).name == "INVALID_CREDIT"
    h.core.tick(t0 + 2.5)
    assert A in h.core.peers


def test_a_frame_refused_by_the_decoder_does_not_count_as_life() -> None:
    h = Harness(heartbeat=1.0, liveness=2, max_frame=1024)
    h.hello(A)
    t0 = h.now
    h.core.tick(t0)
    h.send(A, f.Bye("x" * 2000), at=t0 + 1.5)  # FRAME_TOO_LARGE: not fatal, not life
    assert only(h.take(), f.Error).name == "FRAME_TOO_LARGE"
    assert A in h.core.peers
    h.core.tick(t0 + 1.5)
    h.core.tick(t0 + 2.5)  # silent since t0: 2.5 s > 1 s x 2
    assert A not in h.core.peers


def test_longer_client_heartbeat_stretches_liveness() -> None:
    h = Harness(heartbeat=1.0, liveness=3)
    h.hello(A, heartbeat_ms=5000)
    t0 = h.now
    h.core.tick(t0 + 14.0)
    assert A in h.core.peers  # 14 s < 5 s x 3
    h.core.tick(t0 + 15.5)
    assert A not in h.core.peers


def test_client_heartbeat_is_capped_at_a_minute() -> None:
    h = Harness(heartbeat=1.0, liveness=3)
    h.hello(A, heartbeat_ms=10**12)  # a hostile HELLO cannot make its session immortal
    t0 = h.now
    h.core.tick(t0 + 3 * MAX_HEARTBEAT - 1)
    assert A in h.core.peers
    h.core.tick(t0 + 3 * MAX_HEARTBEAT + 1)
    assert A not in h.core.peers


def test_bye_requeues_what_the_peer_held(h: Harness) -> None:
    h.hello(P, A, B)
    d = _delivered(h, 2, who=A)
    h.send(A, f.Bye("leaving"))
    assert A not in h.core.peers
    h.send(B, f.Credit("q", 5))
    (who, d2), = delivers(h.run())
    assert who == B
    assert (d2.ids, d2.attempts) == (d.ids, [2, 2])


def test_malformed_frame_from_ready_peer_ends_the_session(h: Harness) -> None:
    h.hello(P, A, B)
    d = _delivered(h, 2, who=A)
    h.send(A, [codec.command(f.ACK), b"\x92\x01"])
    err = only(h.take(), f.Error)
    assert (err.name, err.code, err.op) == ("MALFORMED_FRAME", 2, f.ACK)
    assert A not in h.core.peers
    h.send(B, f.Credit("q", 5))
    (who, d2), = delivers(h.run())
    assert (who, d2.ids) == (B, d.ids)
    h.send(A, f.Heartbeat())
    assert only(h.take(), f.Error).name == "SESSION_UNKNOWN"


@pytest.mark.parametrize(("parts", "name"), [
    ([b"ZQ\x02\x03", b"\xc0"], "UNSUPPORTED_VERSION"),
    ([b"ZQ\x01\x55", b"\xc0"], "UNKNOWN_OPCODE"),
    ([b"not zq"], "MALFORMED_FRAME"),
])
def test_other_fatal_errors_end_the_session(h: Harness, parts: list[bytes], name: str) -> None:
    h.hello(A)
    h.send(A, parts)
    assert only(h.take(), f.Error).name == name
    assert A not in h.core.peers


def test_request_errors_keep_the_session(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Ack([5], [1]))
    h.send(A, f.Credit("q", -1))
    assert [e.name for _, e in errors_of(h.take())] == ["UNKNOWN_DELIVERY", "INVALID_CREDIT"]
    assert A in h.core.peers


def test_oversized_message_is_frame_too_large_not_fatal() -> None:
    h = Harness(max_frame=1024)
    h.hello(P)
    h.send(P, f.Publish("q", 1, [b"x" * 700, b"y" * 700]))
    err = only(h.run(), f.Error)
    assert (err.name, err.op) == ("FRAME_TOO_LARGE", f.PUBLISH)
    assert P in h.core.peers


# ------------------------------------------------------------------ failed sends


def test_unroutable_delivery_is_requeued_with_attempt_unchanged(h: Harness) -> None:
    h.hello(P, A, B)
    h.send(A, f.Credit("q", 10))
    h.publish(3)
    h.core.committed()
    h.core.dispatch()
    out = h.raw_take()
    (identity, _, msgs), = [o for o in out if o[2] is not None]
    assert identity == A
    h.core.send_failed(A, msgs, unroutable=True)
    assert A not in h.core.peers
    assert h.core.counters["unroutable"] == 1
    h.send(B, f.Credit("q", 10))
    (who, d), = delivers(h.run())
    assert who == B
    assert (d.ids, d.attempts) == ([1, 2, 3], [1, 1, 1])
    assert h.core.counters["redelivered"] == 0


def test_dropped_send_is_requeued_and_the_peer_kept(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 3))
    h.publish(3)
    h.core.committed()
    h.core.dispatch()
    (_, _, msgs), = [o for o in h.raw_take() if o[2] is not None]
    h.core.send_failed(A, msgs, unroutable=False)
    assert A in h.core.peers
    assert h.core.counters["send_dropped"] == 1
    q = h.core.stats()["queues"]["q"]
    assert (q["ready"], q["in_flight"]) == (3, 0)


def test_dropped_send_gives_the_credit_back(h: Harness) -> None:
    h.hello(P, A)
    h.send(A, f.Credit("q", 3))
    h.publish(3)
    h.core.committed()
    h.core.dispatch()
    (_, _, msgs), = [o for o in h.raw_take() if o[2] is not None]
    h.core.send_failed(A, msgs, unroutable=False)
    h.core.dispatch()
    (_, d), = delivers(h.take())
    assert (d.ids, d.attempts) == ([1, 2, 3], [1, 1, 1])


def test_send_failed_for_a_gone_peer_is_counted_only(h: Harness) -> None:
    h.core.send_failed(b"ghost", None, unroutable=True)
    assert h.core.counters["unroutable"] == 1


# ------------------------------------------------------------------ stats


def test_stats_counters() -> None:
    h = Harness(max_batch=3)
    h.hello(P, A)
    h.send(A, f.Credit("q", 8))
    h.publish(8)
    ds = delivers(h.run())
    assert [len(d.ids) for _, d in ds] == [3, 3, 2]
    first = ds[0][1]
    h.send(A, f.Ack(first.ids, first.attempts))
    h.run()
    s = h.core.stats()
    c = s["counters"]
    assert (c["published"], c["delivered"], c["deliver_frames"], c["acked"]) == (8, 8, 3, 3)
    assert c["avg_deliver_batch"] == pytest.approx(8 / 3)
    assert s["queues"]["q"] == {"ready": 0, "on_disk": 0, "delayed": 0, "in_flight": 5,
                                "consumers": 1, "published": 8, "delivered": 8, "acked": 3,
                                "nacked": 0, "dead": 0, "undeliverable": 0, "paused": False,
                                "oldest_age": 0.0,
                                "rates": {"publish": 0.0, "deliver": 0.0, "ack": 0.0},
                                "tenants": {}}
    assert s["peers"][A.hex()] == {
        "name": "consumer-a", "held": 5, "subs_total": 1,
        "subs": {"q": {"in_flight": 5, "available": 0, "peak_in_flight": 8, "active": True}}}


def test_avg_deliver_batch_is_zero_without_deliveries(h: Harness) -> None:
    assert h.core.stats()["counters"]["avg_deliver_batch"] == 0.0


def test_refused_credit_after_cancel_does_not_subscribe_again(h: Harness) -> None:
    h.hello(A)
    h.send(A, f.Credit("q", 2))
    h.send(A, f.Cancel("q"))
    assert h.core.stats()["queues"]["q"]["consumers"] == 0
    h.send(A, f.Credit("q", 0))
    assert only(h.take(), f.Error).name == "INVALID_CREDIT"
    assert h.core.stats()["queues"]["q"]["consumers"] == 0


# ------------------------------------------------------------ batch sizing


def test_deliver_batches_are_bounded_by_bytes() -> None:
    h = Harness(max_batch=1000, max_frame=64 * 1024)
    h.hello(P, A)
    body = b"x" * 20_000
    for _ in range(5):
        h.seq += 1
        h.send(P, f.Publish("q", h.seq, [body]))
    h.send(A, f.Credit("q", 100))
    ds = delivers(h.run())
    assert [len(d.ids) for _, d in ds] == [3, 2]  # 3 x 20 kB fit 64 KiB, 4 do not
    for _, d in ds:
        size = sum(len(p) for p in codec.encode(d))
        assert size <= 64 * 1024
    assert h.core.stats()["peers"][A.hex()]["subs"]["q"]["available"] == 95


def test_deliver_batches_are_bounded_by_header_bytes() -> None:
    h = Harness(max_batch=1000)
    h.hello(P, A)
    fat = {"k": "v" * (codec.DEFAULT_LIMITS.max_header // 3)}
    for _ in range(4):
        h.seq += 1
        h.send(P, f.Publish("q", h.seq, [b"b"], [fat]))
    h.send(A, f.Credit("q", 10))
    ds = delivers(h.run())
    assert [len(d.ids) for _, d in ds] == [2, 2]
