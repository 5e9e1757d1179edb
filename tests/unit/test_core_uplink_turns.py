"""The uplink's core: queues take turns, and a run too large for the centre halves."""

from __future__ import annotations

from tests.unit.test_core_uplink import commit, edge, pub


def test_a_long_backlog_in_one_queue_does_not_hold_up_another() -> None:
    h = edge()
    for _ in range(50):
        pub(h, "orders.big", 10)
    pub(h, "orders.small", 1)
    commit(h)
    firsts = []
    for _ in range(4):  # room for one run at a time: the queues take turns
        runs = h.core.uplink_take(1, 1 << 30)
        assert len(runs) == 1
        firsts.append(runs[0].q.name)
    assert "orders.small" in firsts[:2], firsts
    assert firsts.count("orders.big") >= 2, firsts


def test_a_deleted_and_remade_forwarded_queue_is_taken_from() -> None:
    h = edge()
    pub(h, "orders.a", 2)
    commit(h)
    assert [r.q.name for r in h.core.uplink_take(100, 1 << 30)] == ["orders.a"]
    del h.core.queues["orders.a"]  # what MANAGE delete leaves
    pub(h, "orders.a", 3)
    commit(h)
    runs = h.core.uplink_take(100, 1 << 30)
    assert [(r.q.name, len(r.msgs)) for r in runs] == [("orders.a", 3)]
    assert runs[0].q is h.core.queues["orders.a"]


def test_halves_keep_every_message_in_order_with_their_sizes() -> None:
    h = edge()
    pub(h, "orders.a", 5, headers=[{"k": i} for i in range(5)])
    commit(h)
    (run,) = h.core.uplink_take(100, 1 << 30)
    a, b = run.halves()
    assert [m.id for m in a.msgs] + [m.id for m in b.msgs] == [m.id for m in run.msgs]
    assert (len(a.msgs), len(b.msgs)) == (2, 3)
    assert (a.seq, b.seq) == (run.seq, run.seq + 2)
    assert a.size == sum(len(m.body) + m.hsize for m in a.msgs)
    assert a.size + b.size == run.size
