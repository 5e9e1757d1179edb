"""``python -m perf queues``: many queues (10,000 by default) with light traffic each.

Every queue gets a few messages (10 by default). Producers publish with the
one-message API, ``publish()``, message ``i`` to queue ``i % Q``, from 500
concurrent tasks each: consecutive messages go to different queues, so the
broker sees many small PUBLISH frames (the SDK coalesces per queue and loop
turn). A handful of consumer processes (4) share the queues: consumer ``c``
takes queues ``c, c + 4, ...``, one ``client.consume(queue, prefetch=10)`` each
(the SDK allows one consumer per queue per client), and acks every message.
Each body carries its index and its send time.

This is a ``throughput`` run with that shape (:mod:`perf.harness`), so the same
checks hold: exactly once, the broker's counters, exit 0. Figures: msg/s, the
broker's CPU and RSS (once every consumer has subscribed, and the peak), how long
subscribing took, and **time to first delivery**: from the first publish to the
first message delivered anywhere, to every queue having delivered its first
message, and per queue how long its first message took from publish to delivery.

The baseline sends the same traffic through the relay (:mod:`perf.relay`):
``[Q, queue, seq, body]`` per message, 500 in flight per producer, and each
consumer's hello names its queues, so the relay routes by queue name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf import harness
from perf.config import RELAY_IO, RELAY_MODES, STORAGES, LoadConfig
from perf.progress import BAR
from perf.report import machine, scenario_header

SYSTEMS = ("zq", "baseline")
DEFAULT_QUEUES = 10_000
DEFAULT_PER_QUEUE = 10
QUICK_PER_QUEUE = 2


@dataclass(frozen=True, slots=True)
class QueuesConfig:
    queues: int = DEFAULT_QUEUES
    per_queue: int = DEFAULT_PER_QUEUE  # messages each queue gets
    producers: int = 2
    consumers: int = 4
    prefetch: int = 10  # per queue
    size: int = 100
    tasks: int = 500  # concurrent publish() calls per producer
    storage: str = "memory"
    relay_mode: str = "poll"
    relay_io: str = "multipart"
    timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("queues", "per_queue", "producers", "consumers", "prefetch", "tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")
        if self.relay_mode not in RELAY_MODES or self.relay_io not in RELAY_IO:
            raise ValueError("unknown relay mode or relay I/O")
        self.load()  # the rest is validated there

    @property
    def messages(self) -> int:
        return self.queues * self.per_queue

    def load(self) -> LoadConfig:
        return LoadConfig(messages=self.messages, producers=self.producers,
                          consumers=self.consumers, batch=1, prefetch=self.prefetch,
                          size=self.size, window=max(self.tasks, 1), tasks=self.tasks,
                          timeout=self.timeout, relay_mode=self.relay_mode,
                          relay_io=self.relay_io, storage=self.storage, queues=self.queues,
                          partition=True, stamp=True)

    def describe(self) -> str:
        return (f"{self.queues:,} queues x {self.per_queue:,} messages of {self.size} B "
                f"({self.messages:,} in all), message i to queue i % {self.queues:,}; "
                f"{self.producers} producer(s), {self.tasks} concurrent publish() each; "
                f"{self.consumers} consumer(s), each taking every {self.consumers}th queue "
                f"with prefetch {self.prefetch} per queue; zq storage {self.storage}")


def run(system: str, cfg: QueuesConfig, log_dir: Path) -> harness.Result:
    with BAR.scope("queues"):
        return harness.run(system, cfg.load(), log_dir)


def header(cfg: QueuesConfig) -> str:
    return scenario_header("queues", cfg)


def _ms(us: float) -> str:
    return f"{us / 1000:,.2f}"


def table(results: dict[str, harness.Result]) -> str:
    cols = ["system", "msg/s", "server CPU", "server us/msg", "server RSS subscribed / peak",
            "subscribe", "first delivery", "all queues served", "delivery"]
    rows = [cols]
    for r in results.values():
        s = r.stamps
        rows.append([
            r.system, f"{r.msg_per_s:,.0f}", f"{r.server_cpu_s:.2f} s",
            f"{r.server_cpu_s / r.messages * 1e6:.1f}",
            f"{r.server_rss_ready_mib:.1f} / {r.server_rss_peak_mib:.1f} MiB",
            f"{r.subscribe_s:.3f} s", f"{s.get('first_delivery_s', 0.0) * 1000:.1f} ms",
            f"{s.get('all_queues_served_s', 0.0):.3f} s",
            "exactly once" if r.ok else "FAILED: " + "; ".join(r.problems)])
    zq_r, base = results.get("zq"), results.get("baseline")
    if zq_r is not None and base is not None and base.msg_per_s > 0:
        rows.append(["zq/baseline", f"{zq_r.msg_per_s / base.msg_per_s:.1%}",
                     "", "", "", "", "", "", ""])
    widths = [max(len(row[c]) for row in rows) for c in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) if 0 < c < 8 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    keys = ("p50", "p99", "max")
    for r in results.values():
        s = r.stamps
        if not s:
            continue
        qf, dv = s["queue_first"], s["deliver"]
        lines.append(
            f"{r.system}: each queue's first message, publish to delivery: "
            f"{' / '.join(f'{k} {_ms(qf[k])}' for k in keys)} ms; every message: "
            f"{' / '.join(f'{k} {_ms(dv[k])}' for k in keys)} ms; "
            f"{s['queues_served']:,} queues served")
    return "\n".join(lines)


def json_lines(cfg: QueuesConfig, results: dict[str, harness.Result]) -> list[str]:
    out = []
    zq_r, base = results.get("zq"), results.get("baseline")
    for r in results.values():
        d: dict[str, Any] = dataclasses.asdict(r)
        d.update(scenario="queues", ok=r.ok, per_queue=cfg.per_queue, unit_latency="us",
                 config=dataclasses.asdict(cfg), machine=machine())
        if r.system == "zq" and zq_r is not None and base is not None and base.msg_per_s:
            d["ratio_to_baseline"] = zq_r.msg_per_s / base.msg_per_s
        out.append(json.dumps(d, sort_keys=True))
    return out

