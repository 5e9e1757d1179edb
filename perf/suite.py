"""``python -m perf suite``: every scenario in sequence, one summary table at the end.

Each step runs one scenario in this process (its workers and servers are real
processes, as when the scenario runs alone), prints that scenario's own table,
and yields *figures*: one number for zq, the baseline's where the scenario has
one, their ratio, and the issue's target where it sets one. A step that fails
(a run error, or a broken exactly-once check) is marked in the summary and the
suite goes on; the exit code is then 1.

Sizes: ``full`` (the scenarios' defaults; under 10 minutes on a 2-core machine),
``quick`` (under a minute) and ``tiny`` (for CI: only checks that everything
runs; its figures mean nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf import (
    backlog,
    delays,
    fanin,
    harness,
    idle,
    lanes,
    latency,
    queues,
    recovery,
    report,
)
from perf.config import LoadConfig
from perf.progress import BAR
from perf.server import ServerError

MB = 1e6 / 2**20  # MiB per MB: targets in MB, RSS read in MiB


@dataclass(frozen=True, slots=True)
class Sizes:
    throughput: int  # messages per throughput run (and per lanes run)
    latency_s: float  # seconds of traffic per latency run
    backlog: int  # messages (of 1 KiB)
    recovery: int  # messages (of 100 B)
    recovery_rounds: int
    fanin_clients: int
    fanin_processes: int
    fanin_per_client: int
    queues: int
    per_queue: int
    queue_consumers: int
    queue_producers: int
    idle_repeat: int
    idle_settle: float
    delays: int  # delayed messages per delays run
    max_delay: float  # seconds; delays uniform in [0, max_delay)


SIZES = {
    "full": Sizes(throughput=200_000, latency_s=10.0, backlog=1_000_000, recovery=100_000,
                  recovery_rounds=3, fanin_clients=1000, fanin_processes=4,
                  fanin_per_client=100, queues=10_000, per_queue=10, queue_consumers=4,
                  queue_producers=2, idle_repeat=5, idle_settle=1.0,
                  delays=delays.DEFAULT_MESSAGES, max_delay=delays.DEFAULT_MAX_DELAY),
    "quick": Sizes(throughput=20_000, latency_s=2.0, backlog=20_000, recovery=10_000,
                   recovery_rounds=1, fanin_clients=1000, fanin_processes=4,
                   fanin_per_client=10, queues=10_000, per_queue=2, queue_consumers=4,
                   queue_producers=2, idle_repeat=2, idle_settle=0.3,
                   delays=delays.QUICK_MESSAGES, max_delay=delays.DEFAULT_MAX_DELAY),
    "tiny": Sizes(throughput=2_000, latency_s=0.3, backlog=2_000, recovery=2_000,
                  recovery_rounds=1, fanin_clients=40, fanin_processes=2, fanin_per_client=5,
                  queues=200, per_queue=2, queue_consumers=2, queue_producers=1,
                  idle_repeat=1, idle_settle=0.1, delays=delays.TINY_MESSAGES,
                  max_delay=delays.TINY_MAX_DELAY),
}


@dataclass(slots=True)
class Figure:
    step: str
    name: str
    unit: str  # msg/s, ms, s, MiB, us/msg
    zq: float | None
    baseline: float | None = None
    target: str = ""  # as the issue states it
    met: bool | None = None  # None: no target
    ok: bool = True  # the run that measured it verified (exactly once, exits, ...)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.zq is None or not self.baseline:
            return None
        return self.zq / self.baseline


@dataclass(slots=True)
class Context:
    sizes: Sizes
    tmp: Path
    echo: Callable[[str], None]
    as_json: bool
    memo: dict[str, Any] = field(default_factory=dict)  # results later steps reuse

    def lines(self, lines: list[str]) -> None:
        if self.as_json:
            for line in lines:
                self.echo(line)


# ----------------------------------------------------------------------- steps


def _throughput(ctx: Context, cfg: LoadConfig, systems: tuple[str, ...]
                ) -> dict[str, harness.Result]:
    ctx.echo(report.header(cfg))
    res: dict[str, harness.Result] = {}
    with BAR.scope("throughput"):
        for system in systems:
            res[system] = harness.run(system, cfg, ctx.tmp)
    ctx.echo(report.table([res]))
    ctx.lines(report.json_lines(cfg, [res]))
    return res


def step_memory(ctx: Context) -> list[Figure]:
    res = _throughput(ctx, LoadConfig(messages=ctx.sizes.throughput), ("zq", "baseline"))
    ctx.memo["batched_baseline"] = res["baseline"]
    z, b = res["zq"], res["baseline"]
    ratio = z.msg_per_s / b.msg_per_s if b.msg_per_s else 0.0
    return [Figure("memory", "in-memory throughput, batches of 100, prefetch 1,000", "msg/s",
                   z.msg_per_s, b.msg_per_s, "≥ 300,000 msg/s and ≥ 40 % of baseline",
                   z.msg_per_s >= 300_000 and ratio >= 0.40, z.ok and b.ok)]


def step_durable(ctx: Context) -> list[Figure]:
    cfg = LoadConfig(messages=ctx.sizes.throughput, storage="sqlite")
    res = _throughput(ctx, cfg, ("zq",))
    z = res["zq"]
    b: harness.Result | None = ctx.memo.get("batched_baseline")
    return [Figure("durable", "durable throughput, sqlite FULL, same shape", "msg/s",
                   z.msg_per_s, b.msg_per_s if b else None, "≥ 100,000 msg/s",
                   z.msg_per_s >= 100_000, z.ok,
                   "baseline: the in-memory step's relay run (the relay stores nothing)")]


def step_one_message(ctx: Context) -> list[Figure]:
    res = _throughput(ctx, LoadConfig(messages=ctx.sizes.throughput, batch=1),
                      ("zq", "baseline"))
    z, b = res["zq"], res["baseline"]
    return [Figure("one-message", "one-message API (publish() per message, 500 tasks), memory",
                   "msg/s", z.msg_per_s, b.msg_per_s, "≥ 25,000 msg/s",
                   z.msg_per_s >= 25_000, z.ok and b.ok,
                   "baseline: one ZeroMQ message and one ack per body")]


def step_queues_throughput(ctx: Context) -> list[Figure]:
    res = _throughput(ctx, LoadConfig(messages=ctx.sizes.throughput, queues=10),
                      ("zq", "baseline"))
    z, b = res["zq"], res["baseline"]
    return [Figure("throughput-q10", "in-memory throughput over 10 queues, batches of 100",
                   "msg/s", z.msg_per_s, b.msg_per_s, ok=z.ok and b.ok)]


def _compare(ctx: Context, scenario: Any, cfg: Any, systems: tuple[str, ...] = ()
             ) -> dict[str, Any]:
    """A scenario module's run for each of ``systems`` (default: all of its SYSTEMS),
    with its header, table and JSON lines."""
    ctx.echo(scenario.header(cfg))
    res = {s: scenario.run(s, cfg, ctx.tmp) for s in systems or scenario.SYSTEMS}
    ctx.echo(scenario.table(res))
    ctx.lines(scenario.json_lines(cfg, res))
    return res


def _p99_ms(r: latency.LatencyResult | None) -> float | None:
    return r.deliver["p99"] / 1000 if r is not None else None


def step_latency_memory(ctx: Context) -> list[Figure]:
    cfg = latency.LatencyConfig(rate=1000, duration=ctx.sizes.latency_s)
    res = _compare(ctx, latency, cfg)
    ctx.memo["latency_1000_baseline"] = res["baseline"]
    z = _p99_ms(res["zq"])
    assert z is not None
    return [Figure("latency-memory", "publish→deliver p99 at 1,000 msg/s, memory", "ms", z,
                   _p99_ms(res["baseline"]), "≤ 1 ms", z <= 1.0,
                   res["zq"].ok and res["baseline"].ok)]


def step_latency_durable(ctx: Context) -> list[Figure]:
    cfg = latency.LatencyConfig(rate=1000, duration=ctx.sizes.latency_s, storage="sqlite")
    res = _compare(ctx, latency, cfg, ("zq",))
    z = _p99_ms(res["zq"])
    assert z is not None
    return [Figure("latency-durable", "publish→deliver p99 at 1,000 msg/s, durable", "ms", z,
                   _p99_ms(ctx.memo.get("latency_1000_baseline")), "≤ 3 ms", z <= 3.0,
                   res["zq"].ok, "baseline: the memory step's relay run")]


def step_latency_10k(ctx: Context) -> list[Figure]:
    cfg = latency.LatencyConfig(rate=10_000, duration=ctx.sizes.latency_s, storage="sqlite")
    res = _compare(ctx, latency, cfg)
    z = _p99_ms(res["zq"])
    assert z is not None
    return [Figure("latency-10k", "publish→deliver p99 at 10,000 msg/s, durable", "ms", z,
                   _p99_ms(res["baseline"]), "≤ 5 ms", z <= 5.0,
                   res["zq"].ok and res["baseline"].ok)]


def step_backlog(ctx: Context) -> list[Figure]:
    cfg = backlog.BacklogConfig(messages=ctx.sizes.backlog)
    ctx.echo(backlog.header(cfg))
    (ctx.tmp / "backlog").mkdir(exist_ok=True)
    with BAR.scope("backlog"):
        r = backlog.run(cfg, ctx.tmp / "backlog", say=BAR.say)
    ctx.echo(backlog.table(r))
    ctx.lines([backlog.json_line(cfg, r)])
    n = f"{r.messages:,} x 1 KiB"
    return [
        Figure("backlog", f"broker peak RSS, publishing {n} (no consumer)", "MiB",
               r.rss_publish_peak_mib, target="< 300 MB",
               met=r.rss_publish_peak_mib < 300 * MB, ok=r.ok),
        Figure("backlog", f"start to ready with {n} stored, after SIGKILL", "s",
               r.ready_after_sigkill_s, target="< 10 s", met=r.ready_after_sigkill_s < 10,
               ok=r.ok),
        Figure("backlog", f"start to ready with {n} stored, after SIGTERM", "s",
               r.ready_after_sigterm_s, target="< 10 s", met=r.ready_after_sigterm_s < 10,
               ok=r.ok),
        Figure("backlog", f"publish {n}, sqlite FULL, no consumer", "msg/s", r.publish_per_s,
               ok=r.ok),
        Figure("backlog", f"drain {n}, one consumer", "msg/s", r.drain_per_s, ok=r.ok),
    ]


def step_recovery(ctx: Context) -> list[Figure]:
    s = ctx.sizes
    cfg = recovery.RecoveryConfig(messages=s.recovery, rounds=s.recovery_rounds)
    ctx.echo(recovery.header(cfg))
    (ctx.tmp / "recovery").mkdir(exist_ok=True)
    r = recovery.run(cfg, ctx.tmp / "recovery")
    ctx.echo(recovery.table(r))
    ctx.lines([recovery.json_line(cfg, r)])
    n = f"{r.messages:,} x {r.size} B stored"
    med = f"median of {cfg.rounds}" if cfg.rounds > 1 else ""
    return [
        Figure("recovery", f"start to ready with {n}, after SIGKILL", "s", r.sigkill_median_s,
               ok=r.ok, note=med),
        Figure("recovery", f"start to ready with {n}, after SIGTERM", "s", r.sigterm_median_s,
               ok=r.ok, note=med),
    ]


def step_fanin(ctx: Context) -> list[Figure]:
    s = ctx.sizes
    cfg = fanin.FaninConfig(clients=s.fanin_clients, processes=s.fanin_processes,
                            per_client=s.fanin_per_client)
    res = _compare(ctx, fanin, cfg)
    z, b = res["zq"], res["baseline"]
    ok = z.ok and b.ok
    who = f"{cfg.clients:,} producers"
    return [
        Figure("fanin", f"fan-in: {who}, publish() one at a time each", "msg/s",
               z.load.msg_per_s, b.load.msg_per_s, ok=ok),
        Figure("fanin", f"fan-in: server CPU per message, {who}", "us/msg",
               z.load.server_cpu_s / z.load.messages * 1e6,
               b.load.server_cpu_s / b.load.messages * 1e6, ok=ok),
        Figure("fanin", f"fan-in: server peak RSS, {who} connected", "MiB",
               z.load.server_rss_peak_mib, b.load.server_rss_peak_mib, ok=ok),
        Figure("fanin", f"fan-in: connection setup, all {who}", "s", z.connect_all_s,
               b.connect_all_s, ok=ok, note=f"median {z.connect_median_s:.3f} s "
               f"(baseline {b.connect_median_s:.3f} s)"),
    ]


def step_queues(ctx: Context) -> list[Figure]:
    s = ctx.sizes
    cfg = queues.QueuesConfig(queues=s.queues, per_queue=s.per_queue,
                              consumers=s.queue_consumers, producers=s.queue_producers)
    res = _compare(ctx, queues, cfg)
    z, b = res["zq"], res["baseline"]
    ok = z.ok and b.ok
    q = f"{cfg.queues:,} queues"
    return [
        Figure("queues", f"{q} x {cfg.per_queue} messages, publish() per message", "msg/s",
               z.msg_per_s, b.msg_per_s, ok=ok),
        Figure("queues", f"{q}: server peak RSS", "MiB", z.server_rss_peak_mib,
               b.server_rss_peak_mib, ok=ok),
        Figure("queues", f"{q}: server CPU per message", "us/msg",
               z.server_cpu_s / z.messages * 1e6, b.server_cpu_s / b.messages * 1e6, ok=ok),
        Figure("queues", f"{q}: first publish to first delivery", "ms",
               z.stamps["first_delivery_s"] * 1000, b.stamps["first_delivery_s"] * 1000, ok=ok),
        Figure("queues", f"{q}: first publish to every queue served", "s",
               z.stamps["all_queues_served_s"], b.stamps["all_queues_served_s"], ok=ok),
    ]


def step_lanes(ctx: Context) -> list[Figure]:
    cfg = LoadConfig(messages=ctx.sizes.throughput)
    ctx.echo(lanes.header(cfg))
    res: dict[str, harness.Result] = {}
    with BAR.scope("lanes"):
        for system in lanes.SYSTEMS:
            res[system] = lanes.run(system, cfg, ctx.tmp)
    ctx.echo(lanes.table([res]))
    ctx.lines(lanes.json_lines(cfg, [res]))
    ok = all(r.ok for r in res.values())
    rat = lanes.ratios(res)
    out = []
    for system, what in (("plain", "lanes: no publish options, memory, batches of 100"),
                         ("priority", "lanes: a random priority 0-9 per batch"),
                         ("tenant", "lanes: 4 tenants weighted 1-4, batches round robin")):
        to_plain = rat[system]["to_plain"]
        note = f"{to_plain:.1%} of plain" if system != "plain" and to_plain is not None else ""
        out.append(Figure("lanes", what, "msg/s", res[system].msg_per_s,
                          res["baseline"].msg_per_s, ok=ok, note=note))
    return out


def _delays(ctx: Context, step: str, storage: str) -> list[Figure]:
    s = ctx.sizes
    cfg = delays.DelaysConfig(messages=s.delays, max_delay=s.max_delay, storage=storage)
    r = _compare(ctx, delays, cfg)["zq"]
    store = "memory" if storage == "memory" else "durable"
    late = r.lateness
    return [Figure(step, f"delay lateness p99, {cfg.messages:,} delays in [0, "
                   f"{cfg.max_delay:g}) s at {cfg.rate:,.0f} msg/s, {store}", "ms", r.p99_ms,
                   target=f"≤ {delays.TARGET_P99_MS:g} ms and 0 early", met=r.met, ok=r.ok,
                   note=f"{r.early} early; p50 {late['p50'] / 1000:.3f} ms, max "
                        f"{late['max'] / 1000:.3f} ms")]


def step_delays_memory(ctx: Context) -> list[Figure]:
    return _delays(ctx, "delays-memory", "memory")


def step_delays_durable(ctx: Context) -> list[Figure]:
    return _delays(ctx, "delays-durable", "sqlite")


def step_idle(ctx: Context) -> list[Figure]:
    s = ctx.sizes
    cfg = idle.IdleConfig(repeat=s.idle_repeat, settle=s.idle_settle)
    ctx.echo(idle.header(cfg))
    (ctx.tmp / "idle").mkdir(exist_ok=True)
    res = idle.run(cfg, ctx.tmp / "idle")
    ctx.echo(idle.table(res))
    ctx.lines(idle.json_lines(cfg, res))
    med = f"median of {cfg.repeat}" if cfg.repeat > 1 else ""
    out = []
    for storage, r in res.items():
        out.append(Figure("idle", f"idle broker RSS, {storage} store", "MiB",
                          r.rss_median_mib, target="≤ 50 MB",
                          met=r.rss_median_mib <= 50 * MB, ok=r.ok,
                          note=f"{med}, max {max(r.rss_mib):.1f}" if med else ""))
        out.append(Figure("idle", f"start to ready, empty {storage} store", "s",
                          r.ready_median_s, target="≤ 0.5 s", met=r.ready_median_s <= 0.5,
                          ok=r.ok, note=f"{med}, max {max(r.ready_s):.3f}" if med else ""))
    return out


STEPS: dict[str, Callable[[Context], list[Figure]]] = {
    "memory": step_memory,
    "durable": step_durable,
    "one-message": step_one_message,
    "throughput-q10": step_queues_throughput,
    "latency-memory": step_latency_memory,
    "latency-durable": step_latency_durable,
    "latency-10k": step_latency_10k,
    "backlog": step_backlog,
    "recovery": step_recovery,
    "fanin": step_fanin,
    "queues": step_queues,
    "lanes": step_lanes,
    "delays-memory": step_delays_memory,
    "delays-durable": step_delays_durable,
    "idle": step_idle,
}


# ------------------------------------------------------------------------- run


def run(size: str, steps: list[str], echo: Callable[[str], None], as_json: bool
        ) -> tuple[list[Figure], float]:
    """Run ``steps`` at ``size``; return the figures and the wall time in seconds."""
    figures: list[Figure] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zq-suite-") as tmp:
        ctx = Context(SIZES[size], Path(tmp), echo, as_json)
        with BAR.scope(f"suite ({size})"):
            for i, name in enumerate(steps, 1):
                echo(f"\n== {i}/{len(steps)} {name}")
                with BAR.scope(f"{i}/{len(steps)} {name}"), _step_errors(name, figures, echo):
                    figures.extend(STEPS[name](ctx))
    return figures, time.monotonic() - t0


@contextlib.contextmanager
def _step_errors(name: str, figures: list[Figure], echo: Callable[[str], None]
                 ) -> Iterator[None]:
    try:
        yield
    except (harness.RunFailed, ServerError, TimeoutError, OSError) as exc:
        _failed(name, exc, figures, echo)
    except Exception as exc:  # a bug or an unforeseen error: show it, run the other steps
        BAR.say(traceback.format_exc())
        _failed(name, exc, figures, echo)


def _failed(name: str, exc: BaseException, figures: list[Figure],
            echo: Callable[[str], None]) -> None:
    text = str(exc).splitlines()[0] if str(exc) else repr(exc)
    echo(f"step {name} failed: {exc!r}")
    figures.append(Figure(name, f"{name}: run failed", "", None, ok=False, note=text[:200]))


# ---------------------------------------------------------------------- report


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "us/msg":
        return f"{value:.1f} µs/msg"
    return f"{value:g} {unit}".strip()


def fmt_ratio(f: Figure) -> str:
    r = f.ratio
    if r is None:
        return ""
    return f"{r:.1%}" if f.unit == "msg/s" else f"{r:.2f}x"


def verdict(f: Figure) -> str:
    if not f.ok:
        return "RUN FAILED"
    if f.met is None:
        return ""
    return "met" if f.met else "NOT MET"


def summary(figures: list[Figure], size: str, wall_s: float) -> str:
    cols = ["figure", "zq", "baseline", "zq/baseline", "target", "verdict", "note"]
    rows = [cols]
    for f in figures:
        rows.append([f.name, fmt(f.zq, f.unit), fmt(f.baseline, f.unit), fmt_ratio(f),
                     f.target, verdict(f), f.note])
    widths = [max(len(row[c]) for row in rows) for c in range(len(cols))]
    lines = [f"summary ({size}; wall time {wall_s:.1f} s)"]
    for row in rows:
        lines.append("  ".join(cell.rjust(w) if c in (1, 2, 3) else cell.ljust(w)
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
                     .rstrip())
    return "\n".join(lines)


def json_lines(figures: list[Figure], size: str, wall_s: float) -> list[str]:
    m = report.machine()
    out = []
    for f in figures:
        d = dataclasses.asdict(f)
        d.update(scenario="suite", size=size, figure=d.pop("name"), ratio=f.ratio,
                 machine=m)
        out.append(json.dumps(d, sort_keys=True, ensure_ascii=False))
    out.append(json.dumps({"scenario": "suite", "size": size, "wall_s": wall_s,
                           "figures": len(figures), "ok": all(f.ok for f in figures),
                           "machine": m}, sort_keys=True))
    return out
