"""BrokerCore with a durable store: what it stages, how it pages a backlog, recovery."""

from __future__ import annotations

from typing import Any

from tests.unit.test_core import A, Harness, P, delivers
from zq.persistence.base import (
    DELIVERED,
    WAITING,
    Recovered,
    Rewrite,
    StoredMessage,
    WriteBatch,
)
from zq.protocol import frames as f


def stored(h: Harness) -> list[tuple[bytes, f.Frame]]:
    """Commit what waits for the store (as the broker's commit task does) and collect."""
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.release(c.deliveries)
    return h.take()


def durable(**cfg: Any) -> Harness:
    h = Harness(**cfg)
    h.core.durable = True
    h.hello(P, A)
    return h


def test_publish_stages_inserts_and_confirms_only_after_commit() -> None:
    h = durable()
    h.send(P, f.Publish("q", 1, [b"a", b"b"], [{"k": 1}, None]))
    batch = h.core.take_batch()
    assert batch.inserts == [(1, "q", [{"k": 1}, None], [b"a", b"b"])]
    assert h.core.staged == 0  # reset with the batch
    assert h.take() == []  # no confirm before committed()
    h.core.committed()
    assert isinstance(h.take()[0][1], f.Confirm)


def test_delivery_stages_its_attempt_and_ack_replaces_it_with_a_delete() -> None:
    h = durable()
    h.send(A, f.Credit("q", 5))
    h.publish(3)
    h.core.take_batch()
    h.core.dispatch()
    # Out at once: one commit (the publish's) between publish and deliver; the attempt
    # numbers go with the next commit (a crash before it does not count an attempt in
    # flight anyway, PROTOCOL.md 12.5).
    [(_, d)] = delivers(h.take())
    assert (d.ids, d.attempts) == ([1, 2, 3], [1, 1, 1])
    assert h.core.has_unstored()
    c = h.core.take_commit()
    assert c.batch.updates == [([1, 2, 3], [1, 1, 1], 0.0, DELIVERED)]
    assert c.deliveries == []
    h.core.dispatch()
    h.send(A, f.Nack([1], [1], True, 0, ""))  # back to the queue: attempt stays 1 on disk
    h.core.dispatch()  # delivered again as attempt 2
    h.send(A, f.Ack([2], [1]))
    batch = h.core.take_batch()
    # The failed attempt is stored with its history (a Rewrite), then the new attempt.
    history = [{"attempt": 1, "outcome": "nacked", "start": 100.0, "end": 100.0,
                "consumer": "consumer-a"}]
    assert batch.updates == [Rewrite(1, "q", 1, 0.0, {"zq-history": history}, None),
                             ([1], [2], 0.0, DELIVERED)]
    assert batch.deletes == [2]


def test_nack_with_delay_stores_a_wall_clock_due_time() -> None:
    h = durable()
    h.core.wall_offset = 1_000_000.0
    d = _deliver(h, 1)
    h.send(A, f.Nack(d.ids, d.attempts, True, 2500, "later"))
    wall = h.now + 1_000_000.0
    history = [{"attempt": 1, "outcome": "nacked", "start": wall, "end": wall,
                "consumer": "consumer-a", "reason": "later"}]
    assert h.core.take_batch().updates == [
        Rewrite(1, "q", 1, wall + 2.5, {"zq-history": history}, None)]


def test_release_and_dead_letters_are_stored() -> None:
    h = durable()
    d = _deliver(h, 2)
    h.send(A, f.Release([d.ids[0]]))
    h.send(A, f.Nack([d.ids[1]], [1], False, 0, "poison"))
    batch = h.core.take_batch()
    history = [{"attempt": 1, "outcome": "nacked", "start": 100.0, "end": 100.0,
                "consumer": "consumer-a", "reason": "poison"}]
    assert batch.updates == [
        ([1], [0], 0.0, WAITING),  # a released delivery is not an attempt
        # a dead letter moves to the DLQ, attempts reset, with its history and why
        Rewrite(2, "q.dlq", 0, 0.0, {"zq-history": history, "zq-origin": "q",
                                     "zq-reason": "poison", "zq-dead-at": 100.0}, None)]
    assert batch.deletes == []  # kept, in the DLQ


def test_backlog_beyond_the_window_stays_on_disk_and_pages_in() -> None:
    h = durable(window=4)
    h.publish(3)
    h.publish(3)  # the queue holds 3 (< 4): this frame still goes to memory
    h.publish(2)  # now 6 >= 4: on disk only, and so is everything after
    h.publish(1)
    q = h.core.queues["q"]
    assert (q.ready_count(), q.disk, q.cursor) == (6, 3, 6)
    assert h.core.stats()["queues"]["q"]["ready"] == 9
    assert h.core.wanted_pages() == []  # nobody to deliver to
    h.send(A, f.Credit("q", 10))
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert d.ids == [1, 2, 3, 4, 5, 6]
    assert h.core.wanted_pages() == [("q", 6, 3)]
    page = [StoredMessage(i, "q", b"m", None, 0, 0.0) for i in (7, 8, 9)]
    h.core.paged_in("q", 3, page, h.now)
    assert (q.disk, q.cursor) == (0, 9)
    assert not h.core.wants_pages()
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert d.ids == [7, 8, 9]


def test_a_short_page_means_the_disk_is_drained() -> None:
    h = durable(window=2)
    h.publish(2)
    h.publish(2)
    q = h.core.queues["q"]
    assert q.disk == 2
    h.core.paged_in("q", 2, [StoredMessage(3, "q", b"m", None, 0, 0.0)], h.now)
    assert q.disk == 0  # one row came back for two counted: the count heals


def test_recovery_puts_in_flight_back_with_their_attempts_and_delays_aside() -> None:
    h = Harness(heartbeat=100.0)  # A stays alive across the 30 s below
    h.core.durable = True
    h.core.wall_offset = 5000.0
    wall = h.now + 5000.0
    h.core.recover(Recovered(messages=[
        StoredMessage(1, "q", b"was in flight", None, 1, 0.0),
        StoredMessage(2, "q", b"never delivered", {"h": 1}, 0, 0.0),
        StoredMessage(3, "q", b"delayed", None, 1, wall + 30.0),
    ], next_id=10, backlog={"q": 5}), h.now)
    assert h.core.next_id == 10
    q = h.core.queues["q"]
    assert (q.disk, q.cursor) == (5, 3)
    h.hello(A)
    h.send(A, f.Credit("q", 10))
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert (d.ids, d.attempts) == ([1, 2], [2, 1])
    h.core.tick(h.now + 29.0)
    h.core.dispatch()
    assert delivers(stored(h)) == []
    h.core.tick(h.now + 30.0)
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert (d.ids, d.attempts) == ([3], [2])


def test_restage_carries_acks_and_attempts_into_the_next_batch() -> None:
    h = durable()
    failed = WriteBatch(updates=[([1], [1], 0.0, DELIVERED)], deletes=[7])
    h.core._batch.updates.append(([1], [2], 0.0, DELIVERED))  # newer news about 1: applied last
    h.core.restage(failed)
    batch = h.core.take_batch()
    # Compacted: the last word on each message is all that is stored.
    assert (batch.updates, batch.deletes) == ([([1], [2], 0.0, DELIVERED)], [7])


def _deliver(h: Harness, n: int) -> f.Deliver:
    h.send(A, f.Credit("q", 10))
    h.publish(n)
    h.core.take_batch()
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    return d


def test_deliveries_of_a_session_that_ended_during_the_commit_are_not_sent() -> None:
    h = durable()
    h.send(A, f.Credit("q", 5))
    h.publish(2)
    h.core.take_batch()
    h.core.dispatch()
    c = h.core.take_commit()
    h.take()  # the confirm
    h.send(A, f.Bye("gone"))  # while the attempts are being stored
    h.hello(A)  # the same client, a new session
    h.core.release(c.deliveries)
    assert delivers(h.take()) == []
    h.send(A, f.Credit("q", 5))
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert (d.ids, d.attempts) == ([1, 2], [2, 2])  # requeued by the BYE, counted


def test_a_delayed_message_goes_out_when_due_without_waiting_for_a_commit() -> None:
    """At the due time the DELIVER goes out at once (an fsync stalling then does not
    make it late); its attempt number is stored with the next commit."""
    h = durable()
    h.core.wall_offset = 1000.0
    h.send(A, f.Credit("q", 5))
    t0 = h.now
    h.send(P, f.Publish("q", 1, [b"later"], [], f.Options(delay_ms=1000)))
    stored(h)  # the publish is stored; the message waits for its due time
    due = t0 + 1.0
    assert h.core.next_deadline() <= due
    h.core.tick(due - 0.001)
    h.core.dispatch(due - 0.001)
    assert delivers(h.take()) == []  # never early
    assert not h.core.has_unstored()  # and nothing stored ahead of it
    h.core.tick(due)
    h.core.dispatch(due)
    [(who, d)] = delivers(h.take())  # at once: no commit in between
    assert (who, d.ids, d.attempts) == (A, [1], [1])
    assert h.core.take_batch().updates == [([1], [1], 0.0, DELIVERED)]


def test_a_message_moved_into_a_queue_with_a_backlog_on_disk_is_not_lost_or_doubled() -> None:
    """Its row may not be committed when the next page is read: it waits in memory
    (found by the hostile check: redriven messages vanished until a restart)."""
    h = durable(window=2)
    h.send(A, f.Manage(1, "declare", {"queue": "q", "settings": {"dlq": "dead"}}))
    h.publish(2, "dead")
    h.publish(1, "dead")  # the window is full: 3 stays on disk
    h.publish(1, "q")  # id 4
    h.core.take_batch()
    h.send(A, f.Credit("q", 1))
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    h.send(A, f.Nack(d.ids, d.attempts, False, 0, "dead now"))  # 4 moves behind the disk
    dead = h.core.queues["dead"]
    assert (dead.disk, dead.cursor, dead.ready_count()) == (1, 2, 3)  # 1, 2 and 4
    h.send(A, f.Credit("dead", 10))
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert d.ids == [1, 2, 4]
    # The page read from disk holds 3, and 4 too once its move is committed.
    page = [StoredMessage(3, "dead", b"m", None, 0, 0.0),
            StoredMessage(4, "dead", b"m", None, 0, 0.0)]
    h.core.paged_in("dead", 2, page, h.now)
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert d.ids == [3]
    assert (dead.disk, dead.moved_in) == (0, set())


def test_acked_places_free_only_once_the_acks_are_stored() -> None:
    """A consumer never holds more unacked and unstored-acked messages together than it
    granted, so a crash brings back at most its window of acked messages."""
    h = durable()
    h.send(A, f.Credit("q", 2))
    h.publish(5)
    h.core.take_batch()
    h.core.dispatch()
    [(_, d)] = delivers(h.take())
    assert d.ids == [1, 2]
    c = h.core.take_commit()  # their attempt numbers
    h.core.committed(c.pending)
    h.send(A, f.Ack([1, 2], [1, 1]))
    h.send(A, f.Credit("q", 2))  # the SDK gives credit back with its acks
    h.core.dispatch()
    assert delivers(h.take()) == []  # the acks are not stored yet
    c = h.core.take_commit()
    assert c.batch.deletes == [1, 2]
    h.core.committed(c.pending)  # stored: the places are free
    h.core.dispatch()
    [(_, d)] = delivers(h.take())
    assert d.ids == [3, 4]


def test_settlements_alone_may_wait_unless_a_consumer_waits_for_them() -> None:
    """Acks and attempt numbers alone are not urgent: the shell lets them wait a
    little to share the fsync of the next publish. A consumer left without a place
    until its acks are stored makes them urgent, as do publishes and replies."""
    h = durable()
    b = b"consumer-b"
    h.hello(b)
    h.send(A, f.Credit("q", 10))
    h.send(b, f.Credit("r", 1))
    h.publish(2)
    h.publish(1, queue="r")
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.dispatch()
    h.take()
    assert h.core.has_unstored()
    assert not h.core.commit_urgent()  # the attempt numbers of the deliveries: they wait
    h.send(A, f.Ack([1], [1]))
    assert not h.core.commit_urgent()  # A has places left
    h.send(b, f.Ack([3], [1]))
    assert h.core.commit_urgent()  # B has none until its ack is stored
    h.core.committed(h.core.take_commit().pending)
    assert not h.core.commit_urgent()
    h.publish(1, commit=False)
    assert h.core.commit_urgent()
