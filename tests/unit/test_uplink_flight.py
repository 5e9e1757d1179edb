"""The uplink's frames in flight (zq.uplink.flight), no I/O: room, confirms, refusals, resends."""

from __future__ import annotations

import pytest

from zq.config import BrokerConfig
from zq.core.model import Msg, Queue
from zq.core.uplink import Run
from zq.errors import ZqError
from zq.uplink import flight as fl
from zq.uplink.flight import Flight

Q = Queue("orders.a")


def run(seq: int, n: int, size: int = 10, t: float = 100.0) -> Run:
    """A run of ``n`` messages from id ``seq``, of ``size`` bytes, published at ``t``."""
    return Run(Q, [Msg(seq + i, Q, b"x", None, t=t) for i in range(n)], size)


def parts(seq: int) -> list[bytes]:
    return [b"ZQ", b"publish %d" % seq]


def loaded(*runs: Run, now: float = 100.0, **limits: int) -> Flight:
    fl_ = Flight(**limits)
    for r in runs:
        fl_.add(r, parts(r.seq), now)
    return fl_


# ------------------------------------------------------------------ room


def test_room_is_what_the_limits_leave() -> None:
    f = Flight(max_frames=3, max_messages=10, max_bytes=100)
    assert f.room() == (10, 100)
    f.add(run(1, 3, 40), parts(1), 100.0)
    assert f.room() == (7, 60)
    assert (len(f), f.messages, f.bytes) == (1, 3, 40)
    f.add(run(5, 2, 30), parts(5), 100.0)
    assert f.room() == (5, 30)


def test_no_room_once_a_limit_is_reached() -> None:
    assert loaded(run(1, 1), run(3, 1), max_frames=2).room() == (0, 0)  # frames
    assert loaded(run(1, 10), max_messages=10).room() == (0, 0)  # messages
    assert loaded(run(1, 12), max_messages=10).room() == (0, 0)  # a whole run went past
    # bytes: one big run may pass the limit (runs are taken whole); no room is left
    assert loaded(run(1, 1, 150), max_bytes=100).room() == (fl.MAX_MESSAGES - 1, 0)


def test_the_frames_in_flight_stay_below_what_the_centre_remembers() -> None:
    """A resent frame is known at the centre only while it keeps its seq: the limit
    on frames in flight stays well below its producer_window."""
    assert BrokerConfig().producer_window >= fl.MAX_FRAMES * 4


# ------------------------------------------------------------------ confirms


def test_a_confirm_with_the_frames_count_pops_it() -> None:
    f = loaded(run(1, 3, 30), run(5, 2, 20))
    s = f.confirmed(1, 3)
    assert s is not None
    assert s.run.seq == 1
    assert list(f.sent) == [5]
    assert (f.messages, f.bytes) == (2, 20)
    assert f.confirmed(1, 3) is None  # once only


def test_a_confirm_with_another_count_is_not_this_frame() -> None:
    f = loaded(run(1, 3, 30))
    assert f.confirmed(1, 2) is None
    assert f.confirmed(1, 4) is None
    assert list(f.sent) == [1]  # it stays, to be sent again
    assert (f.messages, f.bytes) == (3, 30)


def test_a_confirm_of_a_seq_not_in_flight_is_ignored() -> None:
    f = loaded(run(1, 3))
    assert f.confirmed(2, 3) is None
    assert f.confirmed(4, 1) is None
    assert len(f) == 1


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name", sorted(fl.PERMANENT))
def test_a_permanent_refusal_pops_the_frame(name: str) -> None:
    f = loaded(run(1, 3, 30), run(5, 1, 10))
    hit = f.refused(1, name, 101.0)
    assert hit is not None
    gone, s = hit
    assert gone
    assert s.run.seq == 1
    assert list(f.sent) == [5]
    assert (f.messages, f.bytes) == (1, 10)


def test_no_refusal_that_may_pass_is_permanent() -> None:
    def every(cls: type[ZqError]) -> list[type[ZqError]]:
        return [cls] + [c for sub in cls.__subclasses__() for c in every(sub)]

    names = {c.name: c.retriable for c in every(ZqError) if c is not ZqError}
    assert set(names) >= fl.PERMANENT  # real error names
    assert not [n for n in fl.PERMANENT if names[n]]


@pytest.mark.parametrize("name", ["UNAVAILABLE", "QUEUE_FULL", "STORAGE_FULL"])
def test_a_refusal_that_may_pass_keeps_the_frame_with_a_growing_pause(name: str) -> None:
    f = loaded(run(1, 3, 30))
    pauses = []
    for _ in range(8):
        hit = f.refused(1, name, 200.0)
        assert hit is not None
        gone, s = hit
        assert not gone
        pauses.append(round(s.retry_at - 200.0, 6))
    assert pauses == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # doubled, at most 5 s
    assert pauses[0] == fl.RETRY_FIRST
    assert pauses[-1] == fl.RETRY_MOST
    assert (len(f), f.messages, f.bytes) == (1, 3, 30)
    assert f.sent[1].tries == 8


def test_the_pause_stays_capped_however_often_it_is_refused() -> None:
    f = loaded(run(1, 1))
    for _ in range(200):
        f.refused(1, "UNAVAILABLE", 0.0)
    assert f.sent[1].retry_at == fl.RETRY_MOST


def test_a_refusal_of_a_seq_not_in_flight_is_ignored() -> None:
    f = loaded(run(1, 1))
    assert f.refused(7, "UNAVAILABLE", 1.0) is None
    assert f.refused(7, "FRAME_TOO_LARGE", 1.0) is None
    assert len(f) == 1


# ------------------------------------------------------------------ sending again


def test_due_gives_refused_frames_whose_pause_is_over() -> None:
    f = loaded(run(1, 1), run(3, 1), run(5, 1), now=100.0)
    f.refused(1, "UNAVAILABLE", 100.0)  # again at 100.25
    f.refused(3, "QUEUE_FULL", 100.0)
    f.refused(3, "QUEUE_FULL", 100.0)  # again at 100.5
    assert f.due(100.2) == []
    assert [s.run.seq for s in f.due(100.25)] == [1]
    s1 = f.sent[1]
    assert (s1.retry_at, s1.at) == (0.0, 100.25)  # out again
    assert f.due(100.3) == []  # not twice
    assert [s.run.seq for s in f.due(101.0)] == [3]  # 5 was never refused: it is out
    assert f.due(200.0) == []


def test_everything_goes_again_in_the_order_sent() -> None:
    f = loaded(run(9, 1), run(1, 2), run(5, 1), now=100.0)
    f.refused(1, "UNAVAILABLE", 100.0)
    again = f.everything(103.0)
    assert [s.run.seq for s in again] == [9, 1, 5]
    assert all(s.retry_at == 0.0 and s.at == 103.0 for s in again)
    assert [s.parts for s in again] == [parts(9), parts(1), parts(5)]  # as encoded once
    assert f.due(1000.0) == []


def test_a_frame_out_too_long_makes_the_session_suspect() -> None:
    f = loaded(run(1, 1), now=100.0)
    assert not f.overdue(105.0, after=5.0)
    assert f.overdue(105.1, after=5.0)
    f.refused(1, "UNAVAILABLE", 105.1)  # answered: it waits for its pause, not an answer
    assert not f.overdue(200.0, after=5.0)
    f.due(200.0)  # out again at 200
    assert not f.overdue(204.0, after=5.0)
    assert f.overdue(206.0, after=5.0)
    f.everything(206.0)  # a new session
    assert not f.overdue(210.0, after=5.0)
    assert not Flight().overdue(1e9, after=0.0)


def test_oldest_and_runs() -> None:
    f = Flight()
    assert f.oldest() == 0.0
    a, b = run(1, 2, t=50.0), run(4, 1, t=40.0)
    f.add(a, parts(1), 100.0)
    f.add(b, parts(4), 100.0)
    assert f.oldest() == 40.0
    assert f.runs() == [a, b]
    f.confirmed(4, 1)
    assert f.oldest() == 50.0
    assert f.runs() == [a]
