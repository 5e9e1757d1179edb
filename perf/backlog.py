"""``python -m perf backlog``: a deep sqlite backlog: memory, restarts, drain.

1. Start ``zq broker --storage sqlite`` on an empty data folder and time it
   from process start to its ``ZQ READY`` line (the empty-store figure).
2. Publish N messages with ``publish_many`` (no consumer), sampling the
   broker's RSS (``VmRSS`` in ``/proc/<pid>/status``) every 20 ms.
3. SIGKILL the broker that did the writing and start it again on the same
   folder; then SIGTERM that one (it must exit 0) and start it again. Each start
   is timed from process start to ``ZQ READY``, and each time the broker must
   report the whole backlog.
4. Drain the backlog with one consumer (prefetch 1000, one ack per message),
   checking every index exactly once, sampling RSS again.
5. SIGTERM the broker; it must exit 0 with nothing left.

The broker keeps at most a window of ready messages per queue in memory
(``ZQ_BROKER_WINDOW``, ``ZQ_BROKER_WINDOW_BYTES``) and pages the rest in from
disk, so its RSS should not grow with N.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zq
from perf import server
from perf.common import INDEX, QUEUE, MiB, rss_kib, sampling
from perf.report import machine, scenario_header
from zq.broker import run_loop

DEFAULT_MESSAGES = 1_000_000
QUICK_MESSAGES = 20_000
DEFAULT_SIZE = 1024
START_TIMEOUT = 120.0  # seconds a start may take before it counts as failed


@dataclass(frozen=True, slots=True)
class BacklogConfig:
    messages: int = DEFAULT_MESSAGES
    size: int = DEFAULT_SIZE
    batch: int = 1000  # bodies per publish_many
    tasks: int = 10  # concurrent publish_many calls
    prefetch: int = 1000
    fsync: str = "full"  # the sqlite broker's --fsync
    window: int = 0  # ZQ_BROKER_WINDOW for the broker (0: its default)
    window_bytes: int = 0  # ZQ_BROKER_WINDOW_BYTES (0: its default)
    timeout: float = 600.0  # seconds for publishing, and for draining
    drop_caches: bool = False  # empty the page cache before each restart (root only)

    def __post_init__(self) -> None:
        for name in ("messages", "batch", "tasks", "prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.size < INDEX.size:
            raise ValueError(f"size must be >= {INDEX.size} bytes (a body carries its index)")
        if self.fsync not in ("full", "normal"):
            raise ValueError("fsync must be full or normal")
        if self.window < 0 or self.window_bytes < 0 or self.timeout <= 0:
            raise ValueError("window and window_bytes must be >= 0, timeout > 0")

    def env(self) -> dict[str, str]:
        out = {}
        if self.window:
            out["ZQ_BROKER_WINDOW"] = str(self.window)
        if self.window_bytes:
            out["ZQ_BROKER_WINDOW_BYTES"] = str(self.window_bytes)
        return out

    def describe(self) -> str:
        w = f"{self.window:,} messages" if self.window else "the broker's default"
        wb = f"{self.window_bytes:,} B" if self.window_bytes else "the broker's default"
        return (f"{self.messages:,} messages of {self.size:,} B into zq broker --storage sqlite "
                f"--fsync {self.fsync} (window: {w}; window bytes: {wb}), no consumer; "
                f"publish_many "
                f"batches of {self.batch:,} from {self.tasks} task(s); then SIGKILL and SIGTERM "
                f"restarts{' (page cache emptied first)' if self.drop_caches else ''}, then "
                f"one consumer (prefetch {self.prefetch:,}) drains it")


@dataclass(slots=True)
class BacklogResult:
    messages: int
    size: int
    ready_empty_s: float  # process start -> ZQ READY, empty store
    publish_s: float
    publish_per_s: float
    rss_idle_mib: float  # after the empty start, before publishing
    rss_publish_peak_mib: float
    hwm_publish_mib: float  # the kernel's VmHWM of that broker process at the end
    db_mib: float  # the data folder after publishing (and SIGKILL)
    wal_mib: float  # of which the WAL, left by the SIGKILL
    ready_after_sigkill_s: float
    rss_after_sigkill_restart_mib: float
    stop_sigterm_s: float  # SIGTERM -> exit, of the broker restarted after SIGKILL
    ready_after_sigterm_s: float
    rss_after_sigterm_restart_mib: float
    drain_s: float
    drain_per_s: float
    rss_drain_peak_mib: float
    hwm_drain_mib: float
    received: int
    duplicates: int
    missing: int
    server_exit: int | None
    problems: list[str] = field(default_factory=list)
    backlog_reported: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` set (server.Server copies it into the child)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def folder_mib(path: Path, pattern: str = "*") -> float:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) / MiB


# ----------------------------------------------------------------- clients


def run_async(coro: Any) -> Any:
    out: list[Any] = []

    async def main() -> None:
        out.append(await coro)

    run_loop(main())
    return out[0]


async def publish_all(endpoint: str, cfg: BacklogConfig) -> float:
    """Publish every message (bodies made batch by batch); return the seconds it took."""
    pad = b"x" * (cfg.size - INDEX.size)
    pack = INDEX.pack
    starts = iter(range(0, cfg.messages, cfg.batch))
    async with zq.Client(endpoint, name="perf-backlog-producer") as client:

        async def work() -> None:
            for lo in starts:
                hi = min(lo + cfg.batch, cfg.messages)
                ids = await client.publish_many(QUEUE, [pack(i) + pad for i in range(lo, hi)])
                if len(ids) != hi - lo:
                    raise RuntimeError(f"{len(ids)} ids for {hi - lo} bodies")

        t0 = time.monotonic()
        async with asyncio.timeout(cfg.timeout), asyncio.TaskGroup() as tg:
            for _ in range(cfg.tasks):
                tg.create_task(work())
        return time.monotonic() - t0


async def drain_all(endpoint: str, cfg: BacklogConfig) -> tuple[float, bytearray, int, int]:
    """Consume and ack until every message arrived; (seconds, seen map, count, duplicates)."""
    n = cfg.messages
    seen = bytearray(n)
    unpack = INDEX.unpack_from
    count = dup = 0
    async with zq.Client(endpoint, name="perf-backlog-consumer") as client, \
            client.consume(QUEUE, prefetch=cfg.prefetch) as consumer:
        t0 = time.monotonic()
        async with asyncio.timeout(cfg.timeout):
            while count < n:
                try:
                    msg = await consumer.get(30.0)
                except TimeoutError:
                    break  # nothing for 30 s: report what is missing
                i = unpack(msg.body)[0]
                if seen[i]:
                    dup += 1
                else:
                    seen[i] = 1
                await msg.ack()
                count += 1
        t1 = time.monotonic()
    return t1 - t0, seen, count, dup


async def queue_stats(endpoint: str) -> dict[str, Any]:
    async with zq.Client(endpoint, name="perf-backlog-observer") as client:
        stats: dict[str, Any] = await client.stats()
        return stats


# --------------------------------------------------------------------- run


def drop_page_cache() -> None:
    """Write dirty pages out and empty the page cache (the whole machine's; needs root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def start_timed(srv: server.Server, cfg: BacklogConfig, restart: bool = True) -> float:
    """Start ``srv``; seconds from process start to its ready line."""
    if restart and cfg.drop_caches:
        drop_page_cache()
    with environment(cfg.env()):
        t0 = time.monotonic()
        srv.start(timeout=START_TIMEOUT)
        return time.monotonic() - t0


def broker(log: Path, data: Path, cfg: BacklogConfig) -> server.Server:
    return server.zq_broker(log, "sqlite" if cfg.fsync == "full" else "sqlite-normal", data)


def run(cfg: BacklogConfig, work_dir: Path, say: Any = print) -> BacklogResult:
    data = work_dir / "zq-backlog-data"
    log = work_dir / "zq-broker.log"
    n = cfg.messages
    problems: list[str] = []
    reported: dict[str, int] = {}

    def check_backlog(endpoint: str, when: str) -> None:
        q = run_async(queue_stats(endpoint))["queues"].get(QUEUE, {})
        reported[when] = q.get("ready", 0)
        if q.get("ready", 0) != n:
            problems.append(f"{when}: the broker reports {q.get('ready', 0):,} ready, "
                            f"expected {n:,}")

    # 1. empty store
    srv = broker(log, data, cfg)
    with srv:
        ready_empty = start_timed(srv, cfg, restart=False)
        endpoint = srv.endpoint
        time.sleep(0.2)
        rss_idle = rss_kib(srv.pid) / 1024
        say(f"empty store: ready in {ready_empty:.3f} s, RSS {rss_idle:.1f} MiB; "
            f"publishing {n:,} x {cfg.size:,} B ...")
        # 2. publish
        with sampling(srv.pid) as s:
            publish_s = run_async(publish_all(endpoint, cfg))
            check_backlog(endpoint, "after publishing")
        rss_pub = s.stop()
        hwm_pub = rss_kib(srv.pid, "VmHWM") / 1024
        say(f"published in {publish_s:.2f} s ({n / publish_s:,.0f} msg/s), peak RSS "
            f"{rss_pub:.1f} MiB; restarting ...")
        # 3a. SIGKILL: a crash of the broker that did the writing (no clean close)
        srv.kill()
    db_mib = folder_mib(data)
    wal_mib = folder_mib(data, "*-wal")
    srv = broker(log, data, cfg)
    with srv:
        ready_kill = start_timed(srv, cfg)
        rss_kill = rss_kib(srv.pid) / 1024
        check_backlog(srv.endpoint, "after the SIGKILL restart")
        # 3b. SIGTERM: a clean stop (it must exit 0), then start again
        t0 = time.monotonic()
        rc = srv.stop(within=120.0)
        stop_s = time.monotonic() - t0
        if rc != 0:
            problems.append(f"the broker exited {rc} on SIGTERM before draining, expected 0")
    srv = broker(log, data, cfg)
    with srv:
        ready_term = start_timed(srv, cfg)
        rss_term = rss_kib(srv.pid) / 1024
        check_backlog(srv.endpoint, "after the SIGTERM restart")
        say(f"restarts: {ready_kill:.3f} s after SIGKILL, {ready_term:.3f} s after SIGTERM; "
            f"draining ...")
        # 4. drain
        with sampling(srv.pid) as s:
            drain_s, seen, count, dup = run_async(drain_all(srv.endpoint, cfg))
        rss_drain = s.stop()
        hwm_drain = rss_kib(srv.pid, "VmHWM") / 1024
        stats = run_async(queue_stats(srv.endpoint))
        q = stats["queues"].get(QUEUE, {})
        c = stats["counters"]
        # 5. stop
        rc_end = srv.stop(within=120.0)
    missing = n - sum(seen)
    if missing:
        problems.append(f"{missing:,} message(s) never received")
    if dup:
        problems.append(f"{dup:,} duplicate deliveries")
    if q.get("ready", 0) or q.get("in_flight", 0):
        problems.append(f"the broker still holds ready={q.get('ready', 0):,} "
                        f"in_flight={q.get('in_flight', 0):,} after the drain")
    if c.get("acked") != n:
        problems.append(f"the broker counted {c.get('acked'):,} acks, expected {n:,}")
    if c.get("errors_sent"):
        problems.append(f"the broker sent {c['errors_sent']} ERROR frame(s)")
    if rc_end != 0:
        problems.append(f"the broker exited {rc_end} on SIGTERM after the drain, expected 0")
    return BacklogResult(
        messages=n, size=cfg.size, ready_empty_s=ready_empty, publish_s=publish_s,
        publish_per_s=n / publish_s, rss_idle_mib=rss_idle, rss_publish_peak_mib=rss_pub,
        hwm_publish_mib=hwm_pub, db_mib=db_mib, wal_mib=wal_mib, stop_sigterm_s=stop_s,
        ready_after_sigterm_s=ready_term, rss_after_sigterm_restart_mib=rss_term,
        ready_after_sigkill_s=ready_kill, rss_after_sigkill_restart_mib=rss_kill,
        drain_s=drain_s, drain_per_s=count / drain_s if drain_s > 0 else 0.0,
        rss_drain_peak_mib=rss_drain, hwm_drain_mib=hwm_drain, received=count,
        duplicates=dup, missing=missing, server_exit=rc_end, problems=problems,
        backlog_reported=reported)


# ------------------------------------------------------------------ report


def header(cfg: BacklogConfig) -> str:
    return scenario_header("backlog", cfg, relay=False)


def table(r: BacklogResult) -> str:
    rows = [
        ("phase", "time", "rate", "broker RSS"),
        ("start, empty store", f"{r.ready_empty_s:.3f} s to ready", "",
         f"{r.rss_idle_mib:.1f} MiB"),
        ("publish", f"{r.publish_s:.2f} s", f"{r.publish_per_s:,.0f} msg/s",
         f"peak {r.rss_publish_peak_mib:.1f} MiB (VmHWM {r.hwm_publish_mib:.1f})"),
        ("restart after SIGKILL", f"{r.ready_after_sigkill_s:.3f} s to ready", "",
         f"{r.rss_after_sigkill_restart_mib:.1f} MiB"),
        ("stop (SIGTERM)", f"{r.stop_sigterm_s:.3f} s to exit", "", ""),
        ("restart after SIGTERM", f"{r.ready_after_sigterm_s:.3f} s to ready", "",
         f"{r.rss_after_sigterm_restart_mib:.1f} MiB"),
        ("drain", f"{r.drain_s:.2f} s", f"{r.drain_per_s:,.0f} msg/s",
         f"peak {r.rss_drain_peak_mib:.1f} MiB (VmHWM {r.hwm_drain_mib:.1f})"),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) if c in (0, 3) else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    delivery = (f"exactly once ({r.received:,} of {r.messages:,})" if r.ok
                else "FAILED: " + "; ".join(r.problems))
    lines.append(f"store on disk after publishing and SIGKILL: {r.db_mib:,.1f} MiB (WAL "
                 f"{r.wal_mib:,.1f} MiB); delivery: {delivery}")
    return "\n".join(lines)


def json_line(cfg: BacklogConfig, r: BacklogResult) -> str:
    d = dataclasses.asdict(r)
    d.update(scenario="backlog", ok=r.ok, config=dataclasses.asdict(cfg), machine=machine())
    return json.dumps(d, sort_keys=True)
