"""``python -m perf idle``: an idle broker's memory, and start-to-ready on an empty store.

For each storage (memory, and sqlite on a fresh data folder), ``repeat`` times:
start ``zq broker``, time it from process start (``Popen``) to its ``ZQ READY``
line, wait ``settle`` seconds with no client, read its RSS (``VmRSS``) and the
kernel's peak (``VmHWM``), SIGTERM it and expect exit 0. The figures are the
median and the worst of the repeats; the start time includes the interpreter's
own start and zq's imports, as a user (or a supervisor) would see it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf import server
from perf.backlog import START_TIMEOUT
from perf.common import rss_kib
from perf.progress import BAR
from perf.report import machine, scenario_header

STORAGES = ("memory", "sqlite")
DEFAULT_REPEAT = 5
QUICK_REPEAT = 2
DEFAULT_SETTLE = 1.0
TARGET_RSS_MB = 50.0  # the targets: idle RSS <= 50 MB, ready <= 0.5 s
TARGET_READY_S = 0.5


@dataclass(frozen=True, slots=True)
class IdleConfig:
    storages: tuple[str, ...] = STORAGES
    repeat: int = DEFAULT_REPEAT
    settle: float = DEFAULT_SETTLE  # seconds between ready and reading RSS

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.settle < 0:
            raise ValueError("repeat must be >= 1 and settle >= 0")
        bad = [s for s in self.storages if s not in STORAGES]
        if bad or not self.storages:
            raise ValueError(f"storages must be among {', '.join(STORAGES)}")

    def describe(self) -> str:
        return (f"zq broker on an empty store ({', '.join(self.storages)}), {self.repeat} "
                f"start(s) each: process start to ZQ READY, then RSS after {self.settle:g} s "
                f"with no client")


@dataclass(slots=True)
class IdleResult:
    storage: str
    ready_s: list[float]
    rss_mib: list[float]
    hwm_mib: list[float]
    exits: list[int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def ready_median_s(self) -> float:
        return statistics.median(self.ready_s)

    @property
    def rss_median_mib(self) -> float:
        return statistics.median(self.rss_mib)


def run(cfg: IdleConfig, work_dir: Path) -> dict[str, IdleResult]:
    out: dict[str, IdleResult] = {}
    log = work_dir / "zq-broker.log"
    for storage in cfg.storages:
        res = IdleResult(storage, [], [], [], [])
        for i in range(cfg.repeat):
            with BAR.scope(f"idle {storage} {i + 1}/{cfg.repeat}"):
                data = work_dir / f"zq-idle-{uuid.uuid4().hex[:8]}"
                srv = server.zq_broker(log, storage, data)
                with srv:
                    t0 = time.monotonic()
                    srv.start(timeout=START_TIMEOUT)
                    res.ready_s.append(time.monotonic() - t0)
                    time.sleep(cfg.settle)
                    res.rss_mib.append(rss_kib(srv.pid) / 1024)
                    res.hwm_mib.append(rss_kib(srv.pid, "VmHWM") / 1024)
                    rc = srv.stop()
                res.exits.append(rc)
                if rc != 0:
                    res.problems.append(f"start {i + 1}: exited {rc} on SIGTERM, expected 0")
        out[storage] = res
    return out


def header(cfg: IdleConfig) -> str:
    return scenario_header("idle", cfg, relay=False)


def table(results: dict[str, IdleResult]) -> str:
    rows = [("storage", "start to ready (median / max)", "idle RSS (median / max)",
             "VmHWM (max)", "exit")]
    for r in results.values():
        rows.append((r.storage, f"{r.ready_median_s:.3f} / {max(r.ready_s):.3f} s",
                     f"{r.rss_median_mib:.1f} / {max(r.rss_mib):.1f} MiB",
                     f"{max(r.hwm_mib):.1f} MiB",
                     "0" if r.ok else "FAILED: " + "; ".join(r.problems)))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if 0 < c < 4 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append(f"targets: idle RSS <= {TARGET_RSS_MB:g} MB "
                 f"({TARGET_RSS_MB * 1e6 / 2**20:.1f} MiB), start to ready <= "
                 f"{TARGET_READY_S:g} s")
    return "\n".join(lines)


def json_lines(cfg: IdleConfig, results: dict[str, IdleResult]) -> list[str]:
    out = []
    for r in results.values():
        d: dict[str, Any] = dataclasses.asdict(r)
        d.update(scenario="idle", ok=r.ok, ready_median_s=r.ready_median_s,
                 rss_median_mib=r.rss_median_mib, settle_s=cfg.settle, machine=machine())
        out.append(json.dumps(d, sort_keys=True))
    return out
