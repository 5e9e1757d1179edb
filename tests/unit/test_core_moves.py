"""Moving a queue between brokers, both ends in the core, no I/O (PROTOCOL.md 17.5).

The source records the move, turns publishes, credit and its consumers away with
MOVED once the target has the queue, hands out its ready and delayed messages,
deletes only what the target stored, waits for what consumers hold, and ends with
a record of where the queue went. The target stores each message once, whatever
is sent again, forgets what a failed commit did not store, and lists the queue
only when the move is done.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tests.unit.test_core import A, B, Harness, errors_of, only
from tests.unit.test_core_cluster import CFG, L, link, names_on
from zq.core.membership import Membership
from zq.errors import InvalidArgument, Moved, QueueConflict, StorageError, UnknownQueue
from zq.manage import manage
from zq.persistence.base import Recovered
from zq.protocol import frames as f

P = b"producer-p"


def broker(node: str) -> Harness:
    h = Harness()
    h.core.membership = Membership(CFG, node)
    h.core.durable = True
    return h


def run(h: Harness) -> list[tuple[bytes, f.Frame]]:
    """One pass of a durable broker: commit, then dispatch, commit what that staged
    (the attempt numbers), and send."""
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.release(c.deliveries)
    h.core.dispatch(h.now)
    c = h.core.take_commit()
    h.core.committed(c.pending)
    h.core.release(c.deliveries)
    return h.take()


def op(h: Harness, name: str, **args: Any) -> dict[str, Any]:
    out = manage(h.core, f.Manage(1, name, args), h.now)
    assert out is not None
    return out


def loaded(n: int = 5) -> tuple[Harness, str]:
    """Broker b1 with ``n`` ready messages and one delayed in a queue of its own."""
    h = broker("b1")
    q = names_on("b1")[0]
    h.hello(P)
    h.send(P, f.Publish(q, 1, [b"m%d" % i for i in range(n)]))
    h.send(P, f.Publish(q, 2, [b"later"], opts=f.Options(delay_ms=60_000)))
    h.core.committed(h.core.take_commit().pending)
    h.take()
    return h, q


def test_a_move_is_refused_clearly() -> None:
    h, q = loaded()
    with pytest.raises(UnknownQueue):
        op(h, "move", queue="nope", to="b2")
    with pytest.raises(InvalidArgument, match="on broker b1 already"):
        op(h, "move", queue=q, to="b1")
    with pytest.raises(InvalidArgument, match="no broker 'b9'"):
        op(h, "move", queue=q, to="b9")
    lone = Harness()
    lone.core.queue("x")
    with pytest.raises(InvalidArgument, match="needs a cluster"):
        op(lone, "move", queue="x", to="b2")
    op(h, "declare", queue=names_on("b1")[1], settings={"dlq": q})
    with pytest.raises(InvalidArgument, match="dead-letter queue of"):
        op(h, "move", queue=q, to="b2")


def test_the_source_turns_publishes_credit_and_consumers_away_once_prepared() -> None:
    h, q = loaded()
    h.hello(A)
    h.send(A, f.Credit(q, 2))
    run(h)
    status = op(h, "move", queue=q, to="b2")
    assert (status["phase"], status["to"], status["left"]) == ("prepare", "b2", 6)
    assert h.core.moves_started
    blob = msgpack.unpackb(h.core.take_commit().batch.settings[-1][1])
    assert blob["moving"]["to"] == "b2"  # stored with the queue: a restart resumes it
    h.send(P, f.Publish(q, 3, [b"still here"]))  # before the target has it: served here
    assert not errors_of(h.take())
    h.core.move_prepared(q)
    out = h.take()
    [(who, err)] = errors_of(out)
    assert (who, err.code, err.op, err.ref) == (A, Moved.code, f.CREDIT, q)
    assert err.info == {"queue": q, "broker": "b2", "endpoint": "tcp://127.0.0.1:5602",
                        "version": 3}
    h.send(P, f.Publish(q, 4, [b"new"]))
    h.send(B, f.Hello("b"))
    h.send(B, f.Credit(q, 5))
    h.send(B, f.Locate(9, q))
    out = h.take()
    assert [(e.code, e.ref) for _, e in errors_of(out)] == [(Moved.code, 4), (Moved.code, q)]
    assert only(out, f.Location).loc == {"queue": q, "broker": "b2", "version": 3,
                                         "endpoint": "tcp://127.0.0.1:5602", "exists": True}
    with pytest.raises(Moved):  # changes are made at the new broker
        h.core.on_manage(h.core.peers[B], f.Manage(2, "purge", {"queue": q}), h.now)


def test_ready_and_delayed_go_out_and_only_stored_ones_are_deleted() -> None:
    h, q = loaded(5)
    op(h, "move", queue=q, to="b2")
    h.core.move_prepared(q)
    h.core.take_commit()
    first = h.core.move_take(q, 3, 1 << 20)
    assert [m.body for m in first] == [b"m0", b"m1", b"m2"]
    rest = h.core.move_take(q, 10, 1 << 20)
    assert [m.body for m in rest] == [b"m3", b"m4", b"later"]
    mv = h.core.queues[q].moving
    assert mv is not None
    assert mv.due[rest[-1].id] > h.now + 59
    assert not h.core.move_finish(q)  # shipped, not yet stored at the target
    h.core.move_shipped(q, first)
    assert h.core.take_commit().batch.deletes == [m.id for m in first]
    h.core.move_shipped(q, rest)
    assert h.core.move_finish(q)
    assert q not in h.core.queues
    assert h.core.moved_out[q].phase == "done"
    batch = h.core.take_commit().batch
    assert sorted(batch.deletes) == sorted(m.id for m in rest)
    assert msgpack.unpackb(batch.settings[-1][1])["moved"]["to"] == "b2"
    h.send(P, f.Publish(q, 7, [b"late"]))  # the record answers for the queue
    assert errors_of(h.take())[0][1].code == Moved.code


def test_messages_held_by_consumers_finish_at_the_source() -> None:
    h, q = loaded(2)
    h.hello(A)
    h.send(A, f.Credit(q, 1))
    [d] = [fr for _, fr in run(h) if isinstance(fr, f.Deliver)]
    op(h, "move", queue=q, to="b2")
    h.core.move_prepared(q)
    taken = h.core.move_take(q, 10, 1 << 20)
    h.core.move_shipped(q, taken)
    assert not h.core.move_finish(q)  # A still holds one
    h.send(A, f.Nack(d.ids, d.attempts))  # back: shipped like the others
    h.take()
    again = h.core.move_take(q, 10, 1 << 20)
    assert [m.id for m in again] == d.ids
    h.core.move_shipped(q, again)
    assert h.core.move_finish(q)


def test_routers_hear_where_the_queue_went() -> None:
    h, q = loaded()
    link(h)
    op(h, "move", queue=q, to="b2")
    h.core.move_prepared(q)
    h.core.dispatch(h.now)
    cat = only(h.take(), f.Catalog)
    assert (cat.kind, cat.queues, cat.moved) == ("remove", [q], {q: "b2"})
    h.send(L, f.Bye("again"))
    h.take()
    out = link(h)
    snap = only(out, f.Catalog)
    assert q not in snap.queues
    assert snap.moved == {q: "b2"}


def target() -> tuple[Harness, str]:
    h = broker("b2")
    h.send(L, f.Hello("router r1", link={"cluster": "demo", "version": 3, "router": "r1"}))
    h.take()
    h.hello(B)
    return h, names_on("b1")[0]


def ship(h: Harness, q: str, ids: list[int], attempts: int = 0) -> dict[str, Any]:
    entries = [[i, attempts, 0, 0, {"h": i}, {"priority": 2}, [[f"k{i}", 2e9]]] for i in ids]
    out = manage(h.core, f.Manage(2, "move_in", {
        "queue": q, "move": "m1", "phase": "ship", "messages": entries,
        "bodies": [b"body%d" % i for i in ids]}), h.now)
    assert out is not None
    return out


def test_the_target_stores_each_message_once_and_lists_the_queue_when_done() -> None:
    h, q = target()
    op(h, "move_in", queue=q, move="m1", phase="begin", **{"from": "b1"},
       settings={"max_attempts": 7}, paused=False)
    h.core.dispatch(h.now)
    assert not [fr for _, fr in h.take() if isinstance(fr, f.Catalog)]  # not listed yet
    assert h.core.queues[q].settings.max_attempts == 7
    assert ship(h, q, [10, 11], attempts=2) == {"queue": q, "stored": 2, "known": 0}
    assert ship(h, q, [10, 11, 12]) == {"queue": q, "stored": 1, "known": 2}
    c = h.core.take_commit()
    assert len(c.batch.inserts) == 3
    assert [u[1] for u in c.batch.updates] == [[2], [2]]  # attempts: updates after inserts
    h.core.committed(c.pending)
    h.send(B, f.Credit(q, 10))
    d = only(run(h), f.Deliver)
    assert d.bodies == [b"body10", b"body11", b"body12"]
    assert d.attempts == [3, 3, 1]
    assert d.headers == [{"h": 10}, {"h": 11}, {"h": 12}]
    h.send(P, f.Hello("p"))
    h.send(P, f.Publish(q, 1, [b"dup"], opts=f.Options(dedup_id="k11")))
    h.core.committed()
    assert only(h.take(), f.Confirm).entries[0][1] == d.ids[1]  # its dedup key came too
    op(h, "move_in", queue=q, move="m1", phase="done")
    h.core.dispatch(h.now)
    assert only(h.take(), f.Catalog).kind == "add"
    with pytest.raises(QueueConflict):
        op(h, "move_in", queue=q, move="m2", phase="begin", **{"from": "b3"}, settings={})


def test_a_failed_commit_at_the_target_is_sent_again_and_stored() -> None:
    h, q = target()
    op(h, "move_in", queue=q, move="m1", phase="begin", **{"from": "b1"}, settings={})
    h.core.committed(h.core.take_commit().pending)
    ship(h, q, [5])
    h.core.commit_failed(StorageError("disk"), h.core.take_commit().pending)
    assert ship(h, q, [5])["stored"] == 1


def test_a_restarted_target_remembers_what_it_stored() -> None:
    h, q = target()
    op(h, "move_in", queue=q, move="m1", phase="begin", **{"from": "b1"}, settings={})
    ship(h, q, [5, 6])
    batch = h.core.take_commit().batch
    again = broker("b2")
    settings = {name: msgpack.unpackb(blob) for name, blob in batch.settings}
    again.core.recover(Recovered([], 100, settings=settings, dedups=batch.dedups), again.now)
    assert ship(again, q, [5, 6, 7])["stored"] == 1


def test_a_restarted_source_keeps_the_move_and_the_record() -> None:
    h, q = loaded(1)
    op(h, "move", queue=q, to="b2")
    h.core.move_prepared(q)
    batch = h.core.take_commit().batch
    again = broker("b1")
    settings = {name: msgpack.unpackb(blob) for name, blob in batch.settings}
    settings["gone"] = {"moved": {"to": "b3", "endpoint": "tcp://127.0.0.1:5603", "id": "x",
                                  "phase": "done", "announced": True}}
    again.core.recover(Recovered([], 100, settings=settings), again.now)
    mv = again.core.queues[q].moving
    assert mv is not None
    assert (mv.to, mv.phase) == ("b2", "ship")
    assert [m.name for m in again.core.outgoing_moves()] == [q]
    again.hello(P)
    again.send(P, f.Publish("gone", 1, [b"x"]))
    assert errors_of(again.take())[0][1].info["broker"] == "b3"


def test_body_parts_are_refused_on_any_other_operation() -> None:
    h = broker("b1")
    h.hello(A)
    h.send(A, f.Manage(5, "declare", {"queue": names_on("b1")[0]}, [b"stray"]))
    [(_, err)] = errors_of(h.take())
    assert (err.code, err.ref) == (InvalidArgument.code, 5)
    assert "takes no body parts" in err.text


def test_move_in_checks_what_it_is_sent() -> None:
    h, q = target()
    with pytest.raises(InvalidArgument, match="no move"):
        ship(h, q, [1])
    op(h, "move_in", queue=q, move="m1", phase="begin", **{"from": "b1"}, settings={})
    for bad in ([["x", 0, 0, 0, None, None, []]], [[1, -1, 0, 0, None, None, []]],
                [[1, 0, "soon", 0, None, None, []]], [[1, 0, 0, 0, [], None, []]],
                [[1, 0, 0, 0, None, None, [["k"]]]], [[1, 0, 0]]):
        with pytest.raises(InvalidArgument):
            manage(h.core, f.Manage(2, "move_in", {"queue": q, "move": "m1", "phase": "ship",
                                                   "messages": bad, "bodies": [b"x"]}), h.now)
    with pytest.raises(InvalidArgument, match="differ in count"):
        manage(h.core, f.Manage(2, "move_in", {
            "queue": q, "move": "m1", "phase": "ship",
            "messages": [[1, 0, 0, 0, None, None, []]], "bodies": []}), h.now)
    with pytest.raises(InvalidArgument, match="phase"):
        op(h, "move_in", queue=q, move="m1", phase="sideways")
