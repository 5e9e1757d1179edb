"""`python -m perf throughput` runs end to end: a real broker, real worker processes.

No speed assertions: only that both systems ran, delivered every message exactly
once, and that the table shows zq's figure, the baseline's and the ratio.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

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
