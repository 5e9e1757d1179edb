"""``python -m perf streams``: a stream's appends, its groups' reads, and publish→deliver
latency through it at a fixed rate (issue 17).

Each round, on loopback, on fresh ``zq broker --storage sqlite`` brokers (``--fsync
full``, or ``normal``) and data folders:

* queue: one producer (``zq.Client`` in this process) publishes N bodies to a plain
  queue with ``publish_many`` from ``window / batch`` concurrent tasks (first publish
  to last confirm), then one consumer (prefetch ``prefetch``, one ack per message)
  drains it (first to last delivery): the baselines.
* stream: the same N bodies appended to a declared stream (``append``), then read by
  one group from ``first`` (``read 1 group``), then by three new groups at once, one
  client each (``read 3 groups``: entries delivered per second, all groups together).
  Each read checks that its group got every offset once, in order.
* relay (unless left out): the bare ZeroMQ relay of ``perf throughput`` on the same N,
  batch and window (:func:`perf.harness.run` "baseline"): nothing stored or confirmed.

Then, once: publish→deliver latency at ``rate`` msg/s for ``seconds`` through a stream
read by one group (from ``next``), and through a plain queue, each on a fresh broker.
The producer publishes one message at a time on a schedule fixed in advance
(message i is due at t0 + i / rate, open loop: a late producer counts against the
broker), each body carrying its due time; the consumer, in this process, takes
``time.monotonic()`` on receipt. p50, p99, p99.9 and the maximum, in ms.
Everything goes to ``streams.json`` in the run's folder, with the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zq
from perf import harness, server
from perf.backlog import run_async
from perf.config import DEFAULT_WINDOW, LoadConfig
from perf.progress import BAR
from perf.report import footer, machine, scenario_header

DEFAULT_MESSAGES = 100_000
QUICK_MESSAGES = 10_000
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
STREAM, QUEUE = "events", "plain"
STAMP = struct.Struct("<qq")  # index, due time (monotonic ns)
STOP_WITHIN = 120.0
LABELS = ("queue publish", "queue drain", "append", "read 1 group", "read 3 groups", "relay")


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    messages: int = DEFAULT_MESSAGES
    rounds: int = DEFAULT_ROUNDS
    size: int = 100
    batch: int = 100
    window: int = DEFAULT_WINDOW
    prefetch: int = 1000
    rate: int = 1000  # latency: messages per second
    seconds: float = 10.0  # latency: how long
    fsync: str = "full"
    relay: bool = True
    timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "batch", "window", "prefetch", "rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.size < STAMP.size:
            raise ValueError(f"size must be >= {STAMP.size} bytes")
        if self.fsync not in ("full", "normal"):
            raise ValueError("fsync must be full or normal")
        if self.seconds <= 0 or self.timeout <= 0:
            raise ValueError("seconds and timeout must be > 0")

    @property
    def storage(self) -> str:
        return "sqlite" if self.fsync == "full" else "sqlite-normal"

    def describe(self) -> str:
        return (f"{self.rounds} round(s) of {self.messages:,} x {self.size:,} B: publish_many "
                f"batches of {self.batch:,} (window {self.window:,}) to a queue and to a "
                f"stream, then read (prefetch {self.prefetch:,}) by one and by three groups; "
                f"latency at {self.rate:,} msg/s for {self.seconds:g} s; sqlite brokers "
                f"(--fsync {self.fsync})")


@dataclass(slots=True)
class StreamsResult:
    rounds: list[dict[str, float]] = field(default_factory=list)  # label -> msg/s
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> ms
    problems: list[str] = field(default_factory=list)
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    folder: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def median(self, label: str) -> float | None:
        xs = [r[label] for r in self.rounds if label in r]
        return statistics.median(xs) if xs else None

    def median_ratio(self, label: str, to: str) -> float | None:
        xs = [r[label] / r[to] for r in self.rounds if label in r and r.get(to)]
        return statistics.median(xs) if xs else None


class Failed(RuntimeError):
    """A measurement did not reach its end, or a group missed or repeated an entry."""


def _bodies(n: int, size: int) -> list[bytes]:
    pad = b"x" * (size - STAMP.size)
    return [STAMP.pack(i, 0) + pad for i in range(n)]


async def _fan(client: zq.Client, target: str, bodies: list[bytes], cfg: StreamsConfig
               ) -> float:
    """Publish every body from window / batch tasks; seconds to the last confirm."""
    it = iter(range(0, len(bodies), cfg.batch))
    confirmed = 0

    async def work() -> None:
        nonlocal confirmed
        for i in it:
            ids = await client.publish_many(target, bodies[i:i + cfg.batch])
            confirmed += len(ids)

    t0 = time.monotonic()
    async with asyncio.timeout(cfg.timeout), asyncio.TaskGroup() as tg:
        for _ in range(max(1, cfg.window // cfg.batch)):
            tg.create_task(work())
    if confirmed != len(bodies):
        raise Failed(f"{target}: {confirmed:,} of {len(bodies):,} confirmed")
    return time.monotonic() - t0


async def _drain(endpoint: str, target: str, n: int, cfg: StreamsConfig,
                 group: str | None = None) -> float:
    """Read n messages (a group from "first"), acking each; seconds from the first to
    the last delivery. A group's offsets must come once each, in order."""
    last = 0
    t0 = 0.0
    async with zq.Client(endpoint, name=f"perf-read-{group or 'q'}") as c, \
            asyncio.timeout(cfg.timeout), \
            c.consume(target, prefetch=cfg.prefetch, group=group,
                      start="first" if group else None) as consumer:
        for k in range(n):
            m = await consumer.get()
            if not k:
                t0 = time.monotonic()
            if group is not None:
                if m.id <= last:
                    raise Failed(f"group {group}: offset {m.id} after {last}")
                last = m.id
            await m.ack()
    return time.monotonic() - t0


async def _throughput(endpoint: str, bodies: list[bytes], cfg: StreamsConfig
                      ) -> dict[str, float]:
    n = len(bodies)
    out: dict[str, float] = {}
    async with zq.Client(endpoint, name="perf-streams", publish_window=cfg.window) as c:
        await c.declare_queue(QUEUE)
        await c.declare_stream(STREAM)
        out["queue publish"] = n / await _fan(c, QUEUE, bodies, cfg)
        out["queue drain"] = n / await _drain(endpoint, QUEUE, n, cfg)
        out["append"] = n / await _fan(c, STREAM, bodies, cfg)
        out["read 1 group"] = n / await _drain(endpoint, STREAM, n, cfg, "g1")
        t0 = time.monotonic()
        await asyncio.gather(*(_drain(endpoint, STREAM, n, cfg, f"g3-{j}") for j in range(3)))
        out["read 3 groups"] = 3 * n / (time.monotonic() - t0)
    return out


async def _latency(endpoint: str, target: str, stream: bool, cfg: StreamsConfig
                   ) -> dict[str, float]:
    """Open-loop publish→deliver latency (ms) at cfg.rate through ``target``."""
    n = int(cfg.rate * cfg.seconds)
    pad = b"x" * (cfg.size - STAMP.size)
    lat: list[float] = []
    async with zq.Client(endpoint, name="perf-latency") as c:
        if stream:
            await c.declare_stream(target)
        consumer = c.consume(target, prefetch=cfg.prefetch,
                             group="lat" if stream else None, start="next" if stream else None)
        async with consumer:

            async def take() -> None:
                for _ in range(n):
                    m = await consumer.get()
                    lat.append(time.monotonic_ns() - STAMP.unpack_from(m.body)[1])
                    await m.ack()

            reader = asyncio.create_task(take())
            if stream:  # its start is "next": the group must be there first
                await _joined(c, target)
            t0 = time.monotonic_ns() + 10_000_000
            sends = []
            for i in range(n):
                due = t0 + i * 1_000_000_000 // cfg.rate
                wait = (due - time.monotonic_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
                sends.append(asyncio.ensure_future(c.publish(target, STAMP.pack(i, due) + pad)))
            async with asyncio.timeout(cfg.timeout):
                await asyncio.gather(*sends)
                await reader
    lat.sort()
    ms = [x / 1e6 for x in lat]
    return {"p50": ms[len(ms) // 2], "p99": ms[int(len(ms) * 0.99)],
            "p99.9": ms[int(len(ms) * 0.999)], "max": ms[-1], "n": float(len(ms))}


async def _joined(c: zq.Client, stream: str) -> None:
    """Return once a consumer reads ``stream`` in a group (polled)."""
    for _ in range(1000):
        if any(g["consumers"] for g in (await c.stream(stream))["groups"]):
            return
        await asyncio.sleep(0.01)
    raise Failed(f"no group of {stream} got its consumer")


@contextlib.contextmanager
def _fresh(folder: Path, cfg: StreamsConfig, name: str) -> Iterator[server.Server]:
    """A broker on a new data folder, stopped (SIGTERM, exit 0) and removed after."""
    data = folder / f"data-{name}"
    shutil.rmtree(data, ignore_errors=True)
    try:
        with server.zq_broker(folder / f"zq-broker-{name}.log", cfg.storage, data) as srv:
            srv.start()
            yield srv
            rc = srv.stop(STOP_WITHIN)
            if rc != 0:
                raise Failed(f"{srv.name} exited {rc} on SIGTERM, expected 0")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _relay(cfg: StreamsConfig, folder: Path) -> float:
    lc = LoadConfig(messages=cfg.messages, batch=cfg.batch, size=cfg.size,
                    window=cfg.window, timeout=cfg.timeout)
    res = harness.run("baseline", lc, folder)
    if not res.ok:
        raise Failed("relay: " + "; ".join(res.problems))
    return float(res.msg_per_s)


def run(cfg: StreamsConfig, folder: Path, say: Callable[[str], None] = print
        ) -> StreamsResult:
    bodies = _bodies(cfg.messages, cfg.size)
    res = StreamsResult(loadavg_before=[round(x, 2) for x in os.getloadavg()],
                        folder=str(folder))
    try:
        for r in range(cfg.rounds):
            got: dict[str, float] = {}
            with BAR.scope(f"round {r + 1}/{cfg.rounds}"):
                if cfg.relay and r % 2:
                    got["relay"] = _relay(cfg, folder)
                with _fresh(folder, cfg, f"r{r + 1}") as srv:
                    got.update(run_async(_throughput(srv.endpoint, bodies, cfg)))
                if cfg.relay and not r % 2:
                    got["relay"] = _relay(cfg, folder)
            res.rounds.append({k: round(v, 1) for k, v in got.items()})
            say(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in got.items()))
        for target, stream in (("stream", True), ("queue", False)):
            with BAR.scope(f"latency {target}"), _fresh(folder, cfg, f"lat-{target}") as srv:
                res.latency[target] = {k: round(v, 3) for k, v in run_async(
                    _latency(srv.endpoint, f"lat-{target}", stream, cfg)).items()}
    except (Failed, zq.ZqError, TimeoutError, server.ServerError, harness.RunFailed,
            OSError) as exc:
        res.problems.append(f"{type(exc).__name__}: {exc}")
    res.loadavg_after = [round(x, 2) for x in os.getloadavg()]
    return res


def header(cfg: StreamsConfig) -> str:
    return scenario_header("streams", cfg, relay=False)


def _rows(res: StreamsResult) -> Iterator[str]:
    yield f"{'measurement':<16}{'msg/s':>12}{'vs relay':>10}{'vs queue':>10}"
    for label in LABELS:
        v = res.median(label)
        if v is None:
            continue
        base = {"append": "queue publish", "read 1 group": "queue drain"}.get(label)
        rel = res.median_ratio(label, "relay")
        vq = res.median_ratio(label, base) if base else None
        yield (f"{label:<16}{v:>12,.0f}{'-' if rel is None else f'{rel:.1%}':>10}"
               f"{'-' if vq is None else f'{vq:.1%}':>10}")
    for target, d in res.latency.items():
        yield (f"latency {target}: p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms, p99.9 "
               f"{d['p99.9']:.2f} ms, max {d['max']:.2f} ms ({d['n']:,.0f} messages)")


def table(res: StreamsResult, cfg: StreamsConfig) -> str:
    lines = list(_rows(res))
    lines.append(f"(medians of {len(res.rounds)} round(s); append vs queue publish, read 1 "
                 f"group vs queue drain; latency open loop at {cfg.rate:,} msg/s, durable)")
    lines += footer(res.problems, res.loadavg_before, res.loadavg_after, res.folder,
                    "streams.json")
    return "\n".join(lines)


def json_line(cfg: StreamsConfig, res: StreamsResult) -> str:
    d: dict[str, Any] = dataclasses.asdict(res)
    d.update(scenario="streams", ok=res.ok, config=dataclasses.asdict(cfg), machine=machine(),
             medians={label: res.median(label) for label in LABELS})
    return json.dumps(d, sort_keys=True)
