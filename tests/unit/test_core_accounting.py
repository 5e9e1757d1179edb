"""Attempts count only attempts that were made: restarts, start marks, lost sessions.

Each test names the rule of PROTOCOL.md (sections 12 and 12.5) it checks.
"""

from __future__ import annotations

from tests.unit.test_core import A, B, Harness, P, delivers, errors_of
from tests.unit.test_core_durable import stored
from zq.core import RESTARTED
from zq.persistence.base import AHEAD, DELIVERED, WAITING, Recovered, Rewrite, StoredMessage
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


def test_a_lost_consumer_is_charged_only_for_what_it_started() -> None:
    h = marking(A)
    d = deliver(h, A, 5)
    h.send(A, f.Start([1, 2], [1, 1]))
    h.send(A, f.Ack([1], [1]))
    h.core.drop_peer(h.core.peers[A], "silent")
    d = redeliver(h, B)
    assert d.ids == [2, 3, 4, 5]
    assert d.attempts == [2, 1, 1, 1]  # only 2 was started: 3, 4, 5 were as released
    assert d.headers[0]["zq-history"][0]["outcome"] == "consumer lost"
    assert d.headers[1:] == [None, None, None]  # no history for the ones never started


def test_a_vanished_consumer_with_nothing_marked_is_charged_for_its_first_delivery() -> None:
    """Its START may have died with it: the message it got first is the one it was on."""
    h = marking(A)
    deliver(h, A, 4)
    h.send(A, f.Ack([1], [1]))  # it finished 1, took 2, and died before the START went out
    h.core.drop_peer(h.core.peers[A], "no sign of life")
    d = redeliver(h, B)
    assert (d.ids, d.attempts) == ([2, 3, 4], [2, 1, 1])


def test_a_bye_charges_only_what_was_marked() -> None:
    """A consumer that says BYE is alive: its marks are complete."""
    h = marking(A)
    deliver(h, A, 3)
    h.send(A, f.Bye("closing"))
    d = redeliver(h, B)
    assert (d.ids, d.attempts) == ([1, 2, 3], [1, 1, 1])


def test_a_session_without_starts_is_charged_for_everything_it_held() -> None:
    h = Harness()
    h.hello(P, A)
    deliver(h, A, 3)
    h.core.drop_peer(h.core.peers[A], "silent")
    d = redeliver(h, B)
    assert (d.ids, d.attempts) == ([1, 2, 3], [2, 2, 2])


def test_a_start_for_another_attempt_or_session_is_ignored() -> None:
    h = marking(A, B)
    deliver(h, A, 2)
    h.send(A, f.Start([1, 2, 99], [2, 1, 1]))  # 1 at a wrong attempt, 99 never delivered
    h.send(B, f.Start([1], [1]))  # not B's delivery
    assert errors_of(h.take()) == []  # advisory: never answered
    h.core.drop_peer(h.core.peers[A], "silent")
    d = redeliver(h, B)
    assert (d.ids, d.attempts) == ([1, 2], [1, 2])


def test_start_marks_are_per_queue_for_the_first_delivery_rule() -> None:
    h = marking(A)
    h.send(A, f.Credit("q", 5))
    h.send(A, f.Credit("r", 5))
    h.publish(2, "q")
    h.publish(2, "r")
    h.core.dispatch()
    h.take()
    h.send(A, f.Start([1], [1]))  # on q it was on 1; on r nothing marked: its first, 3
    h.core.drop_peer(h.core.peers[A], "silent")
    h.hello(B)
    h.send(B, f.Credit("q", 5))
    h.send(B, f.Credit("r", 5))
    h.core.dispatch()
    got = {d.queue: (d.ids, d.attempts) for _, d in delivers(h.take())}
    assert got == {"q": ([1, 2], [2, 1]), "r": ([3, 4], [2, 1])}


def test_a_poison_message_dies_and_the_ones_behind_it_live() -> None:
    """Five crashes on message 1 with 2..10 held behind it: 1 is dead, the rest intact."""
    h = marking(A)
    deliver(h, A, 10)
    for crash in range(5):
        h.send(A, f.Start([1], [crash + 1]))
        h.core.drop_peer(h.core.peers[A], "killed")
        h.send(A, f.Hello("a", starts=True))
        h.take()
        if crash < 4:
            h.send(A, f.Credit("q", 10))
            h.core.dispatch()
            (_, d), = delivers(h.take())
            assert d.ids[0] == 1
            assert d.attempts == [crash + 2] + [1] * 9
    q = h.core.queues["q"]
    assert q.dead == 1
    assert [m.id for m in h.core.queues["q.dlq"].ready_msgs()] == [1]
    assert [(m.id, m.attempts) for m in q.ready_msgs()] == [(i, 0) for i in range(2, 11)]


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


def test_a_delivery_in_flight_at_a_crash_is_a_recorded_failed_attempt() -> None:
    h = Harness()
    recovered(h, StoredMessage(1, "q", b"x", None, 1, 0.0, state=DELIVERED),
              StoredMessage(2, "q", b"y", None, 3, 0.0, opts={"max_attempts": 3},
                            state=DELIVERED),
              StoredMessage(3, "q", b"z", None, 2, 0.0, state=WAITING))
    batch = h.core.take_batch()
    rewrites = [u for u in batch.updates if isinstance(u, Rewrite)]
    assert [(r.id, r.queue, r.attempts) for r in rewrites] == [(1, "q", 1), (2, "q.dlq", 0)]
    entry = rewrites[0].headers["zq-history"][0]  # type: ignore[index]
    assert (entry["attempt"], entry["outcome"], entry["reason"]) == (1, "consumer lost",
                                                                     RESTARTED)
    d = redeliver(h, A)
    assert (d.ids, d.attempts) == ([1, 3], [2, 3])  # 2 used its last attempt: dead


def test_a_clean_shutdown_stores_exactly_the_attempts_that_were_made() -> None:
    h = marking(A, durable=True)
    deliver(h, A, 3)
    h.send(A, f.Start([1], [1]))
    h.core.take_batch()
    h.core.close_sessions("broker shutting down")
    batch = h.core.take_batch()
    rewrites = [u for u in batch.updates if isinstance(u, Rewrite)]
    assert [(r.id, r.attempts) for r in rewrites] == [(1, 1)]  # started: failed, recorded
    undone = [u for u in batch.updates if not isinstance(u, Rewrite)]
    assert undone == [([2], [0], 0.0, WAITING), ([3], [0], 0.0, WAITING)]


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
