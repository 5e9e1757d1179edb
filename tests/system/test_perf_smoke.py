"""`python -m perf throughput`, `latency` and `backlog` run end to end at a tiny size:
a real broker, real worker processes.

No speed assertions: only that both systems ran, delivered every message exactly
once, and that the output shows zq's figures, the baseline's and the ratio.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from tests.procs import ROOT


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


def test_perf_latency_tiny_reports_percentiles_for_zq_and_baseline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "perf", "latency", "--rate", "2000", "--duration", "0.5",
         "--storage", "sqlite", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
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
