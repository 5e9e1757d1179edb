"""``python -m perf recovery``: process start to ``ZQ READY`` with N messages stored.

1. Start ``zq broker --storage sqlite`` on an empty data folder (timed too: the
   empty-store figure) and publish N messages with ``publish_many``, no consumer.
2. ``rounds`` times: SIGKILL the running broker and start a new one on the same
   folder (timed), then SIGTERM that one (it must exit 0; timed to its exit) and
   start another (timed). In round 1 the killed broker is the one that wrote the
   backlog, so its WAL is left behind un-checkpointed; in later rounds it is a
   broker that had only recovered.
3. After every start the broker must report all N messages ready, and its RSS is
   read. At the end it gets SIGTERM and must exit 0.

The store, the publishing and the timed start are those of ``python -m perf backlog``
(:mod:`perf.backlog`), which does the same with 1M x 1 KiB and a drain; this one is
quicker, so it can repeat and report medians.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf import backlog, server
from perf.backlog import BacklogConfig, broker, publish_all, queue_stats, run_async, start_timed
from perf.common import QUEUE, rss_kib
from perf.progress import BAR
from perf.report import machine, scenario_header

DEFAULT_MESSAGES = 100_000
QUICK_MESSAGES = 10_000
DEFAULT_SIZE = 100
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    messages: int = DEFAULT_MESSAGES
    size: int = DEFAULT_SIZE
    rounds: int = DEFAULT_ROUNDS
    batch: int = 1000
    tasks: int = 10
    fsync: str = "full"
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        self.backlog()  # the rest is validated there

    def backlog(self) -> BacklogConfig:
        return BacklogConfig(messages=self.messages, size=self.size, batch=self.batch,
                             tasks=self.tasks, fsync=self.fsync, timeout=self.timeout)

    def describe(self) -> str:
        return (f"{self.messages:,} messages of {self.size:,} B stored by zq broker --storage "
                f"sqlite --fsync {self.fsync} (publish_many, batches of {self.batch:,}, no "
                f"consumer); then {self.rounds} round(s) of SIGKILL + restart and SIGTERM + "
                f"restart, each timed from process start to ZQ READY")


@dataclass(slots=True)
class RecoveryResult:
    messages: int
    size: int
    ready_empty_s: float
    rss_empty_mib: float
    publish_s: float
    db_mib: float  # the data folder after publishing (before the first SIGKILL)
    ready_after_sigkill_s: list[float]
    ready_after_sigterm_s: list[float]
    stop_sigterm_s: list[float]  # SIGTERM -> exit
    rss_after_sigkill_mib: list[float]  # once recovered and ready
    rss_after_sigterm_mib: list[float]
    server_exit: int | None
    problems: list[str] = field(default_factory=list)
    backlog_reported: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def sigkill_median_s(self) -> float:
        return statistics.median(self.ready_after_sigkill_s)

    @property
    def sigterm_median_s(self) -> float:
        return statistics.median(self.ready_after_sigterm_s)


def run(cfg: RecoveryConfig, work_dir: Path) -> RecoveryResult:
    bcfg = cfg.backlog()
    data = work_dir / "zq-recovery-data"
    log = work_dir / "zq-broker.log"
    n = cfg.messages
    problems: list[str] = []
    reported: list[int] = []
    kills: list[float] = []
    terms: list[float] = []
    stops: list[float] = []
    rss_kill: list[float] = []
    rss_term: list[float] = []

    def check(srv: server.Server, when: str, rss: list[float] | None = None) -> None:
        ready = run_async(queue_stats(srv.endpoint))["queues"].get(QUEUE, {}).get("ready", 0)
        reported.append(ready)
        if rss is not None:
            rss.append(rss_kib(srv.pid) / 1024)
        if ready != n:
            problems.append(f"{when}: the broker reports {ready:,} ready, expected {n:,}")

    srv = broker(log, data, bcfg)
    try:
        with BAR.scope("recovery: empty store, publishing"):
            ready_empty = start_timed(srv, bcfg, restart=False)
            time.sleep(0.2)
            rss_empty = rss_kib(srv.pid) / 1024
            publish_s = run_async(publish_all(srv.endpoint, bcfg))
        check(srv, "after publishing")
        db_mib = backlog.folder_mib(data)
        for r in range(cfg.rounds):
            with BAR.scope(f"recovery: round {r + 1}/{cfg.rounds}"):
                srv.kill()  # SIGKILL: no clean close
                srv = broker(log, data, bcfg)
                kills.append(start_timed(srv, bcfg))
                check(srv, f"round {r + 1}, after the SIGKILL restart", rss_kill)
                t0 = time.monotonic()
                rc = srv.stop(within=120.0)
                stops.append(time.monotonic() - t0)
                if rc != 0:
                    problems.append(f"round {r + 1}: exited {rc} on SIGTERM, expected 0")
                srv = broker(log, data, bcfg)
                terms.append(start_timed(srv, bcfg))
                check(srv, f"round {r + 1}, after the SIGTERM restart", rss_term)
        rc_end = srv.stop(within=120.0)
    finally:
        srv.kill()
    if rc_end != 0:
        problems.append(f"the last broker exited {rc_end} on SIGTERM, expected 0")
    return RecoveryResult(
        messages=n, size=cfg.size, ready_empty_s=ready_empty, rss_empty_mib=rss_empty,
        publish_s=publish_s, db_mib=db_mib, ready_after_sigkill_s=kills,
        ready_after_sigterm_s=terms, stop_sigterm_s=stops, rss_after_sigkill_mib=rss_kill,
        rss_after_sigterm_mib=rss_term,
        server_exit=rc_end, problems=problems, backlog_reported=reported)


def header(cfg: RecoveryConfig) -> str:
    return scenario_header("recovery", cfg, relay=False)


def _spread(xs: list[float], unit: str, fmt: str = ".3f") -> str:
    if len(xs) == 1:
        return f"{xs[0]:{fmt}} {unit}"
    return (f"{statistics.median(xs):{fmt}} {unit} (min {min(xs):{fmt}}, "
            f"max {max(xs):{fmt}})")


def table(r: RecoveryResult) -> str:
    rows = [
        ("start", "to ready", "broker RSS after"),
        ("empty store", f"{r.ready_empty_s:.3f} s", f"{r.rss_empty_mib:.1f} MiB"),
        (f"after SIGKILL ({len(r.ready_after_sigkill_s)}x)",
         _spread(r.ready_after_sigkill_s, "s"), _spread(r.rss_after_sigkill_mib, "MiB", ".1f")),
        (f"after SIGTERM ({len(r.ready_after_sigterm_s)}x)",
         _spread(r.ready_after_sigterm_s, "s"), _spread(r.rss_after_sigterm_mib, "MiB", ".1f")),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    delivery = ("all ready after every restart" if r.ok
                else "FAILED: " + "; ".join(r.problems))
    lines.append(f"published {r.messages:,} x {r.size} B in {r.publish_s:.2f} s "
                 f"({r.messages / r.publish_s:,.0f} msg/s), store {r.db_mib:,.1f} MiB; "
                 f"SIGTERM to exit {_spread(r.stop_sigterm_s, 's')}; {delivery}")
    return "\n".join(lines)


def json_line(cfg: RecoveryConfig, r: RecoveryResult) -> str:
    d: dict[str, Any] = dataclasses.asdict(r)
    d.update(scenario="recovery", ok=r.ok, sigkill_median_s=r.sigkill_median_s,
             sigterm_median_s=r.sigterm_median_s, config=dataclasses.asdict(cfg),
             machine=machine())
    return json.dumps(d, sort_keys=True)
