"""``python -m perf uplink``: an edge broker's uplink against a direct publish to the centre.

One run, on loopback:

1. The centre: ``zq broker --storage sqlite`` (``--fsync full``, or ``normal``) behind
   ``zq router`` (:class:`perf.cluster.RouterCluster`).
2. The edge: another sqlite broker with its own data folder (same ``--fsync``) and
   ``--uplink <router> --uplink-queues up.#``; the run waits for its uplink to be up.
3. ``rounds`` times, the two measurements in turn (every other round in reverse order):

   * direct: one producer (``zq.Client`` to the router, in this process) publishes N
     bodies to the fresh queue ``direct.<round>`` with ``publish_many`` in batches from
     ``window / batch`` concurrent tasks; first publish to last confirm.
   * uplink: queue ``up.<round>`` is declared and paused at the edge (a paused queue is
     not forwarded), the same N bodies published there (not timed), the edge must report
     them all waiting; then the queue is resumed and the centre broker's count of
     ``up.<round>`` read every ``POLL`` seconds: resume to N stored at the centre. The
     edge's uplink must then drain to nothing (every confirm in: also timed) and the
     centre must still hold exactly N (none twice).
   * with ``e2e``, also: N published to ``up.e2e.<round>`` at the edge with the link up,
     first publish to N stored at the centre.

   Each round's queues are deleted at the centre afterwards, so every round starts on
   the same store.

A backlog larger than the edge's window (``ZQ_BROKER_WINDOW``, 20,000 ready messages per
queue by default) is partly on disk there and paged in as the uplink forwards it: that is
part of what is measured, as it is after a link was down. The edge, the centre, the
router and this process share the machine's CPUs, as no real edge does.
With ``profile``, py-spy records the edge during each uplink drain (see :class:`_Profiler`).

Rates are N / seconds; the ratio is uplink / direct of the same round; the verdict is the
median ratio against :data:`TARGET` (issue 14). CPU seconds of every process are read
from /proc around each measurement: a process near one CPU second per second is the
bottleneck. Logs, and ``uplink.json`` with everything, are left in the run's folder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zq
from perf import server
from perf.backlog import run_async
from perf.cluster import RouterCluster
from perf.common import INDEX, cpu_seconds, make_bodies
from perf.config import DEFAULT_WINDOW
from perf.progress import BAR
from perf.report import machine, scenario_header

DEFAULT_MESSAGES = 50_000
QUICK_MESSAGES = 5_000
DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 2
TARGET = 0.70  # issue 14: uplink throughput >= 70 % of a direct publish to the centre
POLL = 0.010  # seconds between reads of the centre's count: the uplink's end is this late
PATTERN = "up.#"  # the edge's --uplink-queues
UP_TIMEOUT = 15.0  # seconds for the edge's uplink to come up


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    messages: int = DEFAULT_MESSAGES
    rounds: int = DEFAULT_ROUNDS
    size: int = 100
    batch: int = 100  # bodies per publish_many
    window: int = DEFAULT_WINDOW  # the producers' publish_window (tasks: window / batch)
    fsync: str = "full"  # both brokers' --fsync
    e2e: bool = False  # also publish at the edge with the link up, to N at the centre
    timeout: float = 300.0  # seconds one measurement may take
    profile: bool = False  # py-spy on the edge during each uplink drain (slows it down)

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "batch", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.size < INDEX.size:
            raise ValueError(f"size must be >= {INDEX.size} bytes (a body carries its index)")
        if self.fsync not in ("full", "normal"):
            raise ValueError("fsync must be full or normal")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        if self.profile and py_spy() is None:
            raise ValueError("profile needs py-spy (pip install py-spy) next to python or "
                             "on PATH")

    @property
    def tasks(self) -> int:
        return max(1, self.window // self.batch)

    @property
    def storage(self) -> str:
        return "sqlite" if self.fsync == "full" else "sqlite-normal"

    def describe(self) -> str:
        return (f"{self.rounds} round(s) of {self.messages:,} x {self.size:,} B: direct (one "
                f"producer through zq router to a sqlite broker, publish_many batches of "
                f"{self.batch:,} from {self.tasks} task(s), window {self.window:,}) against "
                f"the uplink of an edge sqlite broker (--uplink-queues {PATTERN}: a paused "
                f"backlog resumed, to all stored at the centre)"
                f"{', and end to end' if self.e2e else ''}; --fsync {self.fsync} on both")


@dataclass(slots=True)
class Measure:
    """One timed measurement and the CPU seconds each process spent meanwhile."""

    kind: str  # direct, uplink, e2e
    queue: str
    seconds: float
    per_s: float
    cpu_s: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Round:
    number: int
    order: list[str]
    direct: Measure
    uplink: Measure
    e2e: Measure | None = None

    @property
    def ratio(self) -> float:
        return self.uplink.per_s / self.direct.per_s if self.direct.per_s else 0.0


@dataclass(slots=True)
class UplinkResult:
    rounds: list[Round]
    problems: list[str] = field(default_factory=list)
    exits: dict[str, int | None] = field(default_factory=dict)
    edge_uplink: dict[str, Any] = field(default_factory=dict)  # its STATS "uplink" at the end
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    folder: str = ""
    profiles: list[str] = field(default_factory=list)  # py-spy files (with profile)

    @property
    def ok(self) -> bool:
        return not self.problems

    def median(self, what: str) -> float:
        if what == "ratio":
            xs = [r.ratio for r in self.rounds]
        else:
            xs = [m.per_s for r in self.rounds
                  if (m := getattr(r, what)) is not None]
        return statistics.median(xs) if xs else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.rounds) and self.median("ratio") >= TARGET


class Failed(RuntimeError):
    """A measurement did not reach its end, or its counts were wrong."""


# ------------------------------------------------------------------ clients


async def _publish(client: zq.Client, queue: str, batches: list[list[bytes]],
                   tasks: int) -> int:
    """Publish every batch to ``queue`` from ``tasks`` concurrent tasks; confirmed ids."""
    it = iter(batches)
    confirmed = 0

    async def work() -> None:
        nonlocal confirmed
        for chunk in it:
            ids = await client.publish_many(queue, chunk)
            confirmed += len(ids)

    async with asyncio.TaskGroup() as tg:
        for _ in range(tasks):
            tg.create_task(work())
    return confirmed


async def _count(client: zq.Client, queue: str) -> int:
    """Messages of ``queue`` stored (ready) on ``client``'s broker; 0 if it has none."""
    try:
        info = await client.queue_info(queue)
    except zq.UnknownQueue:
        return 0
    return int(info["stats"]["ready"])


async def _uplink_stats(edge: zq.Client) -> dict[str, Any]:
    stats = await edge.stats()
    up: dict[str, Any] = stats.get("uplink", {})
    return up


async def _until(check: Callable[[], Awaitable[bool]], t0: float, timeout: float,
                 what: str) -> float:
    """Poll ``check`` every POLL seconds until it is true; seconds since ``t0`` then."""
    while True:
        if await check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Failed(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(POLL)


@dataclass(slots=True)
class Ends:
    """The endpoints of a run: the router (producers), the centre broker, the edge."""

    router: str
    centre: str
    edge: str


async def _direct(ends: Ends, queue: str, batches: list[list[bytes]], n: int,
                  cfg: UplinkConfig) -> tuple[float, dict[str, Any]]:
    async with zq.Client(ends.router, name="perf-uplink-direct",
                         publish_window=cfg.window) as client, \
            zq.Client(ends.centre, name="perf-uplink-observer") as centre:
        t0 = time.monotonic()
        async with asyncio.timeout(cfg.timeout):
            confirmed = await _publish(client, queue, batches, cfg.tasks)
        seconds = time.monotonic() - t0
        stored = await _count(centre, queue)
    if confirmed != n or stored != n:
        raise Failed(f"direct {queue}: {confirmed:,} confirmed, {stored:,} stored at the "
                     f"centre, expected {n:,}")
    return seconds, {"confirmed": confirmed, "stored": stored}


async def _uplink(ends: Ends, queue: str, batches: list[list[bytes]], n: int,
                  cfg: UplinkConfig, timed: Callable[[], None]) -> tuple[float, dict[str, Any]]:
    """The backlog preloaded at the edge (paused), then resume to N at the centre.
    ``timed`` is called just before the resume (CPU readings start there)."""
    async with zq.Client(ends.edge, name="perf-uplink-edge",
                         publish_window=cfg.window) as edge, \
            zq.Client(ends.centre, name="perf-uplink-observer") as centre:
        await edge.declare_queue(queue)
        await edge.pause_queue(queue)
        async with asyncio.timeout(cfg.timeout):
            published = await _publish(edge, queue, batches, cfg.tasks)
        before = await _uplink_stats(edge)
        early = await _count(centre, queue)
        waiting = before.get("queues", {}).get(queue, 0)
        if published != n or waiting != n or early:
            raise Failed(f"uplink {queue}: {published:,} confirmed at the edge, {waiting:,} "
                         f"waiting there, {early:,} at the centre before the resume; "
                         f"expected {n:,}, {n:,}, 0")
        timed()
        t0 = time.monotonic()
        await edge.resume_queue(queue)

        async def stored() -> bool:
            return await _count(centre, queue) >= n

        seconds = await _until(stored, t0, cfg.timeout, f"uplink {queue} at the centre")
        after: dict[str, Any] = {}

        async def drained() -> bool:
            after.update(await _uplink_stats(edge))
            return bool(after.get("backlog", -1) == 0 and after.get("in_flight", -1) == 0)

        clear_s = await _until(drained, t0, cfg.timeout, f"uplink {queue}: the edge's backlog")
        final = await _count(centre, queue)
        left = await _count(edge, queue)
    if final != n or left:
        raise Failed(f"uplink {queue}: {final:,} stored at the centre (expected {n:,}), "
                     f"{left:,} left at the edge")
    return seconds, {"edge_clear_s": round(clear_s, 4), "stored": final,
                     "frames_sent": after.get("frames_sent"),
                     "frames_resent": after.get("frames_resent"),
                     "confirmed_total": after.get("confirmed")}


async def _e2e(ends: Ends, queue: str, batches: list[list[bytes]], n: int,
               cfg: UplinkConfig) -> tuple[float, dict[str, Any]]:
    """N published at the edge with the link up: first publish to N at the centre."""
    async with zq.Client(ends.edge, name="perf-uplink-edge",
                         publish_window=cfg.window) as edge, \
            zq.Client(ends.centre, name="perf-uplink-observer") as centre:
        t0 = time.monotonic()
        published_s = 0.0

        async def produce() -> int:
            nonlocal published_s
            confirmed = await _publish(edge, queue, batches, cfg.tasks)
            published_s = time.monotonic() - t0
            return confirmed

        async def stored() -> bool:
            return await _count(centre, queue) >= n

        async with asyncio.timeout(cfg.timeout), asyncio.TaskGroup() as tg:
            pub = tg.create_task(produce())
            wait = tg.create_task(_until(stored, t0, cfg.timeout, f"e2e {queue}"))
        seconds = wait.result()
        final = await _count(centre, queue)
    if pub.result() != n or final != n:
        raise Failed(f"e2e {queue}: {pub.result():,} confirmed at the edge, {final:,} stored "
                     f"at the centre, expected {n:,}")
    return seconds, {"edge_publish_s": round(published_s, 4),
                     "edge_publish_per_s": round(n / published_s, 1) if published_s else 0.0}


async def _wait_up(edge_ep: str, timeout: float) -> dict[str, Any]:
    async with zq.Client(edge_ep, name="perf-uplink-observer") as edge:
        up: dict[str, Any] = {}

        async def is_up() -> bool:
            up.update(await _uplink_stats(edge))
            return up.get("state") == "up"

        await _until(is_up, time.monotonic(), timeout, "the edge's uplink to come up")
        return up


async def _delete(router: str, queues: list[str]) -> None:
    async with zq.Client(router, name="perf-uplink-cleanup") as client:
        for q in queues:
            await client.delete_queue(q)


async def _edge_end(edge_ep: str) -> dict[str, Any]:
    async with zq.Client(edge_ep, name="perf-uplink-observer") as edge:
        return await _uplink_stats(edge)


# --------------------------------------------------------------------- run


def py_spy() -> str | None:
    """The py-spy executable: the one next to this python (a venv's), else on PATH."""
    near = Path(sys.executable).parent / "py-spy"
    return str(near) if near.exists() else shutil.which("py-spy")


class _Profiler:
    """``py-spy record`` on one process between :meth:`start` and :meth:`stop`: speedscope
    JSON (https://www.speedscope.app), every thread, idle ones included, samples in time
    order, so the timeline shows where the loop waits and what the store's thread does
    meanwhile."""

    RATE = 250  # samples per second
    ATTACH = 0.5  # seconds given py-spy to attach before the measured part starts

    def __init__(self, pid: int, folder: Path, enabled: bool) -> None:
        self.pid = pid
        self.folder = folder
        self.enabled = enabled
        self.proc: subprocess.Popen[bytes] | None = None
        self.files: list[str] = []

    def start(self, name: str) -> None:
        exe = py_spy()
        if not self.enabled or exe is None:
            return
        out = self.folder / f"{name}.speedscope.json"
        with open(self.folder / "py-spy.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "record", "--pid", str(self.pid), "--rate", str(self.RATE), "--format",
                 "speedscope", "--threads", "--idle", "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.files.append(str(out))
        time.sleep(self.ATTACH)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(30.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Cpu:
    """CPU seconds of the run's processes (and this one, the producer) between marks."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "perf": os.getpid()}
        self.at: dict[str, float] = {}

    def mark(self) -> None:
        self.at = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def spent(self) -> dict[str, float]:
        return {k: round(cpu_seconds(p) - self.at.get(k, 0.0), 3) for k, p in self.pids.items()}


def _measure(kind: str, queue: str, n: int, cpu: _Cpu,
             coro: Coroutine[Any, Any, tuple[float, dict[str, Any]]]) -> Measure:
    """Run ``coro`` (seconds, extra) and add the CPU seconds each process spent since
    now, or since ``coro`` marked ``cpu`` again where its timed part starts."""
    cpu.mark()
    seconds, extra = run_async(coro)
    return Measure(kind, queue, round(seconds, 4), round(n / seconds, 1), cpu.spent(), extra)


def _batches(cfg: UplinkConfig) -> list[list[bytes]]:
    bodies = make_bodies(0, cfg.messages, cfg.size)
    return [bodies[i:i + cfg.batch] for i in range(0, cfg.messages, cfg.batch)]


def _edge(folder: Path, cfg: UplinkConfig, router: str) -> server.Server:
    return server.zq_broker(folder / "zq-edge.log", cfg.storage, folder / "edge-data",
                            ["--uplink", router, "--uplink-queues", PATTERN])


def run(cfg: UplinkConfig, folder: Path, say: Callable[[str], None] = print) -> UplinkResult:
    """The whole run in ``folder`` (logs, data folders, uplink.json); every process is
    stopped on the way out, whatever happens."""
    n = cfg.messages
    batches = _batches(cfg)
    res = UplinkResult([], loadavg_before=[round(x, 2) for x in os.getloadavg()],
                       folder=str(folder))
    centre = RouterCluster(folder, cfg.storage, folder / "centre-data")
    with centre:
        centre.start()
        edge = _edge(folder, cfg, centre.endpoint)
        with edge:
            edge.start()
            ends = Ends(centre.endpoint, centre.broker_endpoint, edge.endpoint)
            cpu = _Cpu({"edge": edge.pid, "centre": centre.broker.pid,
                        "router": centre.router.pid})
            prof = _Profiler(edge.pid, folder, cfg.profile)
            try:
                run_async(_wait_up(ends.edge, UP_TIMEOUT))
                for r in range(cfg.rounds):
                    with BAR.scope(f"round {r + 1}/{cfg.rounds}"):
                        res.rounds.append(_round(r, ends, batches, n, cfg, cpu, prof))
                    last = res.rounds[-1]
                    say(f"round {r + 1}: direct {last.direct.per_s:,.0f} msg/s, uplink "
                        f"{last.uplink.per_s:,.0f} msg/s, ratio {last.ratio:.1%}")
                res.edge_uplink = run_async(_edge_end(ends.edge))
            except (Failed, zq.ZqError, TimeoutError) as exc:
                res.problems.append(f"{type(exc).__name__}: {exc}")
            finally:
                prof.stop()
            res.profiles = prof.files
            res.exits["edge"] = _stop(edge, res.problems)
        res.exits["centre"] = _stop(centre, res.problems)
    res.loadavg_after = [round(x, 2) for x in os.getloadavg()]
    return res


def _stop(srv: server.Server | RouterCluster, problems: list[str]) -> int | None:
    try:
        rc = srv.stop()
    except server.ServerError as exc:
        problems.append(str(exc))
        return None
    if rc != 0:
        problems.append(f"{srv.name} exited {rc} on SIGTERM, expected 0")
    return rc


def _round(r: int, ends: Ends, batches: list[list[bytes]], n: int, cfg: UplinkConfig,
           cpu: _Cpu, prof: _Profiler) -> Round:
    order = ["direct", "uplink"] if r % 2 == 0 else ["uplink", "direct"]
    got: dict[str, Measure] = {}
    names = {"direct": f"direct.{r}", "uplink": f"up.{r}", "e2e": f"up.e2e.{r}"}
    for kind in order:
        q = names[kind]
        with BAR.scope(kind):
            if kind == "direct":
                got[kind] = _measure(kind, q, n, cpu, _direct(ends, q, batches, n, cfg))
                continue

            def begin() -> None:  # the edge's backlog is in place: the drain starts
                prof.start(f"edge-uplink-r{r + 1}")
                cpu.mark()

            try:
                got[kind] = _measure(kind, q, n, cpu, _uplink(ends, q, batches, n, cfg, begin))
            finally:
                prof.stop()
    e2e = None
    if cfg.e2e:
        q = names["e2e"]
        with BAR.scope("e2e"):
            e2e = _measure("e2e", q, n, cpu, _e2e(ends, q, batches, n, cfg))
        order.append("e2e")
    run_async(_delete(ends.router, [names[k] for k in order]))
    return Round(r + 1, order, got["direct"], got["uplink"], e2e)


# ------------------------------------------------------------------ report


def header(cfg: UplinkConfig) -> str:
    return scenario_header("uplink", cfg, relay=False)


def _rows(res: UplinkResult, e2e: bool) -> Iterator[list[str]]:
    yield ["round", "order", "direct msg/s", "uplink msg/s", "ratio",
           *(["e2e msg/s"] if e2e else []), "edge CPU/s", "centre CPU/s", "router CPU/s"]
    for r in res.rounds:
        u = r.uplink
        yield [str(r.number), ">".join(r.order), f"{r.direct.per_s:,.0f}", f"{u.per_s:,.0f}",
               f"{r.ratio:.1%}",
               *([f"{r.e2e.per_s:,.0f}" if r.e2e else "-"] if e2e else []),
               f"{u.cpu_s['edge'] / u.seconds:.2f}", f"{u.cpu_s['centre'] / u.seconds:.2f}",
               f"{u.cpu_s['router'] / u.seconds:.2f}"]
    if res.rounds:
        yield ["median", "", f"{res.median('direct'):,.0f}", f"{res.median('uplink'):,.0f}",
               f"{res.median('ratio'):.1%}",
               *([f"{res.median('e2e'):,.0f}"] if e2e else []), "", "", ""]


def table(res: UplinkResult, e2e: bool = False) -> str:
    rows = list(_rows(res, e2e))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if c >= 2 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append("(CPU/s: CPU seconds per second of the uplink drain; 1.00 is one core)")
    if res.rounds:
        verdict = "PASS" if res.passed else "FAIL"
        lines.append(f"{verdict}: median uplink/direct {res.median('ratio'):.1%} "
                     f"(target >= {TARGET:.0%})")
    if res.problems:
        lines.append("FAILED: " + "; ".join(res.problems))
    lines.append(f"load average {' '.join(map(str, res.loadavg_before))} before, "
                 f"{' '.join(map(str, res.loadavg_after))} after; logs and uplink.json in "
                 f"{res.folder}")
    return "\n".join(lines)


def json_line(cfg: UplinkConfig, res: UplinkResult) -> str:
    d: dict[str, Any] = dataclasses.asdict(res)
    for r, rd in zip(res.rounds, d["rounds"], strict=True):
        rd["ratio"] = round(r.ratio, 4)
    d.update(scenario="uplink", ok=res.ok, passed=res.passed, target=TARGET,
             median_direct_per_s=res.median("direct"),
             median_uplink_per_s=res.median("uplink"),
             median_e2e_per_s=res.median("e2e") if cfg.e2e else None,
             median_ratio=round(res.median("ratio"), 4),
             config=dataclasses.asdict(cfg), machine=machine())
    return json.dumps(d, sort_keys=True)
