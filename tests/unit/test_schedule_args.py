"""The SDK's checks of schedule arguments: the ``every`` parser, cron shape, and the
MANAGE ``schedule_add`` map they build (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zq.client.schedules import check_cron, parse_every, schedule_args
from zq.errors import InvalidArgument


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), ("500ms", 0.5), ("2d", 172_800.0),
    ("1h30m", 5400.0), ("1m30s", 90.0), ("1.5s", 1.5), (".5s", 0.5), ("10", 10.0),
    ("0.25", 0.25), (" 5M ", 300.0), ("10ms", 0.01), ("366d", 366 * 86400.0), (3, 3.0),
    (0.5, 0.5),
])
def test_every_reads_numbers_and_durations(text: Any, seconds: float) -> None:
    assert parse_every(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [
    "", "s", "ms", "abc", "10x", "5m10", "m5", "1h-30m", "-1s", "1e400", "inf", "nan",
    "10 seconds", "1,5s", None, True, [10], b"10s",
])
def test_every_refuses_what_it_cannot_read(bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="every must"):
        parse_every(bad)


@pytest.mark.parametrize("bad", [0, -1, "0s", "9ms", 0.0099, float("inf"), float("nan"),
                                 "367d", "366d1s"])
def test_every_is_10_ms_to_366_days_as_the_broker_wants(bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="every must be at"):
        parse_every(bad)


@given(h=st.integers(0, 48), m=st.integers(0, 59), s=st.integers(0, 59),
       ms=st.integers(0, 999))
def test_every_adds_up_its_parts(h: int, m: int, s: int, ms: int) -> None:
    total = h * 3600 + m * 60 + s + ms / 1000
    text = "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s"), (ms, "ms")) if n)
    if total < 0.01:
        return
    assert parse_every(text) == pytest.approx(total)


def test_cron_is_parsed_before_sending() -> None:
    assert check_cron("*/5   *  * * *") == "*/5 * * * *"
    with pytest.raises(InvalidArgument, match="5 fields"):
        check_cron("* * *")
    with pytest.raises(InvalidArgument, match="minute"):
        check_cron("61 * * * *")
    with pytest.raises(InvalidArgument, match="cron must be a str"):
        check_cron(5)


def test_schedule_args_build_the_manage_map() -> None:
    args = schedule_args("tick", "jobs", b"x", {"k": "v"}, "1.5s", None, "skip",
                         {"priority": 3})
    assert args == {"name": "tick", "queue": "jobs", "body": b"x", "every_ms": 1500,
                    "misfire": "skip", "headers": {"k": "v"}, "options": {"priority": 3}}
    args = schedule_args("c", "jobs", b"", None, None, "0 7 * * 1-5", "once", None)
    assert args == {"name": "c", "queue": "jobs", "body": b"", "cron": "0 7 * * 1-5",
                    "misfire": "once"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"every": None, "cron": None}, "exactly one of"),
    ({"every": 1, "cron": "* * * * *"}, "exactly one of"),
    ({"every": 1, "cron": None, "misfire": "later"}, "misfire must be"),
    ({"every": 1, "cron": None, "name": ""}, "schedule name"),
    ({"every": 1, "cron": None, "name": "x" * 256}, "schedule name"),
])
def test_schedule_args_refuse_bad_combinations(kwargs: dict[str, Any], match: str) -> None:
    call = {"name": "n", "misfire": "once", **kwargs}
    with pytest.raises(InvalidArgument, match=match):
        schedule_args(call["name"], "q", b"", None, call["every"], call["cron"],
                      call["misfire"], None)
