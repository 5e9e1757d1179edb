"""BrokerCore of a replicated broker (zq.ha): a stored batch's publishes wait for the
standby's ack (stored_awaiting) before they are queued and confirmed (replicated)."""

from __future__ import annotations

import pytest

from tests.unit.test_core import A, Harness, P, delivers, errors_of
from zq.core.state import Commit
from zq.errors import Unavailable
from zq.protocol import frames as f


def replicated_broker() -> Harness:
    h = Harness()
    h.core.durable = True
    h.hello(P, A)
    return h


def publish(h: Harness, n: int, queue: str = "q") -> int:
    h.seq += 1
    h.send(P, f.Publish(queue, h.seq, [b"m%d" % i for i in range(n)]))
    return h.seq


def stored_here(h: Harness) -> Commit:
    """The commit returned on this node; its publishes now wait for the standby."""
    c = h.core.take_commit()
    h.core.stored_awaiting(c.pending)
    h.core.release(c.deliveries)
    return c


def confirms(out: list[tuple[bytes, f.Frame]]) -> list[tuple[int, int, int]]:
    return [(seq, first, n) for _, fr in out if isinstance(fr, f.Confirm)
            for seq, first, n in fr.entries]


def test_a_stored_batch_is_neither_confirmed_nor_deliverable_before_the_ack() -> None:
    h = replicated_broker()
    h.send(A, f.Credit("q", 10))
    seq = publish(h, 3)
    c = stored_here(h)
    h.core.dispatch()
    assert h.take() == []  # no CONFIRM, no DELIVER
    q = h.core.queues["q"]
    assert q.ready_count() == 0
    assert h.core.journal.in_progress() == c.pending
    assert [p.seq for p in h.core.journal.awaiting] == [seq]
    assert h.core.first_unstored(q) == 1  # a purge now would spare them
    assert h.core.stats()["queues"]["q"]["ready"] == 0


def test_the_ack_confirms_and_queues_them() -> None:
    h = replicated_broker()
    seq = publish(h, 3)
    c = stored_here(h)
    assert h.take() == []
    h.core.replicated(c.pending)
    out = h.take()
    assert confirms(out) == [(seq, 1, 3)]
    assert errors_of(out) == []
    q = h.core.queues["q"]
    assert q.ready_count() == 3
    assert h.core.journal.in_progress() == []
    assert h.core.journal.awaiting == []
    h.send(A, f.Credit("q", 10))
    h.core.dispatch()
    [(_, d)] = delivers(h.take())
    assert d.ids == [1, 2, 3]


def test_publishes_after_the_stored_batch_stay_behind_it_in_progress() -> None:
    h = replicated_broker()
    publish(h, 1)
    c1 = stored_here(h)
    publish(h, 2)
    c2 = h.core.take_commit()  # under way
    publish(h, 1)  # not committed yet
    assert [p.first for p in h.core.journal.in_progress()] == [1, 2, 4]
    h.core.stored_awaiting(c2.pending)
    assert [p.first for p in h.core.journal.awaiting] == [1, 2]
    h.core.replicated(c1.pending)
    assert [p.first for p in h.core.journal.in_progress()] == [2, 4]
    assert h.core.queues["q"].ready_count() == 1


def test_batches_must_be_released_in_order() -> None:
    h = replicated_broker()
    s1 = publish(h, 1)
    c1 = stored_here(h)
    s2 = publish(h, 2)
    c2 = stored_here(h)
    with pytest.raises(AssertionError, match="in order"):
        h.core.replicated(c2.pending)
    assert h.take() == []  # refused whole: nothing confirmed, nothing queued
    assert h.core.queues["q"].ready_count() == 0
    assert h.core.journal.awaiting == c1.pending + c2.pending
    h.core.replicated(c1.pending)
    assert confirms(h.take()) == [(s1, 1, 1)]
    with pytest.raises(AssertionError, match="in order"):
        h.core.replicated(c1.pending)  # released already
    h.core.replicated(c2.pending)
    assert confirms(h.take()) == [(s2, 2, 2)]
    assert h.core.queues["q"].ready_count() == 3


def test_a_lost_standby_answers_with_the_error_yet_the_messages_stay() -> None:
    h = replicated_broker()
    seq = publish(h, 2)
    c = stored_here(h)
    h.core.replicated(c.pending, Unavailable("the standby was lost"))
    out = h.take()
    assert confirms(out) == []
    [(who, err)] = errors_of(out)
    assert who == P
    assert (err.name, err.code, err.op, err.ref) == ("UNAVAILABLE", 21, f.PUBLISH, seq)
    assert "standby" in err.text
    assert h.core.queues["q"].ready_count() == 2  # stored here: they are served
    assert h.core.journal.awaiting == []
    h.send(A, f.Credit("q", 10))
    h.core.dispatch()
    [(_, d)] = delivers(h.take())
    assert d.ids == [1, 2]


def test_an_error_answers_each_publish_of_the_batch() -> None:
    h = replicated_broker()
    s1 = publish(h, 1)
    s2 = publish(h, 1, queue="r")
    c = stored_here(h)
    assert len(c.pending) == 2
    h.core.replicated(c.pending, Unavailable("x"))
    errs = errors_of(h.take())
    assert [(e.name, e.op, e.ref) for _, e in errs] == [
        ("UNAVAILABLE", f.PUBLISH, s1), ("UNAVAILABLE", f.PUBLISH, s2)]
    assert (h.core.queues["q"].ready_count(), h.core.queues["r"].ready_count()) == (1, 1)


def test_acks_stored_with_the_batch_repay_credit_at_once() -> None:
    # stored_awaiting ends the commit under way: the places its acks owe come back
    # without waiting for the standby (acks are not confirms).
    h = replicated_broker()
    h.send(A, f.Credit("q", 1))
    publish(h, 2)
    h.core.replicated(stored_here(h).pending)
    h.core.dispatch()
    [(_, d)] = delivers(h.take())
    assert d.ids == [1]
    h.send(A, f.Ack(d.ids, d.attempts))
    h.send(A, f.Credit("q", 1))  # pays for the acked one's place, once its ack is stored
    h.core.dispatch()
    assert delivers(h.take()) == []
    c = stored_here(h)
    assert c.batch.deletes == [1]
    h.core.dispatch()
    [(_, d2)] = delivers(h.take())
    assert d2.ids == [2]
