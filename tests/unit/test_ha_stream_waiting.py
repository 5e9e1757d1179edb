"""What waits for the standby's ack (zq.ha.stream.Outgoing.waiting_last and
waiting_unacked): the primary adds to the newest batch's waiting list until it is
acked, and hands what is unacked elsewhere when the standby is lost."""

from __future__ import annotations

from zq.ha.stream import Outgoing


def test_nothing_shipped_nothing_waits() -> None:
    out: Outgoing[list[str]] = Outgoing(term=1)
    assert out.waiting_last() is None
    assert out.waiting_unacked() == []


def test_waiting_last_is_the_newest_batchs_until_it_is_acked() -> None:
    out: Outgoing[list[str]] = Outgoing(term=1)
    first, second = ["c1"], ["c2"]
    out.ship([b"a"], first)
    assert out.waiting_last() is first
    out.ship([b"b"], second)
    assert out.waiting_last() is second
    out.acked(1)  # the older one: the newest still waits
    assert out.waiting_last() is second
    out.acked(2)
    assert out.waiting_last() is None
    out.acked(2)  # repeated
    assert out.waiting_last() is None


def test_waiting_last_after_a_new_ship_past_an_ack() -> None:
    out: Outgoing[list[str]] = Outgoing(term=1)
    out.ship([b"a"], ["c1"])
    out.acked(1)
    third = ["c2"]
    out.ship([b"b"], third)
    assert out.waiting_last() is third


def test_waiting_last_survives_a_trimmed_window() -> None:
    out: Outgoing[list[int]] = Outgoing(term=1, keep=2)
    for i in range(1, 6):
        out.ship([b"x"], [i])
    out.acked(4)  # trims 1..3; 5 stays unacked
    assert out.waiting_last() == [5]
    out.acked(5)
    assert out.waiting_last() is None


def test_waiting_unacked_is_oldest_first_and_empty_once_all_are_acked() -> None:
    out: Outgoing[str] = Outgoing(term=2)
    for i in range(1, 5):
        out.ship([b"x"], f"c{i}")
    assert out.waiting_unacked() == ["c1", "c2", "c3", "c4"]
    out.acked(2)
    assert out.waiting_unacked() == ["c3", "c4"]
    out.ship([b"y"], "c5")
    assert out.waiting_unacked() == ["c3", "c4", "c5"]
    out.acked(out.last_seq)
    assert out.waiting_unacked() == []
    assert out.acked(out.last_seq) == []  # and nothing is released twice


def test_waiting_unacked_does_not_release_anything() -> None:
    out: Outgoing[str] = Outgoing(term=1)
    out.ship([b"x"], "c1")
    out.ship([b"x"], "c2")
    assert out.waiting_unacked() == ["c1", "c2"]
    assert out.waiting_unacked() == ["c1", "c2"]  # asking twice changes nothing
    assert out.acked(2) == ["c1", "c2"]


def test_waiting_unacked_keeps_batches_past_the_window_bounds() -> None:
    # A standby too slow to keep: every unacked batch's waiting stays, none trimmed.
    out: Outgoing[int] = Outgoing(term=1, keep=2, keep_bytes=10)
    for i in range(1, 7):
        out.ship([b"0123456789"], i)
    assert out.over
    assert out.waiting_unacked() == [1, 2, 3, 4, 5, 6]
    out.acked(3)
    assert out.waiting_unacked() == [4, 5, 6]


def test_appended_to_waiting_last_are_released_by_a_later_ack_in_order() -> None:
    out: Outgoing[list[str]] = Outgoing(term=1)
    out.ship([b"a"], ["p1"])
    out.waiting_last().append("p2")  # type: ignore[union-attr]
    out.ship([b"b"], ["p3"])
    last = out.waiting_last()
    assert last is not None
    last.append("p4")
    last.append("p5")
    assert out.waiting_unacked() == [["p1", "p2"], ["p3", "p4", "p5"]]
    released = out.acked(2)
    assert [x for w in released for x in w] == ["p1", "p2", "p3", "p4", "p5"]
    assert out.waiting_last() is None
    assert out.waiting_unacked() == []


def test_appended_after_a_partial_ack_go_with_the_newest_batch() -> None:
    out: Outgoing[list[str]] = Outgoing(term=1)
    out.ship([b"a"], ["p1"])
    out.ship([b"b"], ["p2"])
    assert out.acked(1) == [["p1"]]
    last = out.waiting_last()
    assert last is not None
    last.append("p3")
    assert out.acked(2) == [["p2", "p3"]]
