"""perf/hist.py: percentiles of known inputs, and the coordinated-omission correction."""

from __future__ import annotations

import asyncio
import ctypes
import time

import pytest

from perf.hist import (
    HEAD,
    LatencyHistogram,
    OpenLoop,
    Pacer,
    Schedule,
    make_body,
    read_body,
)


def close(value: int, expected: float, rel: float = 0.001) -> bool:
    """Within HdrHistogram's 3-significant-digit precision (and one bucket)."""
    return abs(value - expected) <= max(1.0, expected * rel)


def test_uniform_values_give_their_percentiles() -> None:
    h = LatencyHistogram()
    for us in range(1, 10_001):
        h.record(us / 1e6)
    s = h.summary()
    assert s["count"] == 10_000
    assert close(s["p50"], 5_000)
    assert close(s["p90"], 9_000)
    assert close(s["p99"], 9_900)
    assert close(s["p99.9"], 9_990)
    assert close(s["max"], 10_000)
    assert s["mean"] == pytest.approx(5_000.5, rel=0.001)


def test_a_rare_slow_tail_shows_only_above_its_share() -> None:
    h = LatencyHistogram()
    for _ in range(990):
        h.record(100e-6)
    for _ in range(10):
        h.record(0.050)  # 1 % of the values
    s = h.summary()
    assert s["p50"] == s["p90"] == s["p99"] == 100  # 99 % are 100 µs
    assert close(s["p99.9"], 50_000)
    assert close(s["max"], 50_000)
    assert h.count_at_least(0.010) == 10


def test_recording_rounds_to_microseconds_and_clamps() -> None:
    h = LatencyHistogram()
    h.record(0.0012345)
    assert close(h.max(), 1_235)
    h = LatencyHistogram()
    h.record(-0.5)  # a clock can't go backwards, but a bad input must not crash
    h.record(1e-9)
    assert h.summary()["max"] == 1
    assert LatencyHistogram().summary() == {"count": 0, "p50": 0, "p90": 0, "p99": 0,
                                            "p99.9": 0, "max": 0, "mean": 0.0}


def test_encode_decode_and_add_keep_every_value() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for us in range(1, 501):
        a.record(us / 1e6)
    for us in range(501, 1001):
        b.record(us / 1e6)
    a2 = LatencyHistogram.decode(a.encode())
    assert a2.summary() == a.summary()
    a2.add(LatencyHistogram.decode(b.encode()))
    assert a2.count == 1000
    assert close(a2.percentile(50), 500)
    assert close(a2.max(), 1000)
    assert LatencyHistogram.decode(b"").count == 0


def test_schedule_times_and_due_counts() -> None:
    s = Schedule(t0=100.0, rate=1000.0, messages=5000)
    assert s.due(0) == 100.0
    assert s.due(1500) == pytest.approx(101.5)
    assert s.due_by(99.9) == 0
    assert s.due_by(100.0) == 1  # message 0 is due at t0
    assert s.due_by(100.0105) == 11  # 0 .. 10
    assert s.due_by(1e9) == 5000  # never more than the run has
    for t0, rate in ((0.0, 1000.0), (12345.678, 10_000.0), (3.0, 7.0)):
        s = Schedule(t0, rate, 3000)
        # Each message is due at its own time, whatever the float rounding of i / rate.
        assert all(s.due_by(s.due(i)) == i + 1 for i in range(3000))
    with pytest.raises(ValueError, match="rate"):
        Schedule(0.0, 0.0, 1)


def test_bodies_carry_index_and_intended_time() -> None:
    body = make_body(123_456, 98765.4321, 100)
    assert len(body) == 100
    assert read_body(body) == (123_456, 98765.4321)
    assert len(make_body(0, 0.0, HEAD.size)) == HEAD.size


def simulate(stall_from: float, stall_until: float, *, rate: float = 1000.0,
             seconds: float = 5.0, service: float = 100e-6) -> tuple[OpenLoop, LatencyHistogram]:
    """A producer at ``rate`` whose every message is confirmed ``service`` after it is sent,
    and which can send nothing between ``stall_from`` and ``stall_until`` (a GC pause, a
    blocked loop, a broker that stops reading...). Returns the open-loop record and, for
    contrast, what a closed-loop measurement (from the real send time) would have seen."""
    n = round(rate * seconds)
    rec = OpenLoop(Schedule(0.0, rate, n))
    naive = LatencyHistogram()
    wake = 0.0
    while rec.next < n:
        if stall_from < wake < stall_until:
            wake = stall_until  # the producer gets to run again only now
        for i in rec.take_due(0, wake):
            rec.confirmed(i, wake + service)
            naive.record(service)
        if rec.next < n:
            wake = max(wake, rec.schedule.due(rec.next))
    return rec, naive


def test_without_a_stall_latency_is_the_service_time() -> None:
    rec, naive = simulate(10.0, 10.0)
    assert rec.done
    assert rec.confirm.count == 5000
    assert rec.confirm.max() == 100
    assert naive.max() == 100
    assert rec.lag.max() == 1  # sent on time (clamped to the histogram's 1 µs floor)


def test_a_one_second_stall_counts_for_every_message_scheduled_during_it() -> None:
    # 1000 msg/s for 5 s; the producer can't send from t=2.0 to t=3.0.
    rec, naive = simulate(2.0, 3.0)
    c = rec.confirm
    assert rec.done
    assert c.count == 5000
    # The messages due during the stall (t in (2.0, 3.0]: 1,000 of them) are sent at 3.0,
    # so message i waits 3.0 - i/1000 before it is even sent: from ~1 s down to 0.
    assert close(c.max(), 1_000_100)  # message 2001: due at 2.001, confirmed at 3.0001
    assert c.count_at_least(0.5) == 500  # due in (2.0, 2.5]
    assert c.count_at_least(0.1) == 900  # due in (2.0, 2.9]
    assert c.count_at_least(0.001) >= 999  # every message scheduled during the stall
    # 20 % of the run stalled: the median is untouched, the 90th percentile lands in the
    # middle of the stall and the 99th near its start.
    assert c.percentile(50) == 100
    assert close(c.percentile(90), 500_100, rel=0.01)
    assert close(c.percentile(99), 950_100, rel=0.01)
    assert close(c.percentile(99.9), 995_100, rel=0.01)
    # The same run measured from the real send time hides the stall completely.
    assert naive.max() == 100
    assert naive.percentile(99.9) == 100
    # And the producer's own lag shows it was the sender that fell behind.
    assert close(rec.lag.max(), 999_000)


def test_a_late_producer_sends_everything_due_at_once() -> None:
    rec = OpenLoop(Schedule(0.0, 1000.0, 100))
    assert list(rec.take_due(1, 0.0)) == [0]
    assert list(rec.take_due(2, 0.0105)) == list(range(1, 11))  # woke 9.5 ms late
    assert list(rec.take_due(5, 0.0105)) == []  # already sent
    assert list(rec.take_due(100, 0.012)) == list(range(11, 100))  # told to send the rest
    assert rec.next == 100


@pytest.mark.parametrize("timer", ["timerfd", "call_at"])
async def test_pacer_hands_every_message_to_the_loop_and_a_blocked_loop_shows(
        timer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if timer == "call_at":  # as without timerfd: the loop's own timers
        def no_libc(*args: object, **kwargs: object) -> None:
            raise OSError("no timerfd here")

        monkeypatch.setattr(ctypes, "CDLL", no_libc)
    loop = asyncio.get_running_loop()
    n = 200
    rec = OpenLoop(Schedule(time.monotonic() + 0.01, 2000.0, n))  # 0.1 s of traffic
    sent: list[int] = []
    done = loop.create_future()

    def fire(upto: int) -> None:
        now = time.monotonic()
        todo = rec.take_due(upto, now)
        sent.extend(todo)
        for i in todo:
            rec.confirmed(i, now)
        if rec.done and not done.done():
            done.set_result(None)

    pacer = Pacer(loop, rec.schedule, fire)
    pacer.start()
    assert (pacer._fd >= 0) == (timer == "timerfd")
    try:
        await asyncio.sleep(0.04)
        time.sleep(0.03)  # noqa: ASYNC251 - block the loop 30 ms mid-run (60 messages fall due)
        await asyncio.wait_for(done, 5.0)
    finally:
        pacer.stop()
    assert sent == list(range(n))  # each once, in order
    assert rec.confirm.count == n
    assert rec.confirm.max() >= 20_000  # the messages due while the loop was blocked waited
    assert rec.confirm.percentile(50) < 20_000
