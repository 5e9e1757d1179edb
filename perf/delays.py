"""``python -m perf delays``: how punctually delayed messages arrive while the broker is busy.

One producer process publishes N messages at a steady rate (message ``i`` is due
to be sent at ``t0 + i / rate``, paced as in :mod:`perf.latency`), each with its
own delay drawn uniformly from ``[0, D)`` (seeded), one ``publish(queue, body,
delay=d)`` per message. Just before the call the producer reads
``time.monotonic()``; the message's *due* time is that reading plus ``d``, and
the body carries its index and its due time. One consumer process (prefetch
1,000 by default) acks every message and records its **lateness**: the
``time.monotonic()`` at arrival minus the due time in the body.

Clock: producer and consumer are separate processes; both read CLOCK_MONOTONIC
(``time.monotonic()``), which is one clock for the whole machine on Linux (as in
every perf scenario), so the consumer can compare its own reading with the
producer's.

Lateness counts everything between the publish call and the consumer's
iteration: the trip to the broker (the broker counts the delay from when it
receives the message), the SDK rounding the delay up to a whole millisecond, the
broker's timer and the delivery. A message that arrives before its due time is
**early**; the count of early messages must be 0 (the run fails otherwise).
Lateness percentiles come from an HdrHistogram (µs, 3 significant digits; an
early message is recorded as 1 µs there and counted apart). Target: p99 lateness
≤ 50 ms with no early message.

There is no baseline: the relay has no timers to compare with. The run checks
exactly-once delivery and the broker's counters as the other scenarios do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zq
from perf import harness, server
from perf.common import QUEUE, Counts, Events, WorkerReport, cpu_seconds, run_async_worker
from perf.config import STORAGES
from perf.hist import HEAD, SUMMARY_KEYS, LatencyHistogram, OpenLoop, Pacer, Schedule
from perf.progress import BAR
from perf.report import machine, scenario_header
from perf.zqload import consume_timed

DEFAULT_MESSAGES = 20_000
QUICK_MESSAGES = 5_000
TINY_MESSAGES = 500
DEFAULT_MAX_DELAY = 2.0
TINY_MAX_DELAY = 0.5
DEFAULT_RATE = 5_000.0
DEFAULT_PREFETCH = 1000
LEAD = 0.05  # seconds between the start signal and the first intended send
TARGET_P99_MS = 50.0
SYSTEMS = ("zq",)


@dataclass(frozen=True, slots=True)
class DelaysConfig:
    messages: int = DEFAULT_MESSAGES
    max_delay: float = DEFAULT_MAX_DELAY  # seconds; delays are uniform in [0, max_delay)
    rate: float = DEFAULT_RATE  # messages published per second
    size: int = 100
    prefetch: int = DEFAULT_PREFETCH
    storage: str = "memory"
    seed: int = 1
    timeout: float = 60.0  # seconds past the last due time before the run counts as failed

    def __post_init__(self) -> None:
        if self.messages < 1 or self.prefetch < 1:
            raise ValueError("messages and prefetch must be >= 1")
        if self.max_delay <= 0 or self.rate <= 0 or self.timeout <= 0:
            raise ValueError("max_delay, rate and timeout must be > 0")
        if self.size < HEAD.size:
            raise ValueError(f"size must be >= {HEAD.size} bytes (index and due time)")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")

    @property
    def publish_s(self) -> float:
        return self.messages / self.rate

    def describe(self) -> str:
        return (f"{self.messages:,} messages of {self.size} B published at {self.rate:,.0f} "
                f"msg/s ({self.publish_s:g} s), one publish(delay=d) each, d uniform in "
                f"[0, {self.max_delay:g}) s (seed {self.seed}); zq storage {self.storage}; "
                f"1 producer, 1 consumer (prefetch {self.prefetch:,}, one ack per message); "
                f"lateness = arrival - (time.monotonic() at publish + d)")


@dataclass(frozen=True, slots=True)
class DelaysSpec:
    """What one worker needs (picklable: it crosses ``spawn``)."""

    role: str
    index: int
    endpoint: str
    messages: int
    rate: float
    max_delay: float
    size: int
    prefetch: int
    seed: int
    timeout: float


@dataclass(slots=True)
class DelaysResult:
    system: str
    storage: str
    messages: int
    rate: float
    max_delay: float
    lateness: dict[str, Any]  # µs (LatencyHistogram.summary); early ones recorded as 1 µs
    early: int  # arrived before their due time
    min_lateness_us: float  # the earliest arrival's lateness (negative if early)
    confirm: dict[str, Any]  # publish→confirm from the intended send time, µs
    lag: dict[str, Any]  # the producer's lag behind its schedule, µs
    sent_per_s: float
    received: int
    duplicates: int
    missing: int
    confirmed: int
    server_cpu_s: float
    server_rss_peak_mib: float
    server_exit: int | None
    problems: list[str] = field(default_factory=list)
    server_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def p99_ms(self) -> float:
        return float(self.lateness["p99"]) / 1000

    @property
    def met(self) -> bool:
        """The target: p99 lateness <= 50 ms and no early arrival."""
        return self.p99_ms <= TARGET_P99_MS and self.early == 0


# --------------------------------------------------------------------- workers


def delays_of(seed: int, messages: int, max_delay: float) -> list[float]:
    """Message ``i``'s delay in seconds: uniform in ``[0, max_delay)``, fixed by ``seed``."""
    rng = random.Random(seed)
    return [rng.random() * max_delay for _ in range(messages)]


def producer_main(spec: DelaysSpec, start: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _produce(spec, start, events, out))


def consumer_main(spec: DelaysSpec, counts: Counts, stop: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _consume(spec, counts, stop, events, out))


async def _produce(spec: DelaysSpec, start: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    n = spec.messages
    delays = delays_of(spec.seed, n, spec.max_delay)
    pad = b"x" * (spec.size - HEAD.size)
    pack = HEAD.pack
    now = time.monotonic
    loop = asyncio.get_running_loop()
    async with zq.Client(spec.endpoint, name="perf-delays-producer") as client:
        events.put(("ready", spec.role, spec.index))
        if not await asyncio.to_thread(start.wait, spec.timeout):
            raise TimeoutError("no start signal")
        rec = OpenLoop(Schedule(now() + LEAD, spec.rate, n))
        done: asyncio.Future[None] = loop.create_future()
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            d = delays[i]
            await client.publish(QUEUE, pack(i, now() + d) + pad, delay=d)
            rec.confirmed(i, now())
            if rec.done and not done.done():
                done.set_result(None)

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None and not done.done():
                done.set_exception(task.exception())

        def fire(upto: int) -> None:
            for i in rec.take_due(upto, now()):
                task = loop.create_task(one(i))
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
    s = rec.schedule
    span = rec.t_last_sent - s.t0
    out.append(WorkerReport(spec.role, spec.index, count=rec.n_confirmed, t_first=s.t0,
                            t_last=rec.t_last_confirm, cpu_s=cpu1 - cpu0,
                            extra={"confirm": rec.confirm.encode(), "lag": rec.lag.encode(),
                                   "sent_per_s": (n - 1) / span if span > 0 else 0.0}))


class LatenessLog:
    """A consumer's record: each arrival's lateness, early arrivals, which indexes came."""

    def __init__(self, messages: int) -> None:
        self.lateness = LatencyHistogram()
        self.seen = bytearray(messages)
        self.count = 0
        self.duplicates = 0
        self.early = 0
        self.min_lateness = float("inf")
        self.t_last = 0.0

    def received(self, body: bytes, now: float) -> None:
        i, due = HEAD.unpack_from(body)
        late = now - due
        if late < 0:
            self.early += 1
        if late < self.min_lateness:
            self.min_lateness = late
        self.lateness.record(late)  # an early one counts as 1 µs there
        if self.seen[i]:
            self.duplicates += 1
        else:
            self.seen[i] = 1
        self.count += 1
        self.t_last = now

    def report(self, spec: DelaysSpec, cpu_s: float) -> WorkerReport:
        return WorkerReport(spec.role, spec.index, count=self.count, duplicates=self.duplicates,
                            t_last=self.t_last, cpu_s=cpu_s, seen=bytes(self.seen),
                            extra={"lateness": self.lateness.encode(), "early": self.early,
                                   "min_lateness_s": (self.min_lateness if self.count
                                                      else 0.0)})


async def _consume(spec: DelaysSpec, counts: Counts, stop: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    await consume_timed(spec, LatenessLog(spec.messages), "perf-delays-consumer", counts, stop,
                        events, out, barrier=True)


# --------------------------------------------------------------------- harness


def run(system: str, cfg: DelaysConfig, log_dir: Path) -> DelaysResult:
    """One run: a zq broker, the consumer, the producer."""
    if system != "zq":
        raise ValueError("delays runs zq only (the relay has no delays)")
    data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"
    srv = server.zq_broker(log_dir / "zq-broker.log", cfg.storage, data)
    with srv, BAR.scope(f"delays {cfg.storage}"):
        endpoint = srv.start()
        reports, server_cpu, rss_peak = _drive(cfg, endpoint, srv)
        stats = harness._run_async(harness._broker_stats(endpoint))
        rc = srv.stop()
    return _result(cfg, reports, server_cpu, rss_peak, rc, stats)


def _drive(cfg: DelaysConfig, endpoint: str,
           srv: server.Server) -> tuple[list[WorkerReport], float, float]:
    def spec(role: str) -> DelaysSpec:
        return DelaysSpec(role, 0, endpoint, cfg.messages, cfg.rate, cfg.max_delay, cfg.size,
                          cfg.prefetch, cfg.seed, cfg.timeout)

    with harness.Workers(srv) as w:
        counts: Any = w.ctx.RawArray("q", 1)
        w.spawn(consumer_main, "zq-delays-consumer", spec("consumer"), counts, w.stop,
                w.events)
        w.wait("ready", 1, 60.0, lambda: "consumer subscribing")
        w.spawn(producer_main, "zq-delays-producer", spec("producer"), w.start, w.events)
        w.wait("ready", 1, 60.0, lambda: "producer connecting")
        reports, server_cpu, rss_peak = w.measure(
            counts, cfg.messages, cfg.publish_s + cfg.max_delay + cfg.timeout,
            "the consumer has")
    w.check_exits()
    return reports, server_cpu, rss_peak


def _result(cfg: DelaysConfig, reports: list[WorkerReport], server_cpu: float,
            rss_peak: float, rc: int, stats: dict[str, Any]) -> DelaysResult:
    prod = next(r for r in reports if r.role == "producer")
    cons = next(r for r in reports if r.role == "consumer")
    n = cfg.messages
    missing = n - sum(cons.seen)
    early = int(cons.extra["early"])
    problems: list[str] = []
    if early:
        problems.append(f"{early:,} message(s) arrived before their due time")
    if missing:
        problems.append(f"{missing:,} message(s) never received")
    if cons.duplicates:
        problems.append(f"{cons.duplicates:,} duplicate deliveries")
    if prod.count != n:
        problems.append(f"producer saw {prod.count:,} confirmed, expected {n:,}")
    if rc != 0:
        problems.append(f"server exited {rc} on SIGTERM, expected 0")
    c = stats["counters"]
    q = stats["queues"].get(QUEUE, {})
    slim = {k: c[k] for k in ("published", "delivered", "deliver_frames", "acked",
                              "redelivered", "errors_sent")}
    slim["avg_deliver_batch"] = round(c["avg_deliver_batch"], 2)
    slim["store"] = stats.get("store", {})
    if c["published"] != n or c["acked"] != n:
        problems.append(f"broker counted published={c['published']:,} acked={c['acked']:,}, "
                        f"expected {n:,}")
    if c["errors_sent"]:
        problems.append(f"broker sent {c['errors_sent']} ERROR frame(s)")
    left = {k: q.get(k, 0) for k in ("ready", "delayed", "in_flight") if q.get(k, 0)}
    if left:
        problems.append("broker still holds " + " ".join(f"{k}={v}" for k, v in left.items()))
    return DelaysResult(
        system="zq", storage=cfg.storage, messages=n, rate=cfg.rate, max_delay=cfg.max_delay,
        lateness=LatencyHistogram.decode(cons.extra["lateness"]).summary(), early=early,
        min_lateness_us=round(float(cons.extra["min_lateness_s"]) * 1e6, 1),
        confirm=LatencyHistogram.decode(prod.extra["confirm"]).summary(),
        lag=LatencyHistogram.decode(prod.extra["lag"]).summary(),
        sent_per_s=prod.extra["sent_per_s"], received=cons.count,
        duplicates=cons.duplicates, missing=missing, confirmed=prod.count,
        server_cpu_s=round(server_cpu, 3), server_rss_peak_mib=round(rss_peak, 1),
        server_exit=rc, problems=problems, server_stats=slim)


# ---------------------------------------------------------------------- report


def header(cfg: DelaysConfig) -> str:
    return scenario_header("delays", cfg, relay=False)


def _ms(us: float) -> str:
    return f"{us / 1000:,.3f}"


def table(results: dict[str, DelaysResult]) -> str:
    cols = ["storage", "messages", *(f"lateness {k} ms" if k == "p50" else f"{k} ms"
                                     for k in SUMMARY_KEYS), "early", "earliest ms"]
    rows = [cols]
    for r in results.values():
        rows.append([r.storage, f"{r.messages:,}", *(_ms(r.lateness[k]) for k in SUMMARY_KEYS),
                     f"{r.early:,}", _ms(r.min_lateness_us)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) if c > 0 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    for r in results.values():
        delivery = "exactly once" if r.ok else "FAILED: " + "; ".join(r.problems)
        lines.append(
            f"{r.storage}: sent {r.sent_per_s:,.0f} msg/s (producer lag p99 "
            f"{_ms(r.lag['p99'])} ms); publish→confirm p50 {_ms(r.confirm['p50'])} / p99 "
            f"{_ms(r.confirm['p99'])} ms; server CPU {r.server_cpu_s:.2f} s, peak RSS "
            f"{r.server_rss_peak_mib:.1f} MiB; delivery: {delivery}")
        lines.append(f"{r.storage}: target p99 lateness <= {TARGET_P99_MS:g} ms and 0 early: "
                     f"{'met' if r.met else 'NOT MET'}")
    return "\n".join(lines)


def json_lines(cfg: DelaysConfig, results: dict[str, DelaysResult]) -> list[str]:
    out = []
    for r in results.values():
        d: dict[str, Any] = dataclasses.asdict(r)
        d.update(scenario="delays", ok=r.ok, met=r.met, p99_ms=r.p99_ms,
                 target_p99_ms=TARGET_P99_MS, prefetch=cfg.prefetch, size=cfg.size,
                 seed=cfg.seed, unit="us", machine=machine())
        out.append(json.dumps(d, sort_keys=True))
    return out
