"""Print results as a table, and as JSON lines on request."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
from typing import Any

import zmq

from perf.config import LoadConfig
from perf.harness import Result


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}


def scenario_header(scenario: str, cfg: Any, relay: bool = True) -> str:
    """A scenario's first two lines: ``cfg.describe()``, then the machine (and with
    ``relay``, the baseline relay's loop and I/O from ``cfg``)."""
    m = machine()
    text = (f"{scenario}: {cfg.describe()}\n"
            f"machine: {m['nproc']} CPU(s), Python {m['python']}, pyzmq {m['pyzmq']}, "
            f"libzmq {m['libzmq']}")
    if relay:
        text += f"; baseline relay: {cfg.relay_mode} loop, {cfg.relay_io} I/O"
    return text


def header(cfg: LoadConfig) -> str:
    return scenario_header("throughput", cfg)


_COLS = ("round", "system", "msg/s", "elapsed", "server CPU", "server us/msg",
         "client CPU", "server RSS", "delivery")


def _row(rnd: int, r: Result) -> list[str]:
    per_msg = r.server_cpu_s / r.messages * 1e6
    delivery = "exactly once" if r.ok else "FAILED: " + "; ".join(r.problems)
    return [str(rnd), r.system, f"{r.msg_per_s:,.0f}", f"{r.elapsed_s:.3f} s",
            f"{r.server_cpu_s:.2f} s", f"{per_msg:.1f}", f"{r.client_cpu_s:.2f} s",
            f"{r.server_rss_peak_mib:.1f} MiB", delivery]


def table(rounds: list[dict[str, Result]]) -> str:
    rows: list[list[str]] = [list(_COLS)]
    ratios: list[float] = []
    for i, res in enumerate(rounds, 1):
        for r in res.values():
            rows.append(_row(i, r))
        ratio = _ratio(res)
        if ratio is not None:
            ratios.append(ratio)
            rows.append([str(i), "zq/baseline", f"{ratio:.1%}", "", "", "", "", "", ""])
        for name, a, b in (("zq-router/zq", "zq-router", "zq"),
                           ("zq-router/baseline", "zq-router", "baseline"),
                           ("zq-ha/zq", "zq-ha", "zq"), ("zq-ha/baseline", "zq-ha", "baseline"),
                           ("zq-curve/zq", "zq-curve", "zq"),
                           ("zq-curve/baseline", "zq-curve", "baseline"),
                           ("zq-admin/zq", "zq-admin", "zq")):
            if a in res and b in res and res[b].msg_per_s > 0:
                rows.append([str(i), name, f"{res[a].msg_per_s / res[b].msg_per_s:.1%}",
                             "", "", "", "", "", ""])
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLS))]
    right = {2, 3, 4, 5, 6, 7}
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if c in right else cell.ljust(w)
                 for c, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    scraped = [res["zq-admin"].server_stats.get("scraper") for res in rounds
               if "zq-admin" in res]
    if any(scraped):
        n = sum(s["scrapes"] for s in scraped if s)
        lines.append(f"zq-admin: {n} scrapes of /metrics and /api/overview "
                     f"({sum(s['errors'] for s in scraped if s)} failed), slowest "
                     f"{max(s['slowest_s'] for s in scraped if s) * 1000:.1f} ms, largest "
                     f"{max(s['largest_bytes'] for s in scraped if s):,} bytes")
    if len(rounds) > 1:
        lines.append(_summary(rounds, ratios))
    return "\n".join(lines)


def _summary(rounds: list[dict[str, Result]], ratios: list[float]) -> str:
    parts = []
    for system in ("zq", "zq-router", "zq-ha", "zq-curve", "zq-admin", "baseline"):
        rates = [res[system].msg_per_s for res in rounds if system in res]
        if rates:
            parts.append(f"{system} median {statistics.median(rates):,.0f} msg/s "
                         f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
    if ratios:
        parts.append(f"ratio median {statistics.median(ratios):.1%}")
    for system, words in (("zq-router", "through the router / direct"),
                          ("zq-ha", "replicated / single"), ("zq-curve", "CURVE / plaintext"),
                          ("zq-admin", "scraped / not")):
        against = [res[system].msg_per_s / res["zq"].msg_per_s for res in rounds
                   if system in res and "zq" in res and res["zq"].msg_per_s > 0]
        if against:
            parts.append(f"{words} median {statistics.median(against):.1%}")
    return "; ".join(parts)


def _ratio(res: dict[str, Result]) -> float | None:
    if "zq" in res and "baseline" in res and res["baseline"].msg_per_s > 0:
        return res["zq"].msg_per_s / res["baseline"].msg_per_s
    return None


def json_lines(cfg: LoadConfig, rounds: list[dict[str, Result]]) -> list[str]:
    m = machine()
    out = []
    for i, res in enumerate(rounds, 1):
        ratio = _ratio(res)
        for r in res.values():
            d = dataclasses.asdict(r)
            d.update(scenario="throughput", round=i, ok=r.ok, client_cpu_s=r.client_cpu_s,
                     window=cfg.window, publish_tasks=cfg.publish_tasks,
                     window_batches=cfg.window_batches, relay_mode=cfg.relay_mode,
                     relay_io=cfg.relay_io,
                     server_us_per_msg=r.server_cpu_s / r.messages * 1e6, machine=m)
            if r.system == "zq" and ratio is not None:
                d["ratio_to_baseline"] = ratio
            out.append(json.dumps(d, sort_keys=True))
    return out


def footer(problems: list[str], before: list[float], after: list[float], folder: str,
           kept: str) -> list[str]:
    """The last lines of a scenario's table: what failed, the load average around the
    run, and where its logs and ``kept`` (its JSON) are."""
    lines = ["FAILED: " + "; ".join(problems)] if problems else []
    lines.append(f"load average {' '.join(map(str, before))} before, "
                 f"{' '.join(map(str, after))} after; logs and {kept} in {folder}")
    return lines
