"""One throughput run: a server process, consumer and producer processes, one result.

Order of a run: start the server and read its ready line; spawn the consumers
(subscribed, credit granted) and the producers (connected, bodies built); read
the server's CPU time; signal start; collect every worker's report; read the
server's CPU time again; (zq) ask the broker for its counters; SIGTERM the
server and expect exit 0.

The rate is ``messages / (last ack anywhere - first publish anywhere)``. The
server's RSS is sampled every 20 ms from the moment the workers are ready until
the last report (``server_rss_peak_mib``); ``server_rss_ready_mib`` is its RSS
just before the start signal (connections and subscriptions in place).

:class:`Workers` is the part other scenarios (``fanin``) reuse: spawn worker
processes, wait for their events while watching the server, run the measured part
(``measure``), reap them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf import admin, curve, rawload, server, stamps, zqload
from perf.cluster import RouterCluster
from perf.common import RssSampler, WorkerReport, WorkerSpec, rss_kib, subscribed
from perf.config import LoadConfig
from perf.ha import HaPair
from perf.progress import BAR
from zq import Client
from zq.broker import run_loop

SYSTEMS = ("zq", "baseline", "zq-router", "zq-ha", "zq-curve", "zq-admin")


class RunFailed(RuntimeError):
    pass


@dataclass(slots=True)
class Result:
    system: str
    messages: int
    producers: int
    consumers: int
    batch: int
    prefetch: int
    size: int
    elapsed_s: float
    msg_per_s: float
    received: int  # deliveries counted by consumers (duplicates included)
    duplicates: int
    missing: int
    confirmed: int  # messages producers saw confirmed
    server_cpu_s: float
    producer_cpu_s: float
    consumer_cpu_s: float
    server_exit: int | None
    problems: list[str] = field(default_factory=list)
    server_stats: dict[str, Any] = field(default_factory=dict)
    queues: int = 1
    server_rss_ready_mib: float = 0.0  # RSS once every worker was connected and subscribed
    server_rss_peak_mib: float = 0.0  # peak RSS from then until the last report
    subscribe_s: float = 0.0  # the slowest consumer's subscribing (all its queues)
    stamps: dict[str, Any] = field(default_factory=dict)  # see perf.stamps.summarize

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def client_cpu_s(self) -> float:
        return round(self.producer_cpu_s + self.consumer_cpu_s, 3)


def run(system: str, cfg: LoadConfig, log_dir: Path) -> Result:
    srv: Any
    env: dict[str, str] = {}
    scraper: Any = contextlib.nullcontext()
    if system == "zq":
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"  # a fresh store for every run
        srv = server.zq_broker(log_dir / "zq-broker.log", cfg.storage, data)
    elif system == "zq-curve":  # the same broker, every connection over CURVE
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"
        args, env = curve.broker_args(log_dir / "keys")
        srv = server.zq_broker(log_dir / "zq-curve-broker.log", cfg.storage, data, args)
    elif system == "zq-admin":  # the same broker, its admin listener scraped every second
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"
        scraper = admin.Scraper()
        srv = server.zq_broker(log_dir / "zq-admin-broker.log", cfg.storage, data,
                               scraper.broker_args())
    elif system == "zq-router":
        srv = RouterCluster(log_dir, cfg.storage, log_dir / f"zq-data-{uuid.uuid4().hex[:8]}")
    elif system == "zq-ha":  # a primary and its synchronous standby (perf.ha): sqlite
        srv = HaPair(log_dir, log_dir / f"zq-data-{uuid.uuid4().hex[:8]}")
    elif system == "baseline":
        srv = server.relay(log_dir / "relay.log", cfg.relay_mode, cfg.relay_io)
    else:
        raise ValueError(f"system must be one of {SYSTEMS}")
    with srv, BAR.scope(system), curve.client_env(env):
        endpoint = srv.start()
        with scraper:
            reports, server_cpu, rss = _drive(system, cfg, endpoint, srv)
        stats = (_run_async(_broker_stats(endpoint))
                 if system in ("zq", "zq-curve", "zq-admin") else {})
        rc = srv.stop()
    if isinstance(scraper, admin.Scraper):
        stats["scraper"] = {"scrapes": scraper.scrapes, "errors": scraper.errors,
                            "largest_bytes": scraper.largest,
                            "slowest_s": round(scraper.slowest_s, 4)}
    return _result(system, cfg, reports, server_cpu, rc, stats, rss)


class Workers:
    """Worker processes of one run (spawned), their event queue and the server they use.

    ``spawn`` starts one; ``wait`` collects ``n`` events of a kind, failing fast if a
    worker or the server dies; leaving the ``with`` block sets ``stop`` and reaps
    them all; ``check_exits`` raises RunFailed unless every worker exited 0.
    """

    def __init__(self, srv: server.Server) -> None:
        self.srv = srv
        self.ctx = mp.get_context("spawn")
        self.events: Any = self.ctx.Queue()
        self.start = self.ctx.Event()
        self.stop = self.ctx.Event()
        self.procs: list[Any] = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        _reap(self.procs, self.events, 10.0)

    def spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        p = self.ctx.Process(target=target, name=name, args=args)
        p.start()
        self.procs.append(p)

    def wait(self, kind: str, n: int, timeout: float,
             progress: Callable[[], str] | None = None,
             done: Callable[[], bool] | None = None) -> list[Any]:
        return _collect(self.events, self.procs, kind, n, timeout, self.srv, progress, done)

    def measure(self, counts: Any, messages: int, timeout: float,
                who: str) -> tuple[list[Any], float, float]:
        """The measured part of a run, every worker spawned and ready: signal start,
        collect every worker's report (stopping the consumers once ``counts`` add up to
        ``messages``), sampling the server's RSS meanwhile. Returns the reports, the
        server's CPU seconds and its peak RSS in MiB. ``who`` heads the progress line
        ("consumers have 1,000 of 2,000")."""
        sampler = RssSampler(self.srv.pid)
        sampler.start()
        cpu0 = self.srv.cpu()
        self.start.set()

        def all_received() -> bool:  # then tell the consumers to stop
            if sum(counts) >= messages:
                self.stop.set()
            return self.stop.is_set()

        try:
            reports = self.wait("report", len(self.procs), timeout,
                                lambda: f"{who} {sum(counts):,} of {messages:,}",
                                all_received)
            cpu1 = self.srv.cpu()
        finally:
            rss_peak = sampler.stop()
        return reports, cpu1 - cpu0, rss_peak

    def check_exits(self) -> None:
        bad = [f"{p.name} exited {p.exitcode}" for p in self.procs if p.exitcode != 0]
        if bad:
            raise RunFailed("; ".join(bad))


def _drive(system: str, cfg: LoadConfig, endpoint: str,
           srv: server.Server) -> tuple[list[WorkerReport], float, tuple[float, float]]:
    mod: Any = zqload if system.startswith("zq") else rawload

    def spec(role: str, i: int) -> WorkerSpec:
        lo, hi = cfg.share(i) if role == "producer" else (0, 0)
        mine = (tuple(subscribed(i, cfg.consumers, cfg.queues, cfg.partition))
                if role == "consumer" and cfg.partition else ())
        return WorkerSpec(role, i, endpoint, cfg.messages, lo, hi, cfg.batch, cfg.prefetch,
                          cfg.size, cfg.window, cfg.publish_tasks, cfg.window_batches,
                          cfg.timeout, cfg.queues, mine, cfg.stamp, cfg.lanes, cfg.seed)

    with Workers(srv) as w:
        counts: Any = w.ctx.RawArray("q", cfg.consumers)
        for i in range(cfg.consumers):
            w.spawn(mod.consumer_main, f"{system}-consumer-{i}", spec("consumer", i), counts,
                    w.stop, w.events)
        w.wait("ready", cfg.consumers, 60.0 + cfg.queues / 1000,
               lambda: "consumers subscribing")
        for i in range(cfg.producers):
            w.spawn(mod.producer_main, f"{system}-producer-{i}", spec("producer", i), w.start,
                    w.events)
        w.wait("ready", cfg.producers, 60.0, lambda: "producers connecting")
        rss_ready = rss_kib(srv.pid) / 1024
        reports, server_cpu, rss_peak = w.measure(counts, cfg.messages, cfg.timeout,
                                                  "consumers have")
    w.check_exits()
    return reports, server_cpu, (rss_ready, rss_peak)


def _reap(procs: list[Any], events: Any, within: float) -> None:
    """Join the workers, draining events meanwhile: a worker whose report is still in
    the pipe cannot exit until someone reads it. Terminate those still alive after
    ``within`` seconds (a run that failed may leave a producer publishing)."""
    deadline = time.monotonic() + within
    for p in procs:
        while p.exitcode is None and time.monotonic() < deadline:
            try:
                while True:
                    events.get_nowait()
            except queue.Empty:
                pass
            p.join(0.05)
    for p in procs:
        if p.exitcode is None:
            p.terminate()
            p.join(5.0)
    events.close()


def _collect(events: Any, procs: list[Any], kind: str, n: int, timeout: float,
             srv: server.Server, progress: Callable[[], str] | None = None,
             done: Callable[[], bool] | None = None) -> list[Any]:
    """Wait for ``n`` events of ``kind`` from the workers; fail fast if one dies.

    ``done`` is polled every few milliseconds until it returns True; ``progress``
    describes the wait (on the progress line, and in the error if it times out).
    """
    with contextlib.nullcontext() if progress is None else BAR.source(progress):
        return _collect_events(events, procs, kind, n, timeout, srv, progress, done)


def _collect_events(events: Any, procs: list[Any], kind: str, n: int, timeout: float,
                    srv: server.Server, progress: Callable[[], str] | None,
                    done: Callable[[], bool] | None) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    polling = done is not None
    while len(got) < n:
        if polling and done is not None and done():
            polling = False
        left = deadline - time.monotonic()
        if left <= 0:
            extra = f" ({progress()})" if progress is not None else ""
            raise RunFailed(f"timed out after {timeout:g}s waiting for {kind} from "
                            f"{n - len(got)} worker(s){extra}")
        try:
            ev = events.get(timeout=min(left, 0.005 if polling else 0.5))
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RunFailed(f"worker(s) died: {', '.join(dead)}") from None
            if srv.proc is not None and srv.proc.poll() is not None:
                raise RunFailed(f"{srv.name} exited {srv.proc.returncode} during the run; "
                                f"stderr:\n{srv.stderr()}") from None
            continue
        if ev[0] == "error":
            raise RunFailed(f"{ev[1]} {ev[2]} failed:\n{ev[3]}")
        if ev[0] != kind:
            raise RunFailed(f"expected {kind}, got {ev[0]} from a worker")
        got.append(ev[1] if kind == "report" else ev)
    return got


def _run_async(coro: Any) -> dict[str, Any]:
    out: list[dict[str, Any]] = []

    async def main() -> None:
        out.append(await coro)

    run_loop(main())
    return out[0]


async def _broker_stats(endpoint: str) -> dict[str, Any]:
    async with Client(endpoint, name="perf-observer") as client:
        return await client.stats()


def _result(system: str, cfg: LoadConfig, reports: list[WorkerReport], server_cpu: float,
            rc: int, stats: dict[str, Any], rss: tuple[float, float] = (0.0, 0.0)) -> Result:
    producers = [r for r in reports if r.role == "producer"]
    consumers = [r for r in reports if r.role == "consumer"]
    acc = cross = 0
    for r in consumers:
        v = int.from_bytes(r.seen, "little")
        cross += (acc & v).bit_count()  # received by two consumers
        acc |= v
    duplicates = cross + sum(r.duplicates for r in consumers)
    missing = cfg.messages - acc.bit_count()
    received = sum(r.count for r in consumers)
    confirmed = sum(r.count for r in producers)
    t0 = min(r.t_first for r in producers)
    t1 = max(r.t_last for r in consumers)
    elapsed = t1 - t0
    problems: list[str] = []
    if missing:
        problems.append(f"{missing:,} message(s) never received")
    if duplicates:
        problems.append(f"{duplicates:,} duplicate deliveries")
    if received != cfg.messages:
        problems.append(f"consumers counted {received:,}, expected {cfg.messages:,}")
    if confirmed != cfg.messages:
        problems.append(f"producers saw {confirmed:,} confirmed, expected {cfg.messages:,}")
    if rc != 0:
        problems.append(f"server exited {rc} on SIGTERM, expected 0")
    stamped = stamps.summarize(consumers, t0) if cfg.stamp else {}
    if stamped and stamped["queues_served"] != cfg.queues:
        problems.append(f"{stamped['queues_served']:,} of {cfg.queues:,} queues delivered "
                        f"anything")
    slim: dict[str, Any] = {}
    if stats:
        c = stats["counters"]
        qs = stats["queues"].values()
        slim = {k: c[k] for k in ("frames_in", "frames_out", "published", "delivered",
                                  "deliver_frames", "acked", "redelivered", "errors_sent")}
        slim["avg_deliver_batch"] = round(c["avg_deliver_batch"], 1)
        slim["ready_left"] = sum(q.get("ready", 0) for q in qs)
        slim["store"] = stats.get("store", {})
        slim["in_flight_left"] = sum(q.get("in_flight", 0) for q in qs)
        slim["queues"] = len(stats["queues"])
        if "scraper" in stats:
            slim["scraper"] = stats["scraper"]
        if c["published"] != cfg.messages or c["acked"] != cfg.messages:
            problems.append(f"broker counted published={c['published']:,} "
                            f"acked={c['acked']:,}, expected {cfg.messages:,}")
        if c["errors_sent"]:
            problems.append(f"broker sent {c['errors_sent']} ERROR frame(s)")
    return Result(
        system=system, messages=cfg.messages, producers=cfg.producers,
        consumers=cfg.consumers, batch=cfg.batch, prefetch=cfg.prefetch, size=cfg.size,
        elapsed_s=elapsed, msg_per_s=cfg.messages / elapsed if elapsed > 0 else 0.0,
        received=received, duplicates=duplicates, missing=missing, confirmed=confirmed,
        server_cpu_s=round(server_cpu, 3),  # /proc counts in clock ticks (10 ms)
        producer_cpu_s=round(sum(r.cpu_s for r in producers), 3),
        consumer_cpu_s=round(sum(r.cpu_s for r in consumers), 3), server_exit=rc,
        problems=problems,
        server_stats=slim, queues=cfg.queues, server_rss_ready_mib=round(rss[0], 1),
        server_rss_peak_mib=round(rss[1], 1),
        subscribe_s=max((r.extra.get("subscribe_s", 0.0) for r in consumers), default=0.0),
        stamps=stamped)
