"""Attempts count only attempts that were made: restarts, start marks, lost sessions.

Each test names the rule of PROTOCOL.md (sections 12 and 12.5) it checks.
"""

from __future__ import annotations

from tests.unit.test_core import A, B, Harness, P, delivers, errors_of
from tests.unit.test_core_durable import stored
from zq.persistence.base import AHEAD, DELIVERED, WAITING, Recovered, StoredMessage
from zq.protocol import frames as f


def marking(*identities: bytes, durable: bool = False, **cfg: object) -> Harness:
    """A harness whose consumers say ``starts`` in HELLO (as the zq SDK does)."""
    h = Harness(**cfg)  # type: ignore[arg-type]
    h.core.durable = durable
    h.hello(P)
    for identity in identities:
        h.send(identity, f.Hello(identity.decode(), starts=True))
    h.take()
    return h


def deliver(h: Harness, who: bytes, n: int, credit: int = 10) -> f.Deliver:
    h.send(who, f.Credit("q", credit))
    h.publish(n)
    h.core.dispatch()
    out = stored(h) if h.core.durable else h.take()
    (_, d), = delivers(out)
    return d


def redeliver(h: Harness, who: bytes, credit: int = 10) -> f.Deliver:
    if who not in h.core.peers:
        h.hello(who)
    h.send(who, f.Credit("q", credit))
    h.core.dispatch()
    out = stored(h) if h.core.durable else h.take()
    (_, d), = delivers(out)
    return d


# ------------------------------------------------------------- start marks (12.5)


def probe(h: Harness, who: bytes, ack: bool = True) -> f.Deliver:
    """The next DELIVER to ``who`` (credit already granted), acked if ``ack``."""
    h.core.dispatch()
    (_, d), = delivers(h.take())
    if ack:
        h.send(who, f.Ack(d.ids, d.attempts))
    return d


def test_a_lost_consumer_is_charged_only_for_what_it_started() -> None:
    h = marking(A, B)
    deliver(h, A, 5)
    h.send(A, f.Start([1, 2], [1, 1]))
    h.send(A, f.Ack([1], [1]))
    h.core.drop_peer(h.core.peers[A], "silent")
    h.send(B, f.Credit("q", 10))
    d = probe(h, B, ack=False)  # what it held is suspect now: one at a time, alone
    assert (d.ids, d.attempts) == ([2], [2])  # 2 was started: a failed attempt
    assert d.headers[0]["zq-history"][0]["outcome"] == "consumer lost"
    h.send(B, f.Ack(d.ids, d.attempts))
    rest = [probe(h, B) for _ in range(3)]
    assert [(d.ids, d.attempts, d.headers) for d in rest] == [
        ([3], [1], []), ([4], [1], []), ([5], [1], [])]  # never started: not charged


def test_a_suspect_held_alone_by_a_consumer_that_vanishes_is_charged() -> None:
    """Its START may have died with the process; held alone, it was the one."""
    h = marking(A, B)
    deliver(h, A, 3)  # taken, and A dies before any START or ack leaves it
    h.core.drop_peer(h.core.peers[A], "no sign of life")
    h.send(B, f.Credit("q", 10))
    d = probe(h, B, ack=False)
    assert (d.ids, d.attempts) == ([1], [1])  # nothing charged yet, but 1 goes alone
    h.core.dispatch()
    assert delivers(h.take()) == []  # and B gets nothing more while it holds it
    h.core.drop_peer(h.core.peers[B], "no sign of life")
    c = b"consumer-c"
    h.send(c, f.Hello("c", starts=True))
    h.take()
    h.send(c, f.Credit("q", 10))
    d = probe(h, c, ack=False)
    assert (d.ids, d.attempts) == ([1], [2])
    assert d.headers[0]["zq-history"][0]["consumer"] == "consumer-b"


def test_a_probe_that_is_started_lets_more_come() -> None:
    h = marking(A, B)
    deliver(h, A, 3)
    h.core.drop_peer(h.core.peers[A], "silent")
    h.send(B, f.Credit("q", 10))
    d = probe(h, B, ack=False)
    h.send(B, f.Start(d.ids, d.attempts))  # work on it began: the next may come
    d2 = probe(h, B, ack=False)
    assert d2.ids == [2]
    h.core.drop_peer(h.core.peers[B], "silent")  # 1 was begun: it is charged; 2 was not
    c = b"consumer-c"
    h.send(c, f.Hello("c", starts=True))
    h.take()
    h.send(c, f.Credit("q", 10))
    assert [(d.ids, d.attempts) for d in (probe(h, c) for _ in range(3))] == [
        ([1], [2]), ([2], [1]), ([3], [1])]


def test_once_the_suspects_are_cleared_batches_resume() -> None:
    h = marking(A, B)
    deliver(h, A, 4)
    h.core.drop_peer(h.core.peers[A], "silent")
    h.send(B, f.Credit("q", 10))
    assert [probe(h, B).ids for _ in range(4)] == [[1], [2], [3], [4]]
    h.publish(3)
    assert probe(h, B).ids == [5, 6, 7]  # no suspect left: a batch again


def test_a_bye_charges_only_what_was_marked_and_leaves_no_suspects() -> None:
    """A consumer that says BYE is alive: its marks are complete."""
    h = marking(A)
    deliver(h, A, 3)
    h.send(A, f.Start([2], [1]))
    h.send(A, f.Bye("closing"))
    d = redeliver(h, B)
    assert (d.ids, d.attempts) == ([1, 2, 3], [1, 2, 1])


def test_a_session_without_starts_is_charged_for_everything_it_held() -> None:
    """... and, not marking its starts either, gets suspects in ordinary batches."""
    h = Harness()
    h.hello(P, A)
    deliver(h, A, 3)
    h.core.drop_peer(h.core.peers[A], "silent")
    h.hello(B)
    h.send(B, f.Credit("q", 10))
    d = probe(h, B)
    assert (d.ids, d.attempts) == ([1, 2, 3], [2, 2, 2])


def test_a_start_for_another_attempt_or_session_is_ignored() -> None:
    h = marking(A, B)
    deliver(h, A, 2)
    h.send(A, f.Start([1, 2, 99], [2, 1, 1]))  # 1 at a wrong attempt, 99 never delivered
    h.send(B, f.Start([1], [1]))  # not B's delivery
    assert errors_of(h.take()) == []  # advisory: never answered
    h.core.drop_peer(h.core.peers[A], "silent")
    h.send(B, f.Credit("q", 10))
    assert [(d.ids, d.attempts) for d in (probe(h, B) for _ in range(2))] == [
        ([1], [1]), ([2], [2])]


def test_a_poison_message_dies_and_the_ones_beside_it_live() -> None:
    """A consumer holding 10 dies on message 1 every time, before any START leaves it:
    1 dies after its 5 attempts, 2..10 are never charged."""
    h = marking(A)
    deliver(h, A, 10)
    for _ in range(6):  # the first crash only makes them suspects
        h.core.drop_peer(h.core.peers[A], "killed")
        if h.core.queues["q"].dead:
            break
        h.send(A, f.Hello("a", starts=True))
        h.send(A, f.Credit("q", 10))
        h.take()
        assert probe(h, A, ack=False).ids == [1]
    assert h.core.queues["q"].dead == 1
    assert [m.id for m in h.core.queues["q.dlq"].ready_msgs()] == [1]
    h.send(B, f.Hello("b", starts=True))
    h.take()
    h.send(B, f.Credit("q", 10))
    rest = [probe(h, B) for _ in range(9)]
    assert [(d.ids[0], d.attempts[0]) for d in rest] == [(i, 1) for i in range(2, 11)]


# ------------------------------------------------------------- restarts (12, 13.2)


def recovered(h: Harness, *rows: StoredMessage) -> None:
    h.core.durable = True
    h.core.recover(Recovered(messages=list(rows), next_id=100), h.now)


def test_an_attempt_stored_ahead_is_taken_back_at_a_restart() -> None:
    """A delayed message due (or waiting out a backoff) whose next attempt number was
    stored ahead of its due time comes back with the attempts that were made."""
    h = Harness(heartbeat=100.0)  # A stays alive across the 5 s below
    h.core.wall_offset = 1000.0
    wall = h.now + 1000.0
    hist = {"zq-history": [{"attempt": 1, "outcome": "nacked"}]}
    recovered(h, StoredMessage(1, "q", b"due", None, 1, wall - 1.0, state=AHEAD),
              StoredMessage(2, "q", b"backoff", hist, 2, wall + 5.0, state=AHEAD))
    d = redeliver(h, A)
    assert (d.ids, d.attempts) == ([1], [1])  # its first delivery ever
    h.core.tick(h.now + 5.0)
    h.core.dispatch()
    (_, d), = delivers(stored(h))
    assert (d.ids, d.attempts) == ([2], [2])  # the retry after attempt 1, not attempt 3


def test_a_broker_stop_never_costs_a_message_an_attempt() -> None:
    """In flight when the broker crashed: back as if released (the next delivery repeats
    that attempt number), no history entry, whatever its max_attempts."""
    h = Harness()
    recovered(h, StoredMessage(1, "q", b"x", None, 1, 0.0, state=DELIVERED),
              StoredMessage(2, "q", b"y", None, 3, 0.0, opts={"max_attempts": 3},
                            state=DELIVERED),
              StoredMessage(3, "q", b"z", None, 2, 0.0, state=WAITING))
    assert not h.core.take_batch().updates  # nothing to record
    d = redeliver(h, A)
    assert (d.ids, d.attempts, d.headers) == ([1, 2, 3], [1, 3, 3], [])


def test_a_clean_shutdown_gives_back_what_consumers_held_unattempted() -> None:
    h = marking(A, durable=True)
    deliver(h, A, 3)
    h.send(A, f.Start([1], [1]))
    h.core.take_batch()
    h.core.close_sessions("broker shutting down")
    batch = h.core.take_batch()
    assert batch.updates == [([1], [0], 0.0, WAITING), ([2], [0], 0.0, WAITING),
                             ([3], [0], 0.0, WAITING)]


def test_a_publish_into_a_dead_letter_queue_is_refused_but_the_session_goes_on() -> None:
    h = Harness()
    h.hello(P)
    h.send(P, f.Publish("jobs.dlq", 7, [b"x"]))
    h.send(P, f.Publish("bad name", 8, [b"x"]))
    h.send(P, f.Publish("ok", 9, [b"x"]))
    out = h.run()
    assert [(e.name, e.op, e.ref) for _, e in errors_of(out)] == [
        ("INVALID_QUEUE_NAME", f.PUBLISH, 7), ("INVALID_QUEUE_NAME", f.PUBLISH, 8)]
    assert isinstance(out[-1][1], f.Confirm)
    assert set(h.core.queues) == {"ok"}  # nothing created for the refused names


def test_credit_and_declare_on_a_bad_name_are_refused() -> None:
    h = Harness()
    h.hello(A)
    h.send(A, f.Credit("../../etc", 5))
    h.send(A, f.Manage(1, "declare", {"queue": "tab\there"}))
    h.send(A, f.Manage(2, "declare", {"queue": "ok", "settings": {"dlq": "a b"}}))
    errs = [(e.name, e.op, e.ref) for _, e in errors_of(h.run())]
    assert errs == [("INVALID_QUEUE_NAME", f.CREDIT, "../../etc"),
                    ("INVALID_QUEUE_NAME", f.MANAGE, 1), ("INVALID_ARGUMENT", f.MANAGE, 2)]
    assert h.core.queues == {}
