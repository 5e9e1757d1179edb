"""zq.protocol.limits is the one copy of the protocol's bounds: PROTOCOL.md states the same.

Section 14's table is checked row by row (every number in it, so that a new row or
a changed value fails here until the code and the document agree again), then the
bounds the other sections state in prose, then the modules that re-export them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import markdown_table
from zq import errors, history
from zq.config import BrokerConfig
from zq.protocol import codec, limits, names
from zq.protocol import frames as f

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
LIMIT_HEADER = "| Limit | Value | Exceeded |"
ERROR_HEADER = "| Code | Name | Retriable | Meaning |"
OPTION_HEADER = "| Option | Type | Range | Meaning |"
MiB = 1024 * 1024
MINUS, TIMES = "\u2212", "\u00d7"  # as PROTOCOL.md writes them


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text(encoding="utf-8")


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the one table in the doc whose header line is ``header``."""
    rows = markdown_table(text.splitlines(), header)
    assert rows, f"table {header!r} has no rows"
    return rows


def numbers(cell: str) -> list[int]:
    """Every number a cell states, in order: ``4 MiB`` is 4 MiB, ``4,194,304`` one
    number; references such as ``section 11`` are not numbers."""
    cell = re.sub(r"sections? \d+(\.\d+)?", "", cell)
    return [int(n.replace(",", "")) * (MiB if unit == "MiB" else 1)
            for n, unit in re.findall(r"(?<![\w.-])(\d[\d,]*)(?:\s*(MiB))?", cell)]


def section(text: str, title: str) -> str:
    """The text of the section whose heading ends with ``title``, up to the next heading,
    with its line breaks and indents made single spaces."""
    match = re.search(rf"^#+ [\d.]+ {re.escape(title)}\n(.*?)(?=^#)", text, re.S | re.M)
    assert match, title
    return flat(match.group(1))


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------- section 14's table


def expected_rows() -> dict[str, list[int]]:
    """Each row of section 14 and the numbers its Value cell must state, from the code."""
    cfg = BrokerConfig()
    return {
        "message size, all parts": [cfg.max_frame],
        "size of any single part": [limits.PART_SLACK],
        "header part": [limits.MAX_HEADER, limits.MAX_HEADER, f.VERSION],
        "messages per DELIVER": [cfg.max_batch],
        "bodies per PUBLISH": [cfg.max_publish_batch],
        "one message alone, with its DELIVER envelope": [],
        "ids per ACK, NACK, RELEASE, EXTEND": [],
        "credit window per (consumer, queue)": [cfg.max_credit],
        "queue name": [1, limits.MAX_QUEUE_NAME],
        "queue name characters": [],
        "a message's headers, history included": [],
        "HELLO `name` kept": [limits.MAX_NAME],
        "PUBLISH options": [],
        "messages in a queue": [],
        "entries in `zq-history`": [limits.MAX_HISTORY, limits.MAX_HISTORY - 1],
        "messages per `peek`": [limits.MAX_PEEK],
        "sessions per broker": [cfg.max_sessions],
        "sessions per key (with CURVE)": [cfg.max_sessions_per_key],
        "time from connecting to HELLO": [int(cfg.hello_timeout)],
        "malformed or out-of-order frames per connection": [cfg.malformed_budget],
    }


def test_limits_table_states_the_codes_values(text: str) -> None:
    rows = table(text, LIMIT_HEADER)
    expected = expected_rows()
    assert [r[0] for r in rows] == list(expected), "rows added, removed or renamed"
    for name, value, _ in rows:
        assert numbers(value) == expected[name], f"{name}: {value!r}"


def test_default_limits_are_zqs_defaults() -> None:
    """The decoder's defaults are the broker's: the values the table gives as zq's."""
    cfg = BrokerConfig()
    assert limits.Limits() == limits.DEFAULT_LIMITS
    assert limits.DEFAULT_LIMITS.max_frame == limits.MAX_FRAME == cfg.max_frame == 16 * MiB
    assert limits.DEFAULT_LIMITS.max_header == limits.MAX_HEADER == 4 * MiB
    assert limits.DEFAULT_LIMITS.max_batch == limits.MAX_BATCH == cfg.max_publish_batch


def test_limits_table_names_real_errors(text: str) -> None:
    known = {c.name for c in errors.all_error_classes()}
    for name, _, exceeded in table(text, LIMIT_HEADER):
        for err in re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", exceeded):
            if err != "MAXMSGSIZE":  # ZeroMQ's option, not a zq error
                assert err in known, f"{name}: {err}"


# ------------------------------------------------ bounds stated in other sections


def test_framing_and_queue_names(text: str) -> None:
    q = limits.MAX_QUEUE_NAME
    assert f"queue name: 1 to {q} octets of UTF-8" in section(text, "Framing")
    assert f"A queue name is 1 to {q} octets of UTF-8" in section(text, "Operations")
    assert f"The name is 1 to {q} octets" in section(text, "Checks in order")
    assert f"The header is at most {limits.MAX_HEADER // MiB} MiB" in section(
        text, "Checks in order")
    assert limits.MAX_QUEUE_NAME == 255
    assert f"A name ending in `{limits.DLQ_SUFFIX}` is a dead-letter queue" in flat(text)
    assert str(limits.MAX_QUEUE_NAME) in names.RULE


def test_hello_name_and_heartbeat_cap(text: str) -> None:
    frames_text = section(text, "Frames")
    assert f"keeps at most its first {limits.MAX_NAME} octets" in frames_text
    assert f"caps it at {int(limits.MAX_HEARTBEAT * 1000):,} ms" in frames_text
    assert f"`{int(limits.MAX_HEARTBEAT)} s {TIMES} liveness`" in frames_text
    assert f"and at most {int(limits.MAX_HEARTBEAT)} s" in section(text, "Heartbeats")


def test_publish_sizing(text: str) -> None:
    """Section 11's arithmetic is the codec's: envelope, per message, reserve."""
    pub = section(text, "Publishing and confirms")
    e, q, m, r = limits.ENVELOPE, limits.MAX_QUEUE_NAME, limits.PER_MESSAGE, limits.HEADER_RESERVE
    assert f"`{e} + {q} + {m} + len(headers) + R + len(body)`" in pub
    assert f"`{e} + {m} + len(headers) + R` at most 4 MiB" in pub
    assert f"`min({r}, max_frame / 16)`" in pub
    assert f"(`{e}` per frame, `{m}` per message" in pub
    big = limits.Limits()
    assert codec.reserve(big) == r
    assert codec.reserve(limits.Limits(max_frame=16 * 1024)) == 1024  # max_frame / 16


def test_history_budget_and_bounds(text: str) -> None:
    hist = section(text, "Attempt history")
    e, q, m = limits.ENVELOPE, limits.MAX_QUEUE_NAME, limits.PER_MESSAGE
    assert f"`max_frame {MINUS} {e} {MINUS} {q} {MINUS} {m} {MINUS} len(body)`" in hist
    assert f"`4 MiB {MINUS} {e} {MINUS} {m}`" in hist
    assert f"At most {limits.MAX_HISTORY} entries are kept" in hist
    assert f"at most {limits.MAX_NAME} octets" in hist
    assert f"at most {limits.MAX_REASON:,} octets of UTF-8" in hist
    assert f"{limits.MAX_REASON:,} octets of UTF-8" in section(text, "Dead letters")
    assert codec.header_budget(0, limits.Limits()) == 4 * MiB - e - m
    assert codec.header_budget(0, limits.Limits(max_frame=1 << 20)) == (1 << 20) - e - q - m


def test_option_bounds(text: str) -> None:
    rows = {r[0]: r[2] for r in table(text, OPTION_HEADER)}
    assert f"`C` is {limits.MAX_DURATION_MS:,} (a century in milliseconds)" in flat(text)
    assert rows["priority"] == f"0..{limits.MAX_PRIORITY}"
    assert limits.MAX_ETA_MS.bit_count() == 1  # a power of two, written 2^n
    assert rows["eta_ms"] == f"0..2^{limits.MAX_ETA_MS.bit_length() - 1}"
    assert rows["max_attempts"] == f"1..{limits.MAX_ATTEMPTS}"
    for key in ("delay_ms", "ttl_ms", "time_limit_ms"):
        assert rows[key].endswith("..C"), key
    for key in ("tenant", "dedup_id"):
        assert rows[key] == f"1..{limits.MAX_KEY} octets", key


def test_fatal_errors(text: str) -> None:
    para = next(p for p in text.split("\n\n") if p.startswith("**Fatal errors.**"))
    assert set(re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", para)) == limits.FATAL_NAMES
    fatal_rows = {(int(code), name) for code, name, _, meaning in table(text, ERROR_HEADER)
                  if "Fatal." in meaning}
    assert fatal_rows == {(e.code, e.name) for e in limits.FATAL_ERRORS}
    assert {2, 3, 4, 5} == limits.FATAL_CODES
    assert all(not e.retriable for e in limits.FATAL_ERRORS)


def test_broker_headers_are_documented(text: str) -> None:
    assert f"except for the keys that start with `{limits.BROKER_PREFIX}`" in flat(text)
    broker = (limits.HISTORY, limits.HISTORY_OMITTED, limits.ORIGIN, limits.REASON,
              limits.DEAD_AT, limits.SCHEDULE, limits.DUE)
    for header in broker:
        assert f"`{header}`" in text, header
    for header in (*broker, limits.TASK, limits.PEEK):
        assert header.startswith(limits.BROKER_PREFIX), header
    assert len(set(broker)) == len(broker)


# ----------------------------------------------- the names re-exported elsewhere


@pytest.mark.parametrize("name", ["MAX_QUEUE_NAME", "ENVELOPE", "PER_MESSAGE", "HEADER_RESERVE",
                                  "MAX_PRIORITY", "MAX_KEY", "Limits", "DEFAULT_LIMITS"])
def test_codec_reexports_limits(name: str) -> None:
    assert getattr(codec, name) is getattr(limits, name)


def test_names_reexports_limits() -> None:
    assert names.MAX_QUEUE_NAME is limits.MAX_QUEUE_NAME
    assert names.DLQ_SUFFIX is limits.DLQ_SUFFIX


@pytest.mark.parametrize(("old", "new"), [
    ("HISTORY", "HISTORY"), ("OMITTED", "HISTORY_OMITTED"), ("REASON", "REASON"),
    ("MAX_HISTORY", "MAX_HISTORY"), ("MAX_NAME", "MAX_NAME"), ("MAX_REASON", "MAX_REASON"),
])
def test_older_homes_agree_while_they_last(old: str, new: str) -> None:
    """zq.history still has its own copies until it takes them from limits."""
    assert getattr(history, old, getattr(limits, new)) == getattr(limits, new)
