"""Every `python -m perf` scenario runs end to end at a tiny size: a real broker, real
worker processes (throughput, with one queue and with several; latency; backlog;
recovery; fanin; queues; lanes; delays; idle; and the suite at its CI size).

No speed assertions: only that both systems ran, delivered every message exactly
once, and that the output shows zq's figures, the baseline's and the ratio. The
delays scenario's one correctness check, no message delivered before its due time,
is asserted too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.procs import ROOT


def _run_perf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "perf", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert "\r" not in proc.stderr  # no progress line when stderr is not a terminal
    return proc


def _perf(*args: str, timeout: float = 60) -> str:
    proc = _run_perf(*args, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_perf_throughput_quick_reports_zq_and_baseline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "throughput", "--quick", "--messages", "5000", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    assert re.search(r"^1\s+zq\s+[\d,]+\s", out, re.M), out
    assert re.search(r"^1\s+baseline\s+[\d,]+\s", out, re.M), out
    assert re.search(r"^1\s+zq/baseline\s+[\d.]+%", out, re.M), out
    results = {r["system"]: r for r in
               (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    assert set(results) == {"zq", "baseline"}
    for r in results.values():
        assert r["ok"], r["problems"]
        assert r["messages"] == r["received"] == r["confirmed"] == 5000
        assert r["msg_per_s"] > 0
        assert r["server_exit"] == 0
    assert results["zq"]["ratio_to_baseline"] > 0


def _json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_perf_latency_tiny_reports_percentiles_for_zq_and_baseline(tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "latency", "--rate", "2000", "--duration", "0.5",
         "--storage", "sqlite", "--json", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # not a dependency: the plot is skipped, with a message
        assert "matplotlib is not installed" in proc.stderr
        assert not plot.exists()
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = proc.stdout
    for system in ("zq", "baseline", "zq/baseline"):
        for metric in ("publish→confirm", "publish→deliver"):
            assert re.search(rf"^{re.escape(system)}\s+{metric}(\s+[\d.,x]+){{5}}$", out,
                             re.M), out
    results = {r["system"]: r for r in _json_lines(out)}
    assert set(results) == {"zq", "baseline"}
    for r in results.values():
        assert r["scenario"] == "latency"
        assert r["ok"], r["problems"]
        assert r["messages"] == r["received"] == r["confirmed"] == 1000
        assert r["missing"] == r["duplicates"] == 0
        assert r["server_exit"] == 0
        for metric in ("confirm", "deliver", "lag"):
            s = r[metric]
            assert s["count"] == 1000
            assert 0 < s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["max"]
    assert results["zq"]["storage"] == "sqlite"
    assert results["zq"]["server_stats"]["published"] == 1000
    assert results["zq"]["ratio_to_baseline"]["deliver"]["p99"] > 0


@pytest.mark.slow  # (the router's figures are measured in perf/RESULTS.md; CI time)
def test_perf_latency_tiny_through_a_router_and_the_bare_hop() -> None:
    """``zq-router`` and ``zq-hop`` (the floor under what a router adds) run beside zq and
    print what each adds, per percentile."""
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "latency", "--rate", "2000", "--duration", "0.5",
         "--system", "zq", "--system", "zq-router", "--system", "zq-hop", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    for label in ("router adds", "hop adds"):
        assert re.search(rf"^{label}\s+publish→deliver(\s+[-+\d.,]+){{5}}$", proc.stdout,
                         re.M), proc.stdout
    results = {r["system"]: r for r in _json_lines(proc.stdout)}
    assert set(results) == {"zq", "zq-router", "zq-hop"}
    for r in results.values():
        assert r["ok"], r["problems"]
        assert r["received"] == r["confirmed"] == 1000


def test_perf_backlog_tiny_pages_restarts_and_drains() -> None:
    # A window of 500 messages makes the broker page 3,000 messages in from disk.
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "backlog", "--messages", "3000", "--size", "200",
         "--batch", "250", "--window", "500", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    for phase in ("start, empty store", "publish", "restart after SIGTERM",
                  "restart after SIGKILL", "drain"):
        assert re.search(rf"^{phase}\s+[\d.]+ s", out, re.M), out
    [r] = _json_lines(out)
    assert r["scenario"] == "backlog"
    assert r["ok"], r["problems"]
    assert r["received"] == r["messages"] == 3000
    assert r["missing"] == r["duplicates"] == 0
    assert r["server_exit"] == 0
    assert set(r["backlog_reported"].values()) == {3000}
    for key in ("ready_empty_s", "ready_after_sigterm_s", "ready_after_sigkill_s",
                "publish_per_s", "drain_per_s", "rss_publish_peak_mib", "rss_drain_peak_mib"):
        assert r[key] > 0, key


def test_perf_throughput_over_several_queues() -> None:
    out = _perf("throughput", "--messages", "3000", "--queues", "7", "--consumers", "2",
                "--json")
    assert "7 queues" in out
    results = {r["system"]: r for r in _json_lines(out)}
    assert set(results) == {"zq", "baseline"}
    for r in results.values():
        assert r["ok"], r["problems"]
        assert r["queues"] == 7
        assert r["messages"] == r["received"] == r["confirmed"] == 3000
        assert r["server_rss_peak_mib"] > 0
    assert results["zq"]["server_stats"]["queues"] == 7  # the broker saw seven queues
    assert results["zq"]["server_stats"]["ready_left"] == 0


def test_perf_recovery_tiny_restarts_with_the_backlog() -> None:
    out = _perf("recovery", "--messages", "2000", "--rounds", "2", "--json")
    for phase in ("empty store", r"after SIGKILL \(2x\)", r"after SIGTERM \(2x\)"):
        assert re.search(rf"^{phase}\s+[\d.]+ s", out, re.M), out
    [r] = _json_lines(out)
    assert r["scenario"] == "recovery"
    assert r["ok"], r["problems"]
    assert r["backlog_reported"] == [2000] * 5  # after publishing and after each restart
    assert len(r["ready_after_sigkill_s"]) == len(r["ready_after_sigterm_s"]) == 2
    assert all(t > 0 for t in r["ready_after_sigkill_s"] + r["ready_after_sigterm_s"])
    assert r["ready_empty_s"] > 0
    assert r["server_exit"] == 0


def test_perf_fanin_tiny_many_producers_both_systems() -> None:
    out = _perf("fanin", "--clients", "30", "--processes", "2", "--per-client", "4", "--json")
    assert re.search(r"^zq/baseline\s+[\d.]+%", out, re.M), out
    results = {r["system"]: r for r in _json_lines(out)}
    assert set(results) == {"zq", "baseline"}
    for r in results.values():
        assert r["scenario"] == "fanin"
        assert r["ok"], (r["problems"], r["load"]["problems"])
        assert r["load"]["messages"] == r["load"]["received"] == 120
        assert r["load"]["missing"] == r["load"]["duplicates"] == 0
        assert 0 < r["connect_median_s"] <= r["connect_all_s"]
        assert r["server_rss_connected_mib"] > 0
    assert results["zq"]["sessions"] == 30
    assert results["zq"]["ratio_to_baseline"] > 0


def test_perf_queues_tiny_first_delivery_on_every_queue() -> None:
    out = _perf("queues", "--queues", "60", "--per-queue", "3", "--producers", "1",
                "--consumers", "2", "--json")
    results = {r["system"]: r for r in _json_lines(out)}
    assert set(results) == {"zq", "baseline"}
    for r in results.values():
        assert r["scenario"] == "queues"
        assert r["ok"], r["problems"]
        assert r["messages"] == r["received"] == 180
        s = r["stamps"]
        assert s["queues_served"] == 60
        assert 0 < s["first_delivery_s"] <= s["all_queues_served_s"]
        assert s["deliver"]["count"] == 180
        assert s["queue_first"]["count"] == 60
    assert results["zq"]["server_stats"]["queues"] == 60


def test_perf_lanes_tiny_plain_priority_tenant_and_baseline() -> None:
    out = _perf("lanes", "--tiny", "--storage", "sqlite", "--json")
    for label in ("zq plain", "zq priority", "zq tenant", "baseline"):
        assert re.search(rf"^1\s+{label}\s+[\d,]+\s", out, re.M), out
    assert re.search(r"^1\s+zq tenant\s.*\s[\d.]+%\s+[\d.]+%\s+exactly once$", out, re.M), out
    results = {r["lanes"]: r for r in _json_lines(out)}
    assert set(results) == {"plain", "priority", "tenant", "baseline"}
    for mode, r in results.items():
        assert r["scenario"] == "lanes"
        assert r["ok"], r["problems"]
        assert r["messages"] == r["received"] == r["confirmed"] == 2000
        assert r["missing"] == r["duplicates"] == 0
        assert r["server_exit"] == 0
        if mode != "baseline":
            assert r["storage"] == "sqlite"
            assert r["server_stats"]["published"] == r["server_stats"]["acked"] == 2000
            assert r["ratio_to_baseline"] > 0
            assert r["ratio_to_plain"] > 0
    assert results["plain"]["ratio_to_plain"] == 1.0


def test_perf_delays_tiny_reports_lateness_and_no_early_arrival() -> None:
    proc = _run_perf("delays", "--tiny", "--json")
    [r] = _json_lines(proc.stdout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    assert re.search(r"^memory\s+500(\s+[\d.,]+){5}\s+0\s+[\d.]+$", out, re.M), out
    assert "target p99 lateness <= 50 ms and 0 early" in out
    assert r["scenario"] == "delays"
    assert r["ok"], r["problems"]
    assert r["early"] == 0
    assert r["min_lateness_us"] >= 0
    assert r["messages"] == r["received"] == r["confirmed"] == 500
    assert r["missing"] == r["duplicates"] == 0
    assert r["server_exit"] == 0
    assert r["max_delay"] == 0.5
    s = r["lateness"]
    assert s["count"] == 500
    assert 0 < s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["max"]
    assert r["server_stats"]["published"] == r["server_stats"]["acked"] == 500


def test_perf_idle_reports_rss_and_start_time() -> None:
    out = _perf("idle", "--repeat", "1", "--settle", "0.1", "--json")
    results = {r["storage"]: r for r in _json_lines(out)}
    assert set(results) == {"memory", "sqlite"}
    for r in results.values():
        assert r["scenario"] == "idle"
        assert r["ok"], r["problems"]
        assert r["exits"] == [0]
        assert r["ready_median_s"] > 0
        assert r["rss_median_mib"] > 0


def test_perf_suite_tiny_summarizes_a_few_steps() -> None:
    """The suite's own part (steps in turn, the summary against the targets) on two
    quick steps; each step alone has its smoke test above, and every step in one suite
    runs under ``-m slow``."""
    steps = ("memory", "delays-memory")
    proc = _run_perf("suite", "--tiny", "--json", *(a for s in steps for a in ("--only", s)),
                     timeout=150)
    out = proc.stdout
    lines = _json_lines(out)
    figures = [r for r in lines if r["scenario"] == "suite" and "figure" in r]
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{proc.stderr}"
    [end] = [r for r in lines if r["scenario"] == "suite" and "wall_s" in r]
    assert end["ok"]
    assert end["figures"] == len(figures)
    assert {f["step"] for f in figures} == set(steps)
    assert all(f["ok"] and f["zq"] is not None and f["zq"] >= 0 for f in figures), figures
    assert re.search(r"^summary \(tiny; wall time [\d.]+ s\)$", out, re.M), out


@pytest.mark.slow
def test_perf_suite_tiny_runs_every_step_and_summarizes() -> None:
    proc = _run_perf("suite", "--tiny", "--json", timeout=150)
    out = proc.stdout
    lines = _json_lines(out)
    figures = [r for r in lines if r["scenario"] == "suite" and "figure" in r]
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{proc.stderr}"
    [end] = [r for r in lines if r["scenario"] == "suite" and "wall_s" in r]
    assert end["ok"]
    assert end["figures"] == len(figures)
    steps = {f["step"] for f in figures}
    assert steps == {"memory", "durable", "one-message", "throughput-q10", "latency-memory",
                     "latency-durable", "latency-10k", "backlog", "recovery", "fanin",
                     "queues", "lanes", "delays-memory", "delays-durable", "idle"}
    for f in figures:
        assert f["ok"], f
        assert f["zq"] is not None, f
        assert f["zq"] >= 0, f
    with_target = [f for f in figures if f["target"]]
    assert len(with_target) >= 11  # the targets and the backlog's
    assert all(isinstance(f["met"], bool) for f in with_target)
    assert {r["scenario"] for r in lines} >= {"throughput", "latency", "backlog", "recovery",
                                               "fanin", "queues", "lanes", "delays", "idle",
                                               "suite"}
    assert [r["early"] for r in lines if r["scenario"] == "delays"] == [0, 0]
    assert re.search(r"^lanes: 4 tenants weighted 1-4, batches round robin\s+[\d,]+ msg/s\s+"
                     r"[\d,]+ msg/s\s+[\d.]+%.*\s[\d.]+% of plain$", out, re.M), out
    assert re.search(r"^delay lateness p99, 500 delays .* durable\s+[\d.]+ ms\s+-\s+"
                     r"≤ 50 ms and 0 early\s+(met|NOT MET)\s+0 early", out, re.M), out
    assert re.search(r"^summary \(tiny; wall time [\d.]+ s\)$", out, re.M), out
    assert re.search(r"^in-memory throughput, batches of 100, prefetch 1,000\s+[\d,]+ msg/s",
                     out, re.M), out


def test_perf_streams_tiny_appends_reads_in_groups_and_measures_latency() -> None:
    out = _perf("streams", "--messages", "2000", "--rounds", "1", "--seconds", "1",
                "--rate", "500", "--no-relay", "--json", timeout=120)
    (d,) = _json_lines(out)
    assert d["ok"], d["problems"]
    assert all(d["medians"][k] > 0 for k in ("queue publish", "queue drain", "append",
                                                "read 1 group", "read 3 groups"))
    for target in ("stream", "queue"):
        lat = d["latency"][target]
        assert lat["n"] == 500
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert re.search(r"^latency stream: p50 [\d.]+ ms, p99 [\d.]+ ms", out, re.M), out
