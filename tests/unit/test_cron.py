"""Cron expressions and schedule due times, without I/O."""

from __future__ import annotations

import calendar
from datetime import datetime

import pytest

from zq.cron import Cron
from zq.errors import InvalidArgument
from zq.schedules import Schedule


def ts(text: str) -> float:
    return float(calendar.timegm(datetime.fromisoformat(text).timetuple()))


def iso(t: float) -> str:
    return datetime.utcfromtimestamp(t).isoformat()


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("*/5 * * * *", "2026-11-27T11:12:30", "2026-11-27T11:15:00"),
    ("*/5 * * * *", "2026-11-27T11:15:00", "2026-11-27T11:20:00"),  # strictly after
    ("0 9 * * 1-5", "2026-11-27T10:00:00", "2026-11-30T09:00:00"),  # Fri -> Mon
    ("30 2 1 * *", "2026-11-27T00:00:00", "2026-12-01T02:30:00"),
    ("0 0 29 2 *", "2026-11-27T00:00:00", "2028-02-29T00:00:00"),
    ("0 12 1 * 0", "2026-11-27T00:00:00", "2026-11-29T12:00:00"),  # day 1 OR Sunday
    ("15,45 8-9 * 1 7", "2026-11-27T00:00:00", "2027-01-03T08:15:00"),  # 7 is Sunday
])
def test_next_after(expr: str, after: str, expected: str) -> None:
    assert iso(Cron.parse(expr).next_after(ts(after))) == expected


@pytest.mark.parametrize("expr", ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *",
                                  "*/0 * * * *", "a * * * *", "5-1 * * * *", "0 0 31 2 *"])
def test_bad_expressions_are_invalid_arguments(expr: str) -> None:
    with pytest.raises(InvalidArgument):
        Cron.parse(expr).next_after(ts("2026-01-01T00:00:00"))


def test_every_is_anchored_and_never_repeats_a_due_time() -> None:
    s = Schedule("s", "q", b"", every_ms=1500, anchor=100.0)
    assert s.after(100.0) == 101.5
    assert s.after(101.5) == 103.0
    assert s.after(250.2) == 251.5  # after downtime: the next one on the same grid


def test_a_schedule_needs_one_rule() -> None:
    with pytest.raises(InvalidArgument):
        Schedule("s", "q", b"")
    with pytest.raises(InvalidArgument):
        Schedule("s", "q", b"", every_ms=1000, cron="* * * * *")
    with pytest.raises(InvalidArgument):
        Schedule("s", "q", b"", every_ms=1000, misfire="later")
