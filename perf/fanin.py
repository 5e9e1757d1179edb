"""``python -m perf fanin``: many producers (1,000 by default) on one broker.

A few OS processes (4 by default) each run many producer connections (250 each):
for zq, one ``zq.Client`` per producer; each producer publishes its own messages
with ``publish()``, one at a time (it awaits each confirm before the next), so
about one message per producer is in flight. One consumer process (prefetch 1000,
one ack per message) drains the queue, checking every index exactly once.

Phases and figures:

1. Every process starts and says ready; the harness then signals *connect* and
   every process opens all its connections at once. **Connection setup** is from
   that signal to each producer's session being open (``Client.connect()``
   returned: HELLO answered by WELCOME): the time until all are connected, and the
   median producer. The broker's CPU and RSS are read before and after.
2. The harness signals *start*. **msg/s** = messages / (last ack - first publish),
   as in ``throughput``; the broker's CPU over this phase and its peak RSS
   (sampled every 20 ms) are reported.

The baseline does the same through the relay of :mod:`perf.relay` (workers in
:mod:`perf.rawfanin`): per producer one DEALER socket (one ``zmq.Context`` per
process: pyzmq needs no more), connection setup is a ``[P]`` ping answered by the
relay, and each producer sends ``[M, seq, body]`` and waits for the consumer's
ack through the relay before the next. Note the one difference in the client
processes: the zq SDK makes one ``zmq.Context`` (with its I/O thread) per
``Client``, so a zq producer process runs 250 contexts.

The file-descriptor limit (RLIMIT_NOFILE) is raised to its hard limit if it is
below what the broker and the producer processes need.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import statistics
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zq
from perf import harness, rawload, server, zqload
from perf.common import (
    QUEUE,
    Events,
    WorkerReport,
    WorkerSpec,
    cpu_seconds,
    make_bodies,
    rss_kib,
    run_async_worker,
)
from perf.config import RELAY_IO, RELAY_MODES, STORAGES, LoadConfig
from perf.progress import BAR
from perf.report import machine, scenario_header

SYSTEMS = ("zq", "baseline")
DEFAULT_CLIENTS = 1000
DEFAULT_PROCESSES = 4
DEFAULT_PER_CLIENT = 100
QUICK_PER_CLIENT = 10
CONNECT_TIMEOUT = 120.0  # seconds for every producer to connect
FDS_PER_CLIENT = 8  # a zq Client: its socket, its context's epoll and signalers, ...


@dataclass(frozen=True, slots=True)
class FaninConfig:
    clients: int = DEFAULT_CLIENTS  # producers, in all
    processes: int = DEFAULT_PROCESSES  # OS processes the producers are spread over
    per_client: int = DEFAULT_PER_CLIENT  # messages each producer publishes
    size: int = 100
    consumers: int = 1
    prefetch: int = 1000
    storage: str = "memory"
    relay_mode: str = "poll"
    relay_io: str = "multipart"
    timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("clients", "processes", "per_client", "consumers", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.processes > self.clients:
            raise ValueError("more processes than producers")
        if self.size < 8:
            raise ValueError("size must be >= 8 bytes (a body carries its 8-byte index)")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")
        if self.relay_mode not in RELAY_MODES or self.relay_io not in RELAY_IO:
            raise ValueError("unknown relay mode or relay I/O")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")

    @property
    def messages(self) -> int:
        return self.clients * self.per_client

    def share(self, process: int) -> tuple[int, int]:
        """The producers ``[first, first + n)`` that ``process`` runs."""
        base, extra = divmod(self.clients, self.processes)
        first = process * base + min(process, extra)
        return first, base + (1 if process < extra else 0)

    def load(self) -> LoadConfig:
        """The equivalent throughput shape, for the harness's checks and report."""
        return LoadConfig(messages=self.messages, producers=self.processes,
                          consumers=self.consumers, batch=1, prefetch=self.prefetch,
                          size=self.size, window=1, tasks=1, timeout=self.timeout,
                          relay_mode=self.relay_mode, relay_io=self.relay_io,
                          storage=self.storage)

    def describe(self) -> str:
        return (f"{self.clients:,} producers in {self.processes} processes, each publishing "
                f"{self.per_client:,} messages of {self.size} B one publish() at a time "
                f"({self.messages:,} in all) to one queue; {self.consumers} consumer(s), "
                f"prefetch {self.prefetch:,}; zq storage {self.storage}")


@dataclass(frozen=True, slots=True)
class FaninSpec:
    """What one producer process needs (picklable)."""

    role: str
    index: int
    endpoint: str
    first: int  # its first producer's number
    clients: int
    per_client: int
    size: int
    timeout: float


@dataclass(slots=True)
class FaninResult:
    system: str
    clients: int
    processes: int
    per_client: int
    load: harness.Result  # msg/s, CPU, exactly-once checks (as in throughput)
    connect_all_s: float  # connect signal -> the last producer connected
    connect_median_s: float  # connect signal -> the median producer connected
    connect_p90_s: float
    server_cpu_connect_s: float
    server_rss_idle_mib: float  # before any producer connected
    server_rss_connected_mib: float  # every producer connected, before publishing
    sessions: int  # zq: sessions the broker counted once all were connected
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.load.ok


# ------------------------------------------------------------------ zq workers


def producer_main(spec: FaninSpec, go: Event, start: Event, events: Events[Any]) -> None:
    run_async_worker(spec, events, lambda out: _produce(spec, go, start, events, out))  # type: ignore[arg-type]


async def _produce(spec: FaninSpec, go: Event, start: Event, events: Events[Any],
                   out: list[WorkerReport]) -> None:
    m = spec.per_client
    bodies = [make_bodies(c * m, (c + 1) * m, spec.size)
              for c in range(spec.first, spec.first + spec.clients)]
    events.put(("ready", spec.role, spec.index))
    if not await asyncio.to_thread(go.wait, spec.timeout):
        raise TimeoutError("no connect signal")
    clients = [zq.Client(spec.endpoint, name=f"perf-fanin-{spec.first + k}",
                         connect_timeout=CONNECT_TIMEOUT) for k in range(spec.clients)]
    connected = [0.0] * spec.clients
    confirmed = 0

    async def connect(k: int) -> None:
        await clients[k].connect()
        connected[k] = time.monotonic()

    async def publish(k: int) -> None:
        nonlocal confirmed
        client = clients[k]
        for body in bodies[k]:
            await client.publish(QUEUE, body)
            confirmed += 1

    try:
        async with asyncio.TaskGroup() as tg:
            for k in range(spec.clients):
                tg.create_task(connect(k))
        events.put(("connected", spec.role, spec.index, connected))
        if not await asyncio.to_thread(start.wait, spec.timeout):
            raise TimeoutError("no start signal")
        cpu0 = cpu_seconds()
        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for k in range(spec.clients):
                tg.create_task(publish(k))
        t1 = time.monotonic()
        cpu1 = cpu_seconds()
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    out.append(WorkerReport(spec.role, spec.index, count=confirmed, t_first=t0, t_last=t1,
                            cpu_s=cpu1 - cpu0))


# --------------------------------------------------------------------- harness


def raise_fd_limit(needed: int) -> str:
    """Raise RLIMIT_NOFILE (inherited by the broker and workers) towards ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            return (f"the file-descriptor limit is {new} (hard), below the {needed} this run "
                    f"may need")
    return ""


def run(system: str, cfg: FaninConfig, log_dir: Path) -> FaninResult:
    from perf import rawfanin

    problems: list[str] = []
    per_process = max(cfg.share(i)[1] for i in range(cfg.processes))
    warn = raise_fd_limit(max(cfg.clients + 1024, per_process * FDS_PER_CLIENT + 1024))
    if warn:
        problems.append(warn)
    if system == "zq":
        data = log_dir / f"zq-data-{uuid.uuid4().hex[:8]}"
        srv = server.zq_broker(log_dir / "zq-broker.log", cfg.storage, data)
        cons_mod: Any = zqload
        prod_main: Any = producer_main
    elif system == "baseline":
        srv = server.relay(log_dir / "relay.log", cfg.relay_mode, cfg.relay_io)
        cons_mod = rawload
        prod_main = rawfanin.producer_main
    else:
        raise ValueError(f"system must be one of {SYSTEMS}")
    lcfg = cfg.load()
    n = cfg.messages
    with srv, BAR.scope(f"fanin {system}"):
        endpoint = srv.start()
        time.sleep(0.1)
        rss_idle = rss_kib(srv.pid) / 1024
        with harness.Workers(srv) as w:
            counts: Any = w.ctx.RawArray("q", cfg.consumers)
            go = w.ctx.Event()
            for i in range(cfg.consumers):
                spec = WorkerSpec("consumer", i, endpoint, n, prefetch=cfg.prefetch,
                                  size=cfg.size, timeout=cfg.timeout)
                w.spawn(cons_mod.consumer_main, f"{system}-fanin-consumer-{i}", spec, counts,
                        w.stop, w.events)
            w.wait("ready", cfg.consumers, 60.0, lambda: "consumer subscribing")
            for i in range(cfg.processes):
                first, k = cfg.share(i)
                fspec = FaninSpec("producer", i, endpoint, first, k, cfg.per_client, cfg.size,
                                  cfg.timeout)
                w.spawn(prod_main, f"{system}-fanin-producers-{i}", fspec, go, w.start,
                        w.events)
            w.wait("ready", cfg.processes, 60.0, lambda: "producer processes starting")
            cpu_c0 = srv.cpu()
            t_go = time.monotonic()
            go.set()
            conns = w.wait("connected", cfg.processes, CONNECT_TIMEOUT,
                           lambda: f"{cfg.clients:,} producers connecting")
            cpu_c1 = srv.cpu()
            rss_conn = rss_kib(srv.pid) / 1024
            sessions = 0
            if system == "zq":
                st = harness._run_async(harness._broker_stats(endpoint))
                sessions = sum(1 for p in st["peers"].values()
                               if p["name"].startswith("perf-fanin-"))
                if sessions != cfg.clients:
                    problems.append(f"the broker had {sessions:,} producer sessions, "
                                    f"expected {cfg.clients:,}")
            reports, server_cpu, rss_peak = w.measure(counts, n, cfg.timeout, "consumer has")
        w.check_exits()
        stats = harness._run_async(harness._broker_stats(endpoint)) if system == "zq" else {}
        rc = srv.stop()
    load = harness._result(system, lcfg, reports, server_cpu, rc, stats, (rss_conn, rss_peak))
    waits = sorted(t - t_go for ev in conns for t in ev[3])
    return FaninResult(
        system=system, clients=cfg.clients, processes=cfg.processes,
        per_client=cfg.per_client, load=load, connect_all_s=waits[-1],
        connect_median_s=statistics.median(waits),
        connect_p90_s=waits[min(len(waits) - 1, int(len(waits) * 0.9))],
        server_cpu_connect_s=round(cpu_c1 - cpu_c0, 3),
        server_rss_idle_mib=round(rss_idle, 1), server_rss_connected_mib=round(rss_conn, 1),
        sessions=sessions, problems=problems)


# ---------------------------------------------------------------------- report


def header(cfg: FaninConfig) -> str:
    return scenario_header("fanin", cfg)


def table(results: dict[str, FaninResult]) -> str:
    cols = ["system", "msg/s", "server CPU", "server us/msg", "connect all",
            "connect p50 / p90", "server RSS idle / connected / peak", "delivery"]
    rows = [cols]
    for r in results.values():
        ld = r.load
        problems = r.problems + ld.problems
        rows.append([
            r.system, f"{ld.msg_per_s:,.0f}", f"{ld.server_cpu_s:.2f} s",
            f"{ld.server_cpu_s / ld.messages * 1e6:.1f}", f"{r.connect_all_s:.3f} s",
            f"{r.connect_median_s:.3f} / {r.connect_p90_s:.3f} s",
            f"{r.server_rss_idle_mib:.1f} / {r.server_rss_connected_mib:.1f} / "
            f"{ld.server_rss_peak_mib:.1f} MiB",
            "exactly once" if not problems else "FAILED: " + "; ".join(problems)])
    zq_r, base = results.get("zq"), results.get("baseline")
    if zq_r is not None and base is not None and base.load.msg_per_s > 0:
        rows.append(["zq/baseline", f"{zq_r.load.msg_per_s / base.load.msg_per_s:.1%}",
                     "", "", "", "", "", ""])
    widths = [max(len(row[c]) for row in rows) for c in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) if 0 < c < 6 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    for r in results.values():
        extra = f", {r.sessions:,} sessions open at the broker" if r.system == "zq" else ""
        lines.append(f"{r.system}: connecting {r.clients:,} producers took "
                     f"{r.server_cpu_connect_s:.2f} s of server CPU{extra}; client CPU "
                     f"{r.load.client_cpu_s:.2f} s while publishing")
    return "\n".join(lines)


def json_lines(cfg: FaninConfig, results: dict[str, FaninResult]) -> list[str]:
    out = []
    zq_r, base = results.get("zq"), results.get("baseline")
    for r in results.values():
        d: dict[str, Any] = dataclasses.asdict(r)
        d.update(scenario="fanin", ok=r.ok, msg_per_s=r.load.msg_per_s,
                 messages=cfg.messages, config=dataclasses.asdict(cfg), machine=machine())
        if r.system == "zq" and zq_r is not None and base is not None and base.load.msg_per_s:
            d["ratio_to_baseline"] = zq_r.load.msg_per_s / base.load.msg_per_s
        out.append(json.dumps(d, sort_keys=True))
    return out
