"""The order of shipped batches (zq.ha.stream): confirms released once each, in order,
only after the standby's ack; resends from the window or a backup; and the standby's
verdict on each arrival."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zq.ha.stream import Incoming, Outgoing, Verdict


def test_confirms_wait_for_the_ack_and_go_in_order() -> None:
    out: Outgoing[str] = Outgoing(term=3)
    assert [out.ship([b"x"], f"c{i}") for i in range(1, 5)] == [1, 2, 3, 4]
    assert out.unacked == 4
    assert out.acked(2) == ["c1", "c2"]  # cumulative
    assert out.acked(2) == []  # repeated: nothing twice
    assert out.acked(1) == []  # older: nothing
    assert out.acked(4) == ["c3", "c4"]
    assert out.unacked == 0
    with pytest.raises(ValueError, match="only 4 were shipped"):
        out.acked(5)


def test_a_standby_that_missed_batches_gets_them_again_or_a_backup() -> None:
    out: Outgoing[int] = Outgoing(term=1, keep=3)
    for i in range(1, 6):
        out.ship([b"%d" % i], i)
    assert out.over  # five unacked, three kept: too slow to keep in sync
    assert [s for s, _ in out.since(2) or []] == [3, 4, 5]  # unacked ones stay
    out.acked(5)
    assert not out.over
    assert out.since(5) == []
    assert [s for s, _ in out.since(2) or []] == [3, 4, 5]  # the last three, acked
    assert out.since(1) is None  # batch 2 is gone: a backup


def test_the_window_is_bounded_in_bytes_too() -> None:
    out: Outgoing[int] = Outgoing(term=1, keep=100, keep_bytes=10)
    out.ship([b"12345"], 1)
    out.ship([b"12345"], 2)
    assert not out.over
    out.ship([b"1"], 3)
    assert out.over
    out.acked(3)
    assert out.since(1) == [(2, [b"12345"]), (3, [b"1"])]  # the oldest went


def test_the_standbys_verdicts() -> None:
    inc = Incoming()
    assert inc.check(1, 1) is Verdict.APPLY
    assert inc.check(1, 2) is Verdict.GAP  # a first term must start at 1
    inc.applied(1, 1)
    assert inc.check(1, 2) is Verdict.APPLY
    assert inc.check(1, 1) is Verdict.DUPLICATE
    assert inc.check(1, 5) is Verdict.GAP
    assert inc.expects == 2
    assert inc.check(2, 1) is Verdict.APPLY  # a new primary numbers from 1
    assert inc.check(2, 3) is Verdict.GAP
    inc.applied(1, 2)
    inc.applied(2, 1)
    assert inc.check(1, 3) is Verdict.STALE  # the deposed primary
    with pytest.raises(ValueError, match="not the next batch"):
        inc.applied(2, 3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ship", "ack"]), st.integers(0, 40)),
                max_size=60))
def test_every_confirm_is_released_once_in_order_and_only_when_acked(
        ops: list[tuple[str, int]]) -> None:
    out: Outgoing[int] = Outgoing(term=1, keep=4, keep_bytes=1 << 20)
    released: list[int] = []
    for op, n in ops:
        if op == "ship":
            seq = out.ship([b"b"], out.last_seq + 1)
            assert seq == out.last_seq
        elif n <= out.last_seq:
            got = out.acked(n)
            assert all(x <= n for x in got)
            released += got
        assert released == list(range(1, out.last_acked + 1))
        resend = out.since(out.last_acked)
        assert resend is not None  # unacked batches are always kept
        assert [s for s, _ in resend] == list(range(out.last_acked + 1, out.last_seq + 1))
