"""A message's headers stay deliverable however its history grows (PROTOCOL.md 12.3).

The two repros of the hostile test: headers at the publish limit and one long nack
reason; a consumer with a huge name that nacks again and again. Both used to build
a DELIVER no client could decode, leaving the message in flight for ever.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_core import A, Harness, P, delivers, errors_of
from zq import history
from zq.persistence.base import Rewrite, WriteBatch
from zq.protocol import codec
from zq.protocol import frames as f

LIMITS = codec.Limits(max_frame=64 * 1024)


def test_cap_cuts_on_a_character_boundary() -> None:
    assert history.cap("héllo", 2) == "h"
    assert history.cap("héllo", 3) == "hé"
    assert history.cap("abc", 10) == "abc"


def test_fifty_entries_at_most_and_the_first_is_kept() -> None:
    headers: dict[str, Any] = {}
    for i in range(1, 61):
        headers, _ = history.append(headers, {"attempt": i, "outcome": "nacked"}, 1 << 20)
    attempts = [e["attempt"] for e in headers[history.HISTORY]]
    assert attempts == [1, *range(12, 61)]
    assert headers[history.OMITTED] == 10


@settings(max_examples=200, deadline=None)
@given(user=st.integers(0, 40_000), body=st.integers(0, 30_000),
       reasons=st.lists(st.text(max_size=3000), min_size=1, max_size=60))
def test_headers_always_fit_the_budget(user: int, body: int, reasons: list[str]) -> None:
    budget = codec.header_budget(body, LIMITS)
    headers: dict[str, Any] = {"user": "u" * user}
    if not codec.fits_stored(body, codec.header_size(headers), LIMITS):
        return  # refused at publish
    for i, reason in enumerate(reasons, 1):
        entry = {"attempt": i, "outcome": "nacked", "end": 1.5, "consumer": "c" * 255,
                 "reason": history.cap(reason, history.MAX_REASON)}
        headers, size = history.append(headers, entry, budget)
        assert size == codec.header_size(headers) <= budget
        hist = headers.get(history.HISTORY, [])
        assert len(hist) + headers.get(history.OMITTED, 0) == i  # nothing lost uncounted
        if hist:
            assert hist[-1]["attempt"] == i  # the latest is kept
    dead = dict(headers, **{"zq-origin": "q" * 255, "zq-reason": "r" * 1000,
                            "zq-dead-at": 1.5})
    _, size = history.fit(dead, budget)
    assert size <= budget  # a dead letter fits under its dead-letter queue's name too
    assert codec.fits_alone(codec.MAX_QUEUE_NAME, body, size, LIMITS)


def _nack_loop(h: Harness, who: bytes, times: int, reason: str) -> f.Deliver:
    d: f.Deliver | None = None
    for _ in range(times):
        h.send(who, f.Credit("q", 1))
        h.core.dispatch()
        (_, d), = delivers(h.take())
        h.send(who, f.Nack(d.ids, d.attempts, True, 0, reason))
    h.send(who, f.Credit("q", 1))
    h.core.dispatch()
    out = h.take()
    (_, d), = delivers(out)
    return d


def test_headers_at_the_publish_limit_and_a_long_reason_still_deliver() -> None:
    h = Harness(max_frame=64 * 1024)
    h.hello(P, A)
    limits = h.core.limits
    body = b"b" * 100
    room = codec.header_budget(len(body), limits) - codec.reserve(limits)
    big = {"k": "v" * (room - 20)}
    while not codec.fits_stored(len(body), codec.header_size(big), limits):
        big["k"] = big["k"][:-1]
    h.send(P, f.Publish("q", 1, [body], [big]))
    assert not errors_of(h.run())
    d = _nack_loop(h, A, 4, "r" * 5000)
    size = codec.header_size(d.headers[0])
    assert size <= codec.header_budget(len(body), limits)
    assert codec.decode(codec.encode(d), limits) == d  # a client can read it
    assert d.headers[0]["k"] == big["k"]  # the user's headers are never touched


def test_one_byte_more_than_the_publish_limit_is_refused_naming_the_setting() -> None:
    h = Harness(max_frame=64 * 1024)
    h.hello(P)
    limits = h.core.limits
    hdr = {"k": "v" * (codec.header_budget(10, limits) - codec.reserve(limits))}
    h.send(P, f.Publish("q", 3, [b"0123456789"], [hdr]))
    (_, e), = errors_of(h.run())
    assert (e.name, e.ref) == ("FRAME_TOO_LARGE", 3)
    assert "max_frame" in e.text
    assert "--max-frame" in e.text


def test_a_huge_consumer_name_is_capped_where_it_enters() -> None:
    h = Harness()
    h.hello(P)
    h.send(A, f.Hello("n" * 1_500_000))
    h.take()
    h.publish(1)
    d = _nack_loop(h, A, 3, "again")
    names = [e["consumer"] for e in d.headers[0][history.HISTORY]]
    assert names == ["n" * history.MAX_NAME] * 3


def test_a_message_too_large_for_lowered_limits_loses_its_history_or_dies() -> None:
    h = Harness(heartbeat=100.0)
    h.hello(P, A)
    h.send(P, f.Publish("q", 1, [b"x" * 5000, b"y" * 7000, b"z" * 60_000],
                        [{"zq-history": [{"attempt": 1, "reason": "r" * 900}] * 5},
                         {"user": "u" * 2000}, None]))
    h.run()
    h.core.limits = codec.Limits(max_frame=8 * 1024, max_batch=h.core.limits.max_batch)
    h.core.cfg = type(h.core.cfg)(max_frame=8 * 1024, heartbeat=100.0)
    h.send(A, f.Credit("q", 5))
    h.core.dispatch()
    (_, d), = delivers(h.take())
    kept = d.headers[0].get(history.HISTORY, [])
    assert d.ids == [1]
    assert len(kept) + d.headers[0][history.OMITTED] == 5
    assert codec.header_size(d.headers[0]) <= codec.header_budget(5000, h.core.limits)
    dlq = h.core.queues["q.dlq"]
    assert [m.id for m in dlq.ready_msgs()] == [2]
    assert "too large to deliver" in dlq.ready_msgs()[0].headers["zq-reason"]
    # Too large even as a dead letter: kept on disk, skipped, counted.
    assert h.core.counters["undeliverable"] == 1
    assert h.core.queues["q"].ready_count() == 0


def test_compact_keeps_the_last_word_on_each_message() -> None:
    rw = Rewrite(5, "q.dlq", 0, 0.0, {"h": 1}, None)
    b = WriteBatch(updates=[([1, 2], [1, 1], 0.0, 1), ([1], [0], 0.0, 0), rw,
                            ([5], [1], 0.0, 1), ([2], [2], 0.0, 1), ([3], [1], 0.0, 1)],
                   deletes=[3, 3, 4], settings=[("q", b"a"), ("q", b"b")])
    b.compact()
    assert b.updates == [rw, ([1], [0], 0.0, 0), ([2], [2], 0.0, 1), ([5], [1], 0.0, 1)]
    assert (b.deletes, b.settings) == ([3, 4], [("q", b"b")])
