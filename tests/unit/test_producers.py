"""Idempotent producers in the core: a resent PUBLISH is confirmed with its first ids.

PROTOCOL.md section 11.4: a HELLO that names a producer id makes the broker keep
the seqs of that producer's stored PUBLISH frames; a frame with a remembered seq
(and the same number of bodies) is answered with the ids it got, after the commit
under way, and stores nothing.
"""

from __future__ import annotations

from tests.unit.test_core import A, Harness, errors_of, only
from zq.core.producers import Producers
from zq.errors import StorageError
from zq.persistence.base import ALL_SEQS, Recovered
from zq.protocol import frames as f

PID = b"\x01" * 16


def durable(**cfg: object) -> Harness:
    h = Harness(**cfg)  # type: ignore[arg-type]
    h.core.durable = True
    h.send(A, f.Hello("producer", producer=PID))
    h.take()
    return h


def reconnect(h: Harness, identity: bytes = A, pid: bytes = PID) -> None:
    """The session breaks (BYE) and a new one opens with the same producer id."""
    h.send(identity, f.Bye("reconnect"))
    h.send(identity, f.Hello("producer", producer=pid))
    assert isinstance(only(h.take(), f.Welcome), f.Welcome)


def commit(h: Harness) -> list[tuple[bytes, f.Frame]]:
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.release(c.deliveries)
    return h.take()


def test_a_resent_frame_is_confirmed_with_its_first_ids_and_not_stored_again() -> None:
    h = durable()
    h.send(A, f.Publish("q", 7, [b"a", b"b", b"c"]))
    confirm = only(commit(h), f.Confirm)
    assert confirm.entries == [(7, 1, 3)]
    reconnect(h)  # the CONFIRM was lost with the session: the client sends it again
    h.send(A, f.Publish("q", 7, [b"a", b"b", b"c"]))
    c = h.core.take_commit()
    assert c.batch.inserts == []
    assert c.batch.produced == []
    h.core.committed(c.pending)
    assert only(h.take(), f.Confirm).entries == [(7, 1, 3)]
    assert h.core.counters["resent"] == 1
    assert h.core.queues["q"].published == 3


def test_a_frame_resent_before_its_commit_returns_waits_for_that_commit() -> None:
    h = durable()
    h.send(A, f.Publish("q", 1, [b"a"]))
    c1 = h.core.take_commit()  # under way
    reconnect(h)
    h.send(A, f.Publish("q", 1, [b"a"]))
    h.core.committed(c1.pending)
    h.take()  # the first session's CONFIRM has nowhere to go
    c2 = h.core.take_commit()
    assert c2.batch.inserts == []
    h.core.committed(c2.pending)
    assert only(h.take(), f.Confirm).entries == [(1, 1, 1)]


def test_a_resend_of_a_refused_frame_is_refused_too_and_then_stored() -> None:
    h = durable()
    h.send(A, f.Publish("q", 1, [b"a"]))
    c1 = h.core.take_commit()
    h.send(A, f.Publish("q", 1, [b"a"]))  # same seq, resent while the commit runs
    h.core.refuse(c1, StorageError("disk I/O error"))
    assert [e.ref for _, e in errors_of(h.take())] == [1]
    c2 = h.core.take_commit()
    h.core.committed(c2.pending)
    err = errors_of(h.take())
    assert [(e.ref, e.code) for _, e in err] == [(1, StorageError.code)]
    h.send(A, f.Publish("q", 1, [b"a"]))  # the client's next try is a new message
    assert only(commit(h), f.Confirm).entries == [(1, 2, 1)]


def test_without_a_producer_id_a_resend_is_stored_twice() -> None:
    h = Harness()
    h.core.durable = True
    h.hello(A)
    h.send(A, f.Publish("q", 1, [b"a"]))
    commit(h)
    h.send(A, f.Bye(""))
    h.hello(A)
    h.send(A, f.Publish("q", 1, [b"a"]))
    assert only(commit(h), f.Confirm).entries == [(1, 2, 1)]


def test_another_producer_or_another_count_is_not_a_resend() -> None:
    h = durable()
    h.send(A, f.Publish("q", 1, [b"a"]))
    commit(h)
    h.send(A, f.Publish("q", 1, [b"a", b"b"]))  # a client bug: same seq, other frame
    assert only(commit(h), f.Confirm).entries == [(1, 2, 2)]
    reconnect(h, pid=b"\x02" * 16)
    h.send(A, f.Publish("q", 1, [b"a"]))
    assert only(commit(h), f.Confirm).entries == [(1, 4, 1)]


def test_the_seqs_are_staged_with_the_messages_and_recovered() -> None:
    h = durable()
    h.send(A, f.Publish("q", 5, [b"a", b"b"]))
    h.send(A, f.Publish("r", 6, [b"c"]))
    c = h.core.take_commit()
    assert c.batch.produced == [(PID, 5, 1, 2), (PID, 6, 3, 1)]
    # A restarted broker that recovers those rows confirms a resend with the old ids.
    h2 = Harness()
    h2.core.durable = True
    h2.core.recover(Recovered(messages=[], next_id=4,
                              producers=[(PID, h2.now, [(5, 1, 2), (6, 3, 1)])]), h2.now)
    h2.send(A, f.Hello("producer", producer=PID))
    h2.take()
    h2.send(A, f.Publish("r", 6, [b"c"]))
    assert only(commit(h2), f.Confirm).entries == [(6, 3, 1)]


def test_the_table_keeps_the_latest_frames_and_stages_trims() -> None:
    h = durable(producer_window=3)
    for seq in range(1, 6):
        h.send(A, f.Publish("q", seq, [b"x"]))
    commit(h)
    table = h.core.producers
    assert [table.get(PID, s) for s in range(1, 6)] == [None, None, (3, 1), (4, 1), (5, 1)]
    h.now += 1.5
    h.core.tick(h.now)
    assert h.core.take_commit().batch.trims == [(PID, 3)]


def test_an_idle_producer_is_forgotten_after_its_ttl() -> None:
    h = durable(producer_ttl=10.0)
    h.send(A, f.Publish("q", 1, [b"x"]))
    commit(h)
    h.now += 11.0
    h.core.tick(h.now)
    assert h.core.take_commit().batch.trims == [(PID, ALL_SEQS)]
    assert h.core.producers.get(PID, 1) is None


def test_producers_table_drop_forgets_only_the_frame_it_names() -> None:
    t = Producers(keep=10, ttl=60.0)
    t.put(PID, 1, 10, 2, 0.0)
    t.drop(PID, 1, 99)  # another attempt's ids: not this frame
    assert t.get(PID, 1) == (10, 2)
    t.drop(PID, 1, 10)
    assert t.get(PID, 1) is None
    t.put(PID, 1, 20, 1, 0.0)  # the resend, stored anew
    assert t.get(PID, 1) == (20, 1)
    assert len(t) == 1
