"""CreditWindow: the bound ``available + in_flight <= limit`` and its refusals."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zq.errors import InvalidCredit
from zq.protocol.credit import CreditWindow


def test_new_window_is_empty() -> None:
    w = CreditWindow(10)
    assert (w.available, w.in_flight, w.limit, w.peak) == (0, 0, 10, 0)
    assert w.take(5) == 0


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        CreditWindow(0)


def test_grant_take_settle() -> None:
    w = CreditWindow(10)
    w.grant(4)
    assert w.available == 4
    assert w.take(3) == 3
    assert (w.available, w.in_flight) == (1, 3)
    assert w.take(5) == 1  # never more than available
    assert (w.available, w.in_flight) == (0, 4)
    assert w.take(5) == 0
    w.settle(2)
    assert (w.available, w.in_flight) == (0, 2)  # settling does not restore credit
    assert w.take(1) == 0


def test_take_zero_takes_nothing() -> None:
    w = CreditWindow(10)
    w.grant(5)
    assert w.take(0) == 0
    assert (w.available, w.in_flight) == (5, 0)


def test_take_negative_takes_nothing() -> None:
    w = CreditWindow(10)
    w.grant(5)
    assert w.take(-3) == 0
    assert (w.available, w.in_flight) == (5, 0)


@pytest.mark.parametrize("n", [0, -1, -100])
def test_grant_refuses_non_positive(n: int) -> None:
    w = CreditWindow(10)
    with pytest.raises(InvalidCredit) as info:
        w.grant(n)
    assert info.value.limit == 10
    assert info.value.credit == n
    assert w.available == 0


def test_grant_refuses_beyond_limit_counting_in_flight() -> None:
    w = CreditWindow(10)
    w.grant(10)  # exactly the limit is fine
    with pytest.raises(InvalidCredit) as info:
        w.grant(1)
    assert info.value.limit == 10
    assert w.take(6) == 6
    with pytest.raises(InvalidCredit):
        w.grant(1)  # 4 available + 6 in flight
    w.settle(6)
    w.grant(6)
    assert (w.available, w.in_flight) == (10, 0)
    with pytest.raises(InvalidCredit):
        CreditWindow(3).grant(4)


def test_refused_grant_changes_nothing() -> None:
    w = CreditWindow(5)
    w.grant(3)
    w.take(1)
    with pytest.raises(InvalidCredit):
        w.grant(3)
    assert (w.available, w.in_flight) == (2, 1)


def test_settle_refuses_more_than_in_flight() -> None:
    w = CreditWindow(5)
    w.grant(2)
    w.take(2)
    with pytest.raises(ValueError, match="settle"):
        w.settle(3)
    with pytest.raises(ValueError, match="settle"):
        w.settle(-1)
    w.settle(0)
    assert w.in_flight == 2


def test_void_drops_available_keeps_in_flight() -> None:
    w = CreditWindow(10)
    w.grant(8)
    w.take(3)
    w.void()
    assert (w.available, w.in_flight) == (0, 3)
    assert w.take(1) == 0
    w.settle(3)
    w.grant(10)
    assert w.available == 10


def test_peak_records_highest_in_flight() -> None:
    w = CreditWindow(10)
    w.grant(6)
    w.take(4)
    w.settle(4)
    w.take(2)
    assert w.peak == 4
    w.grant(8)
    w.take(8)
    assert w.peak == 10


class WindowMachine(RuleBasedStateMachine):
    """Random grants, takes, settles and voids against a plain model of the window."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = 7
        self.w = CreditWindow(self.limit)
        self.available = 0
        self.in_flight = 0
        self.peak = 0

    @rule(n=st.integers(-3, 10))
    def grant(self, n: int) -> None:
        if n <= 0 or self.available + self.in_flight + n > self.limit:
            with pytest.raises(InvalidCredit):
                self.w.grant(n)
        else:
            self.w.grant(n)
            self.available += n

    @rule(want=st.integers(0, 10))
    def take(self, want: int) -> None:
        before = self.w.available
        k = self.w.take(want)
        assert 0 <= k <= min(want, before)
        assert k == min(want, self.available)
        self.available -= k
        self.in_flight += k
        self.peak = max(self.peak, self.in_flight)

    @precondition(lambda self: self.in_flight > 0)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, self.in_flight))
        self.w.settle(n)
        self.in_flight -= n

    @rule()
    def void(self) -> None:
        self.w.void()
        self.available = 0

    @invariant()
    def bounded(self) -> None:
        assert self.w.available + self.w.in_flight <= self.w.limit
        assert self.w.available >= 0
        assert self.w.in_flight >= 0
        assert (self.w.available, self.w.in_flight, self.w.peak) == (
            self.available, self.in_flight, self.peak)


WindowMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30,
                                           deadline=None, derandomize=True, database=None)
TestWindowMachine = WindowMachine.TestCase


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from("gtsv"), st.integers(-2, 12)), max_size=60))
def test_random_ops_never_break_the_bound(ops: list[tuple[str, int]]) -> None:
    w = CreditWindow(10)
    delivered = 0
    for kind, n in ops:
        if kind == "g":
            with contextlib.suppress(InvalidCredit):
                w.grant(n)
        elif kind == "t":
            available = w.available
            k = w.take(max(n, 0))
            assert 0 <= k <= available
            delivered += k
        elif kind == "s":
            w.settle(min(max(n, 0), w.in_flight))
        else:
            w.void()
        assert w.in_flight + w.available <= w.limit
        assert w.in_flight <= delivered


def test_owed_places_stay_taken_until_repaid() -> None:
    w = CreditWindow(100)
    w.grant(2)
    assert w.take(2) == 2
    w.owe(1)  # acked, not stored: the place stays taken
    assert w.available == -1
    w.grant(1)  # the consumer's credit for it pays for the place, no more
    assert w.take(5) == 0
    w.repay(1)  # stored
    assert (w.available, w.in_flight) == (1, 1)
    assert w.take(5) == 1


def test_cancel_keeps_owed_places_from_becoming_credit() -> None:
    w = CreditWindow(100)
    w.grant(3)
    w.take(3)
    w.owe(2)
    w.void()
    w.repay(2)
    assert (w.available, w.in_flight) == (0, 1)
    with pytest.raises(ValueError, match="cannot owe"):
        w.owe(2)


def test_owed_acks_are_wanted_in_the_store_at_half_the_window_or_when_nothing_is_left() -> None:
    w = CreditWindow(100_000)
    w.grant(10)
    w.take(6)  # 4 places left
    assert not w.waits_for_repay()  # nothing owed
    w.owe(4)
    w.grant(4)  # the SDK's credit for the acked ones: it pays for their places
    assert (w.available, w.in_flight, w.owed) == (4, 6, 4)
    assert not w.waits_for_repay()  # 4 of a window of 10 owed, 4 places left
    w.owe(1)
    w.grant(1)
    assert w.waits_for_repay()  # half the window: store them while it works on the rest
    w.repay(5)
    assert not w.waits_for_repay()
    w.take(9)
    w.owe(1)  # every place taken and one owed: nothing can go out until it is stored
    assert (w.available, w.owed) == (-1, 1)
    assert w.waits_for_repay()
