"""One throughput run: a server process, consumer and producer processes, one result.

Order of a run: start the server and read its ready line; spawn the consumers
(subscribed, credit granted) and the producers (connected, bodies built); read
the server's CPU time; signal start; collect every worker's report; read the
server's CPU time again; (zq) ask the broker for its counters; SIGTERM the
server and expect exit 0.

The rate is ``messages / (last ack anywhere - first publish anywhere)``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf import rawload, server, zqload
from perf.common import QUEUE, WorkerReport, WorkerSpec
from perf.config import LoadConfig
from zq import Client
from zq.broker import run_loop

SYSTEMS = ("zq", "baseline")


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

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def client_cpu_s(self) -> float:
        return round(self.producer_cpu_s + self.consumer_cpu_s, 3)


def run(system: str, cfg: LoadConfig, log_dir: Path) -> Result:
    if system == "zq":
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"  # a fresh store for every run
        srv = server.zq_broker(log_dir / "zq-broker.log", cfg.storage, data)
    elif system == "baseline":
        srv = server.relay(log_dir / "relay.log", cfg.relay_mode, cfg.relay_io)
    else:
        raise ValueError(f"system must be one of {SYSTEMS}")
    with srv:
        endpoint = srv.start()
        reports, server_cpu = _drive(system, cfg, endpoint, srv)
        stats = _run_async(_broker_stats(endpoint)) if system == "zq" else {}
        rc = srv.stop()
    return _result(system, cfg, reports, server_cpu, rc, stats)


def _drive(system: str, cfg: LoadConfig, endpoint: str,
           srv: server.Server) -> tuple[list[WorkerReport], float]:
    mod: Any = zqload if system == "zq" else rawload
    ctx = mp.get_context("spawn")
    events: Any = ctx.Queue()
    start = ctx.Event()
    stop = ctx.Event()
    counts = ctx.RawArray("q", cfg.consumers)
    procs: list[Any] = []

    def spec(role: str, i: int) -> WorkerSpec:
        lo, hi = cfg.share(i) if role == "producer" else (0, 0)
        return WorkerSpec(role, i, endpoint, cfg.messages, lo, hi, cfg.batch, cfg.prefetch,
                          cfg.size, cfg.window, cfg.publish_tasks, cfg.window_batches,
                          cfg.timeout)

    try:
        for i in range(cfg.consumers):
            p = ctx.Process(target=mod.consumer_main, name=f"{system}-consumer-{i}",
                            args=(spec("consumer", i), counts, stop, events))
            p.start()
            procs.append(p)
        _collect(events, procs, "ready", cfg.consumers, 60.0, srv)
        for i in range(cfg.producers):
            p = ctx.Process(target=mod.producer_main, name=f"{system}-producer-{i}",
                            args=(spec("producer", i), start, events))
            p.start()
            procs.append(p)
        _collect(events, procs, "ready", cfg.producers, 60.0, srv)
        cpu0 = srv.cpu()
        start.set()

        def all_received() -> bool:  # then tell the consumers to stop
            if sum(counts) >= cfg.messages:
                stop.set()
            return stop.is_set()

        reports = _collect(events, procs, "report", len(procs), cfg.timeout, srv,
                           lambda: f"consumers have {sum(counts):,} of {cfg.messages:,}",
                           all_received)
        cpu1 = srv.cpu()
    finally:
        stop.set()
        _reap(procs, events, 10.0)
    bad = [f"{p.name} exited {p.exitcode}" for p in procs if p.exitcode != 0]
    if bad:
        raise RunFailed("; ".join(bad))
    return reports, cpu1 - cpu0


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

    ``done`` is polled every few milliseconds until it returns True.
    """
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
            rc: int, stats: dict[str, Any]) -> Result:
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
    slim: dict[str, Any] = {}
    if stats:
        c = stats["counters"]
        q = stats["queues"].get(QUEUE, {})
        slim = {k: c[k] for k in ("frames_in", "frames_out", "published", "delivered",
                                  "deliver_frames", "acked", "redelivered", "errors_sent")}
        slim["avg_deliver_batch"] = round(c["avg_deliver_batch"], 1)
        slim["ready_left"] = q.get("ready", 0)
        slim["store"] = stats.get("store", {})
        slim["in_flight_left"] = q.get("in_flight", 0)
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
        server_stats=slim)
