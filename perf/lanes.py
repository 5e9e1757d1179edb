"""``python -m perf lanes``: what priority and tenant lanes cost on the hot path.

The same traffic four ways in one invocation, each a ``throughput`` run
(:mod:`perf.harness`) on a fresh broker, with the same checks (exactly once, the
broker's counters, exit 0):

* ``plain``: zq, ``publish_many`` with no options (the ``throughput`` scenario);
* ``priority``: zq, every ``publish_many`` batch with a random ``priority`` 0-9
  (drawn before the run from ``--seed``), so the queue's ten priority lanes all fill;
* ``tenant``: zq, the producers first declare the queue with the weights
  ``{t1: 1, t2: 2, t3: 3, t4: 4}``, then batch ``j`` is published with
  ``tenant=t(j % 4 + 1)``: weighted fair share over four tenant lanes;
* ``baseline``: the same traffic through the bare relay (:mod:`perf.relay`), which
  knows nothing of options.

It prints each run's msg/s, each zq run's ratio to ``plain`` and every run's
ratio to the baseline of the same round. With ``--repeat`` every round runs all
four once, in that order, and the medians follow.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from perf import harness
from perf.config import LANES, TENANT_WEIGHTS, LoadConfig
from perf.report import machine, scenario_header

SYSTEMS = (*LANES, "baseline")
TINY_MESSAGES = 2_000

LABELS = {
    "plain": "zq plain",
    "priority": "zq priority",
    "tenant": "zq tenant",
    "baseline": "baseline",
}


def run(system: str, cfg: LoadConfig, log_dir: Path) -> harness.Result:
    """One run: ``system`` is a lane mode (a zq run) or ``baseline``."""
    if system == "baseline":
        return harness.run("baseline", dataclasses.replace(cfg, lanes="plain"), log_dir)
    if system not in LANES:
        raise ValueError(f"system must be one of {', '.join(SYSTEMS)}")
    return harness.run("zq", dataclasses.replace(cfg, lanes=system), log_dir)


def header(cfg: LoadConfig) -> str:
    weights = ", ".join(f"{t} {w}" for t, w in TENANT_WEIGHTS.items())
    text = scenario_header("lanes", dataclasses.replace(cfg, lanes="plain"))
    return (f"{text}\nzq three ways: plain (no options); priority (each batch a random "
            f"priority 0-9, seed {cfg.seed}); tenant (batches round robin over "
            f"{len(TENANT_WEIGHTS)} tenants, weights {weights})")


def ratios(res: dict[str, harness.Result]) -> dict[str, dict[str, float | None]]:
    """Per run of one round: its msg/s over ``plain``'s and over the baseline's."""
    plain = res.get("plain")
    base = res.get("baseline")
    out: dict[str, dict[str, float | None]] = {}
    for system, r in res.items():
        out[system] = {
            "to_plain": (r.msg_per_s / plain.msg_per_s
                         if plain is not None and plain.msg_per_s and system in LANES
                         else None),
            "to_baseline": (r.msg_per_s / base.msg_per_s
                            if base is not None and base.msg_per_s and system != "baseline"
                            else None),
        }
    return out


def _pct(x: float | None) -> str:
    return f"{x:.1%}" if x is not None else ""


_COLS = ("round", "run", "msg/s", "elapsed", "server CPU", "server us/msg", "client CPU",
         "server RSS", "/ plain", "/ baseline", "delivery")


def table(rounds: list[dict[str, harness.Result]]) -> str:
    rows: list[list[str]] = [list(_COLS)]
    for i, res in enumerate(rounds, 1):
        rat = ratios(res)
        for system, r in res.items():
            delivery = "exactly once" if r.ok else "FAILED: " + "; ".join(r.problems)
            rows.append([str(i), LABELS[system], f"{r.msg_per_s:,.0f}", f"{r.elapsed_s:.3f} s",
                         f"{r.server_cpu_s:.2f} s",
                         f"{r.server_cpu_s / r.messages * 1e6:.1f}",
                         f"{r.client_cpu_s:.2f} s", f"{r.server_rss_peak_mib:.1f} MiB",
                         _pct(rat[system]["to_plain"]), _pct(rat[system]["to_baseline"]),
                         delivery])
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLS))]
    lines = ["  ".join(cell.rjust(w) if 1 < c < 10 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    if len(rounds) > 1:
        lines.extend(medians(rounds))
    return "\n".join(lines)


def medians(rounds: list[dict[str, harness.Result]]) -> list[str]:
    """One line per run kind: the median msg/s over the rounds and the median ratios."""
    out = []
    rats = [ratios(res) for res in rounds]
    for system in SYSTEMS:
        rates = [res[system].msg_per_s for res in rounds if system in res]
        if not rates:
            continue
        line = (f"{LABELS[system]}: median {statistics.median(rates):,.0f} msg/s "
                f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
        for key, name in (("to_plain", "plain"), ("to_baseline", "baseline")):
            vals = [v for rat in rats if system in rat
                    for v in [rat[system][key]] if v is not None]
            if vals:
                line += f"; median {statistics.median(vals):.1%} of {name}"
        out.append(line)
    return out


def json_lines(cfg: LoadConfig, rounds: list[dict[str, harness.Result]]) -> list[str]:
    m = machine()
    out = []
    for i, res in enumerate(rounds, 1):
        rat = ratios(res)
        for system, r in res.items():
            d: dict[str, Any] = dataclasses.asdict(r)
            d.update(scenario="lanes", lanes=system, round=i, ok=r.ok,
                     storage=cfg.storage if system != "baseline" else "none",
                     client_cpu_s=r.client_cpu_s, seed=cfg.seed,
                     tenant_weights=TENANT_WEIGHTS if system == "tenant" else None,
                     server_us_per_msg=r.server_cpu_s / r.messages * 1e6,
                     ratio_to_plain=rat[system]["to_plain"],
                     ratio_to_baseline=rat[system]["to_baseline"], machine=m)
            out.append(json.dumps(d, sort_keys=True))
    return out
