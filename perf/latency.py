"""``python -m perf latency``: open-loop latency at a fixed offered rate, zq and the baseline.

One producer process publishes with the one-message API, ``publish()``, on a
schedule fixed before the run: message ``i`` is due at ``t0 + i / rate``
(see :mod:`perf.hist`). Every body carries its index and that intended time.
The producer records publish→confirm latency from the intended time, and one
consumer process (prefetch 1000 by default, one ack per message) records
publish→deliver latency, the receive time minus the intended time. Both use
``time.monotonic()``, one clock for every process on Linux. The producer also
records its own lag (when ``publish()`` was really called minus the intended
time) so that a slow load generator shows instead of hiding in the figures.

The baseline sends the same traffic, one body per ZeroMQ message, through the
bare ROUTER relay of :mod:`perf.relay` (workers in :mod:`perf.rawlatency`).
Its "confirm" is the consumer's ack coming back through the relay, a full
round trip; zq's confirm is the broker's, once the message is stored.

When asked (``--system``): ``zq-router``, the producer publishing through a router
(:mod:`perf.cluster`), and ``zq-hop``, through the thinnest Python hop
(:mod:`perf.hop`), the consumer on the broker directly in both; "router adds" and
"hop adds" are their differences from ``zq`` in the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing as mp
import sys
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zq
from perf import harness, server
from perf.cluster import RouterCluster
from perf.common import QUEUE, Counts, Events, WorkerReport, cpu_seconds, run_async_worker
from perf.config import RELAY_IO, RELAY_MODES, STORAGES
from perf.ha import HaPair
from perf.hist import (
    HEAD,
    SUMMARY_KEYS,
    LatencyHistogram,
    OpenLoop,
    Pacer,
    Schedule,
    make_body,
    read_body,
)
from perf.hop import HopCluster
from perf.progress import BAR
from perf.report import machine, scenario_header
from perf.zqload import consume_timed

DEFAULT_RATE = 1000.0
DEFAULT_DURATION = 10.0
QUICK_DURATION = 2.0
LEAD = 0.05  # seconds between the start signal and the first intended send
SYSTEMS = ("zq", "baseline", "zq-router", "zq-hop", "zq-ha")
DEFAULT_SYSTEMS = ("zq", "baseline")  # the others when asked: --system zq-router
METRICS = (("confirm", "publish→confirm"), ("deliver", "publish→deliver"))


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    rate: float = DEFAULT_RATE  # offered messages per second
    duration: float = DEFAULT_DURATION  # seconds of traffic
    size: int = 100
    storage: str = "memory"
    prefetch: int = 1000
    relay_mode: str = "poll"
    relay_io: str = "multipart"
    timeout: float = 60.0  # seconds past the schedule's end before a run counts as failed

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("rate and duration must be > 0")
        if self.messages < 1:
            raise ValueError("rate x duration must be at least one message")
        if self.size < HEAD.size:
            raise ValueError(f"size must be >= {HEAD.size} bytes (index and send time)")
        if self.prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")
        if self.relay_mode not in RELAY_MODES or self.relay_io not in RELAY_IO:
            raise ValueError("unknown relay mode or relay I/O")

    @property
    def messages(self) -> int:
        return round(self.rate * self.duration)

    def describe(self) -> str:
        return (f"{self.messages:,} messages of {self.size} B offered at {self.rate:,.0f} msg/s "
                f"for {self.duration:g} s, open loop, one publish() per message; "
                f"zq storage {self.storage}; 1 producer, 1 consumer (prefetch "
                f"{self.prefetch:,}, one ack per message)")


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """What one latency worker needs (picklable: it crosses ``spawn``)."""

    role: str
    index: int
    endpoint: str
    messages: int
    rate: float
    size: int
    prefetch: int
    timeout: float


@dataclass(slots=True)
class LatencyResult:
    system: str
    messages: int
    rate: float
    size: int
    storage: str
    confirm: dict[str, Any]  # summaries in µs (see LatencyHistogram.summary)
    deliver: dict[str, Any]
    lag: dict[str, Any]
    sent_per_s: float  # the rate the producer really sent at
    delivered_per_s: float  # messages / (last delivery - first intended send)
    received: int
    duplicates: int
    missing: int
    confirmed: int
    server_cpu_s: float
    producer_cpu_s: float
    consumer_cpu_s: float
    server_exit: int | None
    problems: list[str] = field(default_factory=list)
    server_stats: dict[str, Any] = field(default_factory=dict)
    # metric -> (percentile, µs) points for --plot; left out of the JSON lines
    curves: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ zq workers


def producer_main(spec: LatencySpec, start: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _produce(spec, start, events, out))


def consumer_main(spec: LatencySpec, counts: Counts, stop: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _consume(spec, counts, stop, events, out))


def producer_report(spec: LatencySpec, rec: OpenLoop, cpu_s: float) -> WorkerReport:
    s = rec.schedule
    span = rec.t_last_sent - s.t0
    return WorkerReport(spec.role, spec.index, count=rec.n_confirmed, t_first=s.t0,
                        t_last=rec.t_last_confirm, cpu_s=cpu_s,
                        extra={"confirm": rec.confirm.encode(), "lag": rec.lag.encode(),
                               "sent_per_s": (s.messages - 1) / span if span > 0 else 0.0})


async def _produce(spec: LatencySpec, start: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    n, size = spec.messages, spec.size
    loop = asyncio.get_running_loop()
    async with zq.Client(spec.endpoint, name="perf-latency-producer") as client:
        events.put(("ready", spec.role, spec.index))
        if not await asyncio.to_thread(start.wait, spec.timeout):
            raise TimeoutError("no start signal")
        rec = OpenLoop(Schedule(time.monotonic() + LEAD, spec.rate, n))
        due = rec.schedule.due
        done: asyncio.Future[None] = loop.create_future()
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int, body: bytes) -> None:
            await client.publish(QUEUE, body)
            rec.confirmed(i, time.monotonic())
            if rec.done and not done.done():
                done.set_result(None)

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None and not done.done():
                done.set_exception(task.exception())

        def fire(upto: int) -> None:
            now = time.monotonic()
            for i in rec.take_due(upto, now):
                task = loop.create_task(one(i, make_body(i, due(i), size)))
                tasks.add(task)
                task.add_done_callback(finished)

        pacer = Pacer(loop, rec.schedule, fire)
        cpu0 = cpu_seconds()
        pacer.start()
        try:
            await asyncio.wait_for(done, n / spec.rate + spec.timeout)
        finally:
            pacer.stop()
            for task in list(tasks):
                task.cancel()
        cpu1 = cpu_seconds()
    out.append(producer_report(spec, rec, cpu1 - cpu0))


class DeliveryLog:
    """A consumer's record: publish→deliver latencies and which indexes arrived."""

    def __init__(self, messages: int) -> None:
        self.deliver = LatencyHistogram()
        self.seen = bytearray(messages)
        self.count = 0
        self.duplicates = 0
        self.t_last = 0.0

    def received(self, body: bytes, now: float) -> None:
        i, due = read_body(body)
        self.deliver.record(now - due)
        if self.seen[i]:
            self.duplicates += 1
        else:
            self.seen[i] = 1
        self.count += 1
        self.t_last = now

    def report(self, spec: LatencySpec, cpu_s: float) -> WorkerReport:
        return WorkerReport(spec.role, spec.index, count=self.count, duplicates=self.duplicates,
                            t_last=self.t_last, cpu_s=cpu_s, seen=bytes(self.seen),
                            extra={"deliver": self.deliver.encode()})


async def _consume(spec: LatencySpec, counts: Counts, stop: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    await consume_timed(spec, DeliveryLog(spec.messages), "perf-latency-consumer", counts, stop,
                        events, out)


# --------------------------------------------------------------------- harness


def run(system: str, cfg: LatencyConfig, log_dir: Path) -> LatencyResult:
    """One run of ``system`` (zq or baseline): a server, a consumer, a producer."""
    from perf import rawlatency

    srv: Any
    if system == "zq":
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"
        srv = server.zq_broker(log_dir / "zq-broker.log", cfg.storage, data)
        mod: Any = sys.modules[__name__]
    elif system == "zq-router":  # a one-broker cluster behind a router (perf.cluster)
        srv = RouterCluster(log_dir, cfg.storage, log_dir / f"zq-data-{uuid.uuid4().hex[:8]}")
        mod = sys.modules[__name__]
    elif system == "zq-hop":  # a broker behind the thinnest Python hop (perf.hop)
        srv = HopCluster(log_dir, cfg.storage, log_dir / f"zq-data-{uuid.uuid4().hex[:8]}")
        mod = sys.modules[__name__]
    elif system == "zq-ha":  # a primary and its synchronous standby (perf.ha): sqlite
        srv = HaPair(log_dir, log_dir / f"zq-data-{uuid.uuid4().hex[:8]}")
        mod = sys.modules[__name__]
    elif system == "baseline":
        srv = server.relay(log_dir / "relay.log", cfg.relay_mode, cfg.relay_io)
        mod = rawlatency
    else:
        raise ValueError(f"system must be one of {SYSTEMS}")
    with srv, BAR.scope(f"latency {system}"):
        endpoint = srv.start()
        reports, server_cpu = _drive(system, mod, cfg, endpoint, srv)
        stats = harness._run_async(harness._broker_stats(endpoint)) if system == "zq" else {}
        rc = srv.stop()
    return _result(system, cfg, reports, server_cpu, rc, stats)


def _drive(system: str, mod: Any, cfg: LatencyConfig, endpoint: str,
           srv: Any) -> tuple[list[WorkerReport], float]:
    ctx = mp.get_context("spawn")
    events: Any = ctx.Queue()
    start = ctx.Event()
    stop = ctx.Event()
    counts = ctx.RawArray("q", 1)
    n = cfg.messages
    procs: list[Any] = []

    def spec(role: str) -> LatencySpec:  # zq-hop's consumer consumes from the broker
        at = getattr(srv, "consumer_endpoint", "") if role == "consumer" else ""
        return LatencySpec(role, 0, at or endpoint, n, cfg.rate, cfg.size, cfg.prefetch,
                           cfg.timeout)

    try:
        p = ctx.Process(target=mod.consumer_main, name=f"{system}-latency-consumer",
                        args=(spec("consumer"), counts, stop, events))
        p.start()
        procs.append(p)
        harness._collect(events, procs, "ready", 1, 60.0, srv)
        p = ctx.Process(target=mod.producer_main, name=f"{system}-latency-producer",
                        args=(spec("producer"), start, events))
        p.start()
        procs.append(p)
        harness._collect(events, procs, "ready", 1, 60.0, srv)
        cpu0 = srv.cpu()
        start.set()

        def all_received() -> bool:
            if counts[0] >= n:
                stop.set()
            return stop.is_set()

        reports = harness._collect(events, procs, "report", 2, n / cfg.rate + cfg.timeout, srv,
                                   lambda: f"the consumer has {counts[0]:,} of {n:,}",
                                   all_received)
        cpu1 = srv.cpu()
    finally:
        stop.set()
        harness._reap(procs, events, 10.0)
    bad = [f"{p.name} exited {p.exitcode}" for p in procs if p.exitcode != 0]
    if bad:
        raise harness.RunFailed("; ".join(bad))
    return reports, cpu1 - cpu0


def _result(system: str, cfg: LatencyConfig, reports: list[WorkerReport], server_cpu: float,
            rc: int, stats: dict[str, Any]) -> LatencyResult:
    prod = next(r for r in reports if r.role == "producer")
    cons = next(r for r in reports if r.role == "consumer")
    n = cfg.messages
    missing = n - sum(cons.seen)
    confirm = LatencyHistogram.decode(prod.extra["confirm"])
    deliver = LatencyHistogram.decode(cons.extra["deliver"])
    lag = LatencyHistogram.decode(prod.extra["lag"])
    problems: list[str] = []
    if missing:
        problems.append(f"{missing:,} message(s) never received")
    if cons.duplicates:
        problems.append(f"{cons.duplicates:,} duplicate deliveries")
    if prod.count != n:
        problems.append(f"producer saw {prod.count:,} confirmed, expected {n:,}")
    if rc != 0:
        problems.append(f"server exited {rc} on SIGTERM, expected 0")
    slim: dict[str, Any] = {}
    if stats:
        c = stats["counters"]
        q = stats["queues"].get(QUEUE, {})
        slim = {k: c[k] for k in ("published", "delivered", "deliver_frames", "acked",
                                  "redelivered", "errors_sent")}
        slim["avg_deliver_batch"] = round(c["avg_deliver_batch"], 2)
        slim["store"] = stats.get("store", {})
        if c["published"] != n or c["acked"] != n:
            problems.append(f"broker counted published={c['published']:,} "
                            f"acked={c['acked']:,}, expected {n:,}")
        if c["errors_sent"]:
            problems.append(f"broker sent {c['errors_sent']} ERROR frame(s)")
        if q.get("ready", 0) or q.get("in_flight", 0):
            problems.append(f"broker still holds ready={q.get('ready', 0)} "
                            f"in_flight={q.get('in_flight', 0)}")
    span = cons.t_last - prod.t_first
    return LatencyResult(
        system=system, messages=n, rate=cfg.rate, size=cfg.size,
        storage=cfg.storage if system.startswith("zq") else "none",
        confirm=confirm.summary(), deliver=deliver.summary(), lag=lag.summary(),
        sent_per_s=prod.extra["sent_per_s"], delivered_per_s=cons.count / span if span > 0 else 0.0,
        received=cons.count, duplicates=cons.duplicates, missing=missing, confirmed=prod.count,
        server_cpu_s=round(server_cpu, 3), producer_cpu_s=round(prod.cpu_s, 3),
        consumer_cpu_s=round(cons.cpu_s, 3), server_exit=rc, problems=problems,
        server_stats=slim,
        curves={"confirm": confirm.spectrum(), "deliver": deliver.spectrum()})


# ---------------------------------------------------------------------- report


def header(cfg: LatencyConfig) -> str:
    return scenario_header("latency", cfg)


def _ms(us: float) -> str:
    return f"{us / 1000:,.3f}"


def table(results: dict[str, LatencyResult]) -> str:
    """Percentiles in milliseconds per system and metric, then zq / baseline."""
    cols = ["system", "metric", *(f"{k} ms" for k in SUMMARY_KEYS)]
    rows: list[list[str]] = [cols]
    for r in results.values():
        for key, label in METRICS:
            s = getattr(r, key)
            rows.append([r.system, label, *(_ms(s[k]) for k in SUMMARY_KEYS)])
    zq_r, base = results.get("zq"), results.get("baseline")
    if zq_r is not None and base is not None:
        for key, label in METRICS:
            a, b = getattr(zq_r, key), getattr(base, key)
            rows.append(["zq/baseline", label,
                         *(f"{a[k] / b[k]:.1f}x" if b[k] else "-" for k in SUMMARY_KEYS)])
    for name, label_ in (("zq-router", "router adds"), ("zq-hop", "hop adds"),
                         ("zq-ha", "replication adds")):
        routed = results.get(name)
        if zq_r is None or routed is None:
            continue
        for key, label in METRICS:  # what the router (or the bare hop) adds, in ms
            a, b = getattr(routed, key), getattr(zq_r, key)
            rows.append([label_, label,
                         *(f"{(a[k] - b[k]) / 1000:+.3f}" for k in SUMMARY_KEYS)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(cols))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if c >= 2 else cell.ljust(w)
                 for c, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    for r in results.values():
        lag = r.lag
        delivery = ("exactly once" if r.ok else "FAILED: " + "; ".join(r.problems))
        lines.append(
            f"{r.system}: sent {r.sent_per_s:,.0f} msg/s, delivered {r.delivered_per_s:,.0f} "
            f"msg/s; producer lag behind schedule p50 {_ms(lag['p50'])} / p99 "
            f"{_ms(lag['p99'])} / max {_ms(lag['max'])} ms; server CPU {r.server_cpu_s:.2f} s; "
            f"delivery: {delivery}")
    return "\n".join(lines)


def json_lines(cfg: LatencyConfig, results: dict[str, LatencyResult]) -> list[str]:
    m = machine()
    out = []
    zq_r, base = results.get("zq"), results.get("baseline")
    for r in results.values():
        d = dataclasses.asdict(r)
        del d["curves"]
        d.update(scenario="latency", ok=r.ok, duration=cfg.duration, prefetch=cfg.prefetch,
                 relay_mode=cfg.relay_mode, relay_io=cfg.relay_io, unit="us", machine=m)
        if r.system == "zq" and zq_r is not None and base is not None:
            d["ratio_to_baseline"] = {
                key: {k: (getattr(zq_r, key)[k] / getattr(base, key)[k]
                          if getattr(base, key)[k] else None) for k in SUMMARY_KEYS}
                for key, _ in METRICS}
        out.append(json.dumps(d, sort_keys=True))
    return out
