"""What ``zq top`` shows, from STATS maps, with no broker and no terminal."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from zq.cli.topview import (
    SORT_KEYS,
    ConsumerRow,
    QueueRow,
    Sort,
    TopView,
    age,
    budget,
    consumer_rows,
    queue_rows,
    sort_consumers,
    sort_queues,
)


def queue(**fields: Any) -> dict[str, Any]:
    q: dict[str, Any] = {
        "ready": 0, "delayed": 0, "in_flight": 0, "consumers": 0, "dead": 0, "paused": False,
        "oldest_age": 0.0, "rates": {"publish": 0.0, "deliver": 0.0, "ack": 0.0},
        "published": 0, "delivered": 0, "acked": 0}
    q.update(fields)
    return q


def stats(queues: dict[str, Any], peers: dict[str, Any] | None = None,
          broker: str = "b1") -> dict[str, Any]:
    peers = peers or {}
    return {"broker": broker, "counters": {"published": 0, "delivered": 0, "acked": 0},
            "queues": queues, "peers": peers, "queues_total": len(queues),
            "peers_total": len(peers), "store": {"kind": "memory"}}


def text_of(renderable: RenderableType, width: int = 200, **console: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, **console).print(renderable)
    return out.getvalue()


def row(rows: list[QueueRow], name: str) -> QueueRow:
    return next(r for r in rows if r.name == name)


# ------------------------------------------------------------------ rates


def test_rates_come_from_the_counters_growth_between_two_answers() -> None:
    before = stats({"jobs": queue(published=100, delivered=40, acked=30,
                                  rates={"publish": 7.0, "deliver": 7.0, "ack": 7.0})})
    after = copy.deepcopy(before)
    after["queues"]["jobs"].update(published=150, delivered=60, acked=60)
    r = row(queue_rows(after, before, 2.0), "jobs")
    assert (r.publish, r.deliver, r.ack) == (25.0, 10.0, 15.0)


def test_the_first_answer_shows_the_brokers_own_rates() -> None:
    s = stats({"jobs": queue(published=100, rates={"publish": 3.5, "deliver": 1.0, "ack": 0.5})})
    r = row(queue_rows(s, None, 0.0), "jobs")
    assert (r.publish, r.deliver, r.ack) == (3.5, 1.0, 0.5)


def test_a_new_queue_a_new_broker_or_a_counter_gone_back_fall_back_to_the_brokers_rates(
) -> None:
    rates = {"publish": 2.0, "deliver": 2.0, "ack": 2.0}
    before = stats({"old": queue(published=500, rates=rates)})
    after = stats({"old": queue(published=10, rates=rates), "new": queue(published=9,
                                                                         rates=rates)})
    rows = queue_rows(after, before, 1.0)
    assert row(rows, "old").publish == 2.0  # went back: a restarted broker
    assert row(rows, "new").publish == 2.0  # nothing to compare with
    other = stats({"old": queue(published=600, rates=rates)}, broker="b2")
    assert row(queue_rows(other, before, 1.0), "old").publish == 2.0


def test_the_view_measures_over_the_time_between_its_updates() -> None:
    view = TopView()
    view.update(stats({"jobs": queue(published=0)}), now=10.0)
    view.update(stats({"jobs": queue(published=40)}), now=14.0)
    queues, _ = view.rows()
    assert queues[0].publish == 10.0


def test_odd_or_missing_fields_count_as_zero() -> None:
    s = stats({"jobs": {"ready": "many", "in_flight": None, "rates": "fast", "paused": 1,
                        "dead": True},
               "nothing": "at all"})
    s["peers"] = {"ab": {"name": None, "held": "x", "subs": {"jobs": {"available": 3}}},
                  "cd": "not a peer"}
    rows = queue_rows(s, None, 0.0)
    assert row(rows, "jobs") == QueueRow("jobs", 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, False)
    assert row(rows, "nothing").ready == 0
    assert consumer_rows(s) == [ConsumerRow("?", "ab", "jobs", 0, 3, 0, True)]


# ------------------------------------------------------------------ sorting


def rows3() -> list[QueueRow]:
    s = stats({"b": queue(ready=5, dead=1), "a": queue(ready=5), "c": queue(ready=9, dead=1)})
    return queue_rows(s, None, 0.0)


def names(rows: list[QueueRow]) -> list[str]:
    return [r.name for r in rows]


def test_sorting_by_name_and_by_numbers_biggest_first_ties_in_name_order() -> None:
    rows = rows3()
    assert names(sort_queues(rows, Sort())) == ["a", "b", "c"]
    assert names(sort_queues(rows, Sort("name", descending=True))) == ["c", "b", "a"]
    assert Sort.by("ready") == Sort("ready", descending=True)
    assert names(sort_queues(rows, Sort.by("ready"))) == ["c", "a", "b"]
    assert names(sort_queues(rows, Sort.by("ready").reversed())) == ["a", "b", "c"]
    assert names(sort_queues(rows, Sort.by("dead"))) == ["b", "c", "a"]


def test_keys_change_the_sort_and_q_quits() -> None:
    view = TopView()
    assert view.sort == Sort("name", descending=False)
    assert not view.press("s")
    assert view.sort == Sort.by("ready")
    assert not view.press("S")
    assert not view.press("S")
    assert view.sort == Sort.by(SORT_KEYS[-1])  # wraps round to the last column
    view.press("r")
    assert view.sort == Sort(SORT_KEYS[-1], descending=False)
    view.press("2")
    assert view.sort == Sort.by("ready")
    view.press("2")  # the same column again: reversed
    assert view.sort == Sort("ready", descending=False)
    view.press("0")
    assert view.sort == Sort.by("oldest")
    for ignored in ("x", " ", "\n", "\u0663"):  # an Arabic-Indic digit is no column
        view.press(ignored)
    assert view.sort == Sort.by("oldest")
    assert view.press("q")
    assert view.press("Q")


def test_consumers_follow_the_order_of_the_queues_busiest_first() -> None:
    queues = sort_queues(rows3(), Sort.by("ready"))  # c, a, b
    cons = [ConsumerRow("w1", "01", "a", 1, 0, 1, True), ConsumerRow("w2", "02", "c", 1, 0, 1,
                                                                      True),
            ConsumerRow("w3", "03", "c", 7, 0, 7, True), ConsumerRow("w4", "04", "gone", 0, 0,
                                                                      0, False)]
    ordered = sort_consumers(cons, queues)
    assert [(c.queue, c.peer) for c in ordered] == [("c", "w3"), ("c", "w2"), ("a", "w1"),
                                                    ("gone", "w4")]


# ------------------------------------------------------------------ the frame


HOSTILE = "[bold red]boom[/]\x1b[2J\x07\n\u202eevil"


def hostile_stats() -> dict[str, Any]:
    s = stats({HOSTILE: queue(ready=3, paused=True)},
              {"0a0b": {"name": HOSTILE, "held": 1,
                        "subs": {HOSTILE: {"in_flight": 1, "available": 9, "active": False}}}},
              broker="[link=http://x]b\x1b]8;;")
    return s


def test_hostile_names_are_shown_escaped_and_never_read_as_markup_or_sent_raw() -> None:
    view = TopView()
    view.update(hostile_stats(), now=0.0)
    shown = text_of(view.render(0.0), width=250)
    assert "[bold red]boom[/]\\x1b[2J\\x07\\n\\u202eevil" in shown  # the queue, the peer
    assert shown.count("[bold red]boom[/]") >= 2
    assert "[link=http://x]b\\x1b]8;;" in shown
    # On a colour terminal, rich's own codes are there, and none of the names'.
    out = io.StringIO()
    Console(file=out, width=250, force_terminal=True, color_system="truecolor").print(
        view.render(0.0))
    styled = out.getvalue()
    assert "\x1b[" in styled
    for raw in ("\x1b[2J", "\x07", "\u202e", "\x1b]8;;"):
        assert raw not in styled
    assert "paused" in shown
    assert "cancelled" in shown


def test_the_empty_broker_and_no_answer_yet() -> None:
    view = TopView()
    shown = text_of(view.render(0.0))
    assert "waiting for the broker" in shown
    view.update(stats({}), now=1.0)
    shown = text_of(view.render(1.0))
    assert "broker b1" in shown
    assert "queues 0" in shown
    assert "no queues" in shown
    assert "no consumers" in shown
    assert "q quit" in shown


def test_a_failed_refresh_shows_why_over_the_last_answer() -> None:
    view = TopView(interval=2.0)
    view.update(stats({"jobs": queue(ready=4)}), now=5.0)
    view.failed("broker not answering: CONNECTION_LOST: gone")
    shown = text_of(view.render(17.0))
    assert "broker not answering: CONNECTION_LOST: gone; retrying (last answer 12s ago)" in shown
    assert "jobs" in shown
    view.update(stats({"jobs": queue(ready=4)}), now=18.0)
    assert "retrying" not in text_of(view.render(18.0))


def test_the_sorted_column_is_marked_and_the_one_frame_print_lists_no_keys() -> None:
    view = TopView(Sort.by("publish"), keys=False)
    view.update(stats({"jobs": queue()}), now=0.0)
    shown = text_of(view.render(0.0))
    assert "publish/s \u2193" in shown
    assert "sorted by publish/s, descending" in shown
    assert "q quit" not in shown
    assert "publish/s v" in text_of(view.render(0.0, ascii_only=True))


def test_a_short_screen_cuts_the_rows_and_says_how_many_more() -> None:
    many = {f"q{i:03d}": queue(ready=i) for i in range(100)}
    peers = {f"{i:02x}": {"name": f"w{i}", "held": 0, "subs": {"q000": {"in_flight": 0}}}
             for i in range(30)}
    view = TopView()
    view.update(stats(many, peers), now=0.0)
    shown = text_of(view.render(0.0, height=40), height=40)
    lines = shown.splitlines()
    assert len(lines) <= 40
    assert "more queue(s) below" in shown
    assert "more consumer(s) below" in shown
    assert budget(None, 2, 100, 30) == (100, 30)
    assert budget(40, 2, 100, 30) == (20, 10)
    assert budget(40, 2, 5, 0) == (30, 0)


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.0, "-"), (4.25, "4.2s"), (59.9, "59.9s"), (61, "1m01s"), (3600, "1h00m"),
    (90061, "1d01h")])
def test_ages_read_at_a_glance(seconds: float, shown: str) -> None:
    assert age(seconds) == shown

