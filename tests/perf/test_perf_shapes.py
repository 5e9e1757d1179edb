"""perf's traffic shapes: queue assignment, partitions, relay routing, stamp figures,
configs, the latency plot's axis, and the suite's summary."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from perf import plot, suite
from perf.common import WorkerReport, queue_names, queue_of, subscribed
from perf.config import LoadConfig
from perf.fanin import FaninConfig
from perf.hist import LatencyHistogram, make_body
from perf.queues import QueuesConfig
from perf.relay import QMSG, WELCOME, Relay
from perf.stamps import StampLog, summarize


def test_queue_names_keep_the_one_queue_name() -> None:
    assert queue_names(1) == ("perf",)
    assert queue_names(3) == ("perf.0", "perf.1", "perf.2")
    with pytest.raises(ValueError, match="at least one"):
        queue_names(0)


def test_batches_go_round_robin_over_the_queues() -> None:
    assert [queue_of(i, 1, 4) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [queue_of(lo, 100, 3) for lo in range(0, 700, 100)] == [0, 1, 2, 0, 1, 2, 0]


def test_partitions_cover_every_queue_once() -> None:
    parts = [subscribed(c, 4, 10, partition=True) for c in range(4)]
    assert sorted(q for p in parts for q in p) == list(range(10))
    assert subscribed(2, 4, 10, partition=False) == list(range(10))


def test_load_config_checks_the_new_shapes() -> None:
    with pytest.raises(ValueError, match="queues"):
        LoadConfig(queues=0)
    with pytest.raises(ValueError, match="send time"):
        LoadConfig(stamp=True, size=12)
    with pytest.raises(ValueError, match="more consumers than queues"):
        LoadConfig(queues=2, consumers=3, partition=True)
    assert "7 queues" in LoadConfig(queues=7).describe()


def test_fanin_and_queues_configs() -> None:
    f = FaninConfig(clients=10, processes=3, per_client=5)
    assert f.messages == 50
    shares = [f.share(i) for i in range(3)]
    assert shares == [(0, 4), (4, 3), (7, 3)]
    assert f.load().messages == 50
    with pytest.raises(ValueError, match="more processes"):
        FaninConfig(clients=2, processes=3)
    q = QueuesConfig(queues=100, per_queue=3, consumers=4)
    load = q.load()
    assert (load.messages, load.queues, load.batch) == (300, 100, 1)
    assert load.partition
    assert load.stamp
    assert load.window_batches == q.tasks  # the baseline keeps as many in flight


class FakeSend:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def __call__(self, parts: list[bytes], *args: Any, **kw: Any) -> None:
        self.sent.append(list(parts))


def test_relay_routes_named_queues_to_their_consumers_and_parks_the_rest() -> None:
    relay = Relay(sock=None)  # type: ignore[arg-type]  # routing only, no socket use
    send = FakeSend()
    early = [b"prod", QMSG, b"q2", b"\x00\x00\x00\x01", b"body"]
    relay.parked.append(early)  # arrived before anyone consumed q2
    relay._hello(b"c1", [b"q1"], send)
    assert send.sent == [[b"c1", WELCOME]]
    assert relay.parked == [early]  # c1 does not take q2
    relay._hello(b"c2", [b"q2", b"q3"], send)
    assert send.sent[-2:] == [[b"c2", WELCOME], [b"c2", *early]]
    assert relay.parked == []
    assert relay._route(b"q1") == b"c1"
    assert relay._route(b"q3") == b"c2"
    assert relay._route(b"nobody") is None  # no any-queue consumer either
    relay._hello(b"any", [], send)
    assert relay._route(b"nobody") == b"any"


def test_stamp_figures_from_consumer_logs() -> None:
    t0 = 1000.0
    logs = [StampLog(6), StampLog(6)]
    # consumer 0 takes queues 0 and 2, consumer 1 queue 1; message i goes to queue i % 3
    for i in range(6):
        sent = t0 + i * 0.001
        logs[0 if i % 3 != 1 else 1].received(i % 3, make_body(i, sent, 32), sent + 0.002)
    reports: list[WorkerReport] = []
    for k, log in enumerate(logs):
        rep = log.report(_Spec(k), 0.0, 0.01 * (k + 1))
        reports.append(rep)
    s = summarize(reports, t0)
    assert s["queues_served"] == 3
    assert s["first_delivery_s"] == pytest.approx(0.002)
    assert s["all_queues_served_s"] == pytest.approx(0.004)
    assert s["deliver"]["count"] == 6
    assert s["queue_first"]["count"] == 3
    assert s["deliver"]["p50"] == pytest.approx(2000, rel=0.01)
    assert s["subscribe_s"] == pytest.approx(0.02)
    assert sum(r.count for r in reports) == 6


class _Spec:
    def __init__(self, index: int) -> None:
        self.role = "consumer"
        self.index = index


def test_plot_axis_points_and_labels() -> None:
    xs, ys = plot.points([(0.0, 100), (90.0, 200), (99.0, 1500), (100.0, 9000)])
    assert xs == pytest.approx([1.0, 10.0, 100.0])
    assert ys == [0.1, 0.2, 1.5]  # the 100th percentile is left out (x would be infinite)
    assert [plot._pct_label(x) for x in (1, 10, 100, 1000, 10_000)] == [
        "0%", "90%", "99%", "99.9%", "99.99%"]


def test_plot_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert not plot.available()
    out = tmp_path / "x.png"
    assert plot.latency_plot({}, "t", out) == plot.MISSING
    assert not out.exists()


def test_histogram_spectrum_is_monotonic_and_ends_at_100() -> None:
    h = LatencyHistogram()
    for us in range(1, 2001):
        h.record(us / 1e6)
    pts = h.spectrum()
    assert pts[-1][0] == 100.0
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(pts))
    assert LatencyHistogram().spectrum() == []


def test_suite_summary_ratios_verdicts_and_json() -> None:
    figs = [
        suite.Figure("memory", "in-memory throughput", "msg/s", 250_000.0, 300_000.0,
                     "≥ 300,000 msg/s", False),
        suite.Figure("latency-memory", "p99", "ms", 0.5, 0.25, "≤ 1 ms", True),
        suite.Figure("recovery", "ready after SIGKILL", "s", 0.2),
        suite.Figure("fanin", "fanin: run failed", "", None, ok=False, note="boom"),
    ]
    assert figs[0].ratio == pytest.approx(250 / 300)
    assert suite.fmt_ratio(figs[0]) == "83.3%"
    assert suite.fmt_ratio(figs[1]) == "2.00x"
    assert [suite.verdict(f) for f in figs] == ["NOT MET", "met", "", "RUN FAILED"]
    text = suite.summary(figs, "quick", 12.5)
    assert text.splitlines()[0] == "summary (quick; wall time 12.5 s)"
    assert "250,000 msg/s" in text
    assert "0.500 ms" in text
    lines = [json.loads(x) for x in suite.json_lines(figs, "quick", 12.5)]
    assert [x["figure"] for x in lines[:-1]] == [f.name for f in figs]
    assert lines[0]["ratio"] == pytest.approx(250 / 300)
    assert lines[-1]["wall_s"] == 12.5
    assert lines[-1]["ok"] is False


def test_suite_sizes_and_steps() -> None:
    assert set(suite.SIZES) == {"full", "quick", "tiny"}
    assert list(suite.STEPS)[:2] == ["memory", "durable"]  # durable reuses memory's baseline
    full, quick = suite.SIZES["full"], suite.SIZES["quick"]
    assert full.fanin_clients == quick.fanin_clients == 1000
    assert full.queues == quick.queues == 10_000
