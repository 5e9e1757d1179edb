"""``zq node``: one process per host that runs an App's ``zq worker`` processes, restarts
them, and scales them between ``--min`` and ``--max`` by a scaling policy
(``zq.policies.scaling``) over the broker's figures for the node's queues.

The decisions are ``zq.node.supervise``'s; this is the asyncio shell: it spawns the
workers (each beats on a pipe of its own from its event loop, ``zq.node.launch``),
watches their exits and beats, asks the broker for its queues' figures every
interval, and carries out what the supervisor says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from zq import policies
from zq.client import Client
from zq.client.client import default_endpoint
from zq.errors import UnknownQueue, ZqError
from zq.node.launch import NODE_BEAT_FD, load_app
from zq.node.supervise import Kill, Scaler, Slot, Start, Stop, Supervisor
from zq.policies.scaling import NodeFigures, QueueFigures

log = logging.getLogger("zq.node")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    app: str  # MODULE:ATTR
    queues: tuple[str, ...] = ()  # (): every queue of the App
    min: int = 1
    max: int = 4
    concurrency: int = 8  # tasks one worker runs at once
    policy: str = "backlog"
    interval: float = 1.0  # seconds between scaling decisions
    cooldown: float = 30.0  # seconds the policy must want fewer before a worker goes
    drain_timeout: float = 30.0  # a worker's: running tasks may finish for this long
    endpoint: str = ""  # "": the App's
    name: str = ""  # "": node-<host>-<pid>

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max or self.max < 1:
            raise ValueError(f"need 0 <= --min <= --max and --max >= 1, got {self.min}, "
                             f"{self.max}")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be >= 1")
        for name in ("interval", "cooldown", "drain_timeout"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0 or (name == "interval" and v < 0.05):
                raise ValueError(f"{name} must be a finite number of seconds"
                                 f"{' >= 0.05' if name == 'interval' else ''}")
        policies.check("scaling", self.policy)
        if not self.name:
            object.__setattr__(self, "name", f"node-{platform.node() or 'host'}-{os.getpid()}")


class Node:
    """The node's loop (see the module docstring)."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        if os.getcwd() not in sys.path:  # as zq worker does: the App beside us
            sys.path.insert(0, os.getcwd())
        app = load_app(cfg.app)
        self.endpoint = cfg.endpoint or app.endpoint or default_endpoint()
        self.queues = list(cfg.queues) or app.queues()
        unknown = [q for q in self.queues if q not in app.queues()]
        if unknown:
            raise ValueError(f"no task of {cfg.app} uses queue(s) {', '.join(unknown)}")
        self.scaler = Scaler(policies.load("scaling", cfg.policy), cfg.min, cfg.max,
                             cfg.cooldown)
        self.sup = Supervisor(drain_timeout=cfg.drain_timeout)
        self.sup.target = cfg.min
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds at the last look
        self._looked = time.monotonic()
        self.figures: list[QueueFigures] = []
        self._last_own = NodeFigures(0, cfg.min, cfg.max, cfg.concurrency)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        async with Client(self.endpoint, name=f"zq-node {self.cfg.name}") as client:
            watch = asyncio.create_task(self._watch(client), name="zq node figures")
            try:
                await self._supervise(on_ready)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        await self._drain()

    # ------------------------------------------------------------ the workers

    async def _supervise(self, on_ready: Callable[[str], None] | None) -> None:
        announced = False
        while not self._stop.is_set():
            self._wake.clear()  # (before acting: what happens meanwhile wakes the next turn)
            now = time.monotonic()
            for action in self.sup.actions(now):
                await self._do(action, now)
            if not announced and sum(s.ready for s in self.sup.active()) >= self.cfg.min:
                announced = True
                log.info("node %s ready: %d worker(s) of %s on %s", self.cfg.name,
                         len(self.sup.active()), self.cfg.app, ", ".join(self.queues))
                if on_ready is not None:
                    on_ready(self.cfg.name)
            delay = max(0.0, self.sup.next_deadline(now) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _do(self, action: Start | Stop | Kill, now: float) -> None:
        slot = action.slot
        if isinstance(action, Start):
            await self._spawn(slot, now)
            return
        proc = self._procs.get(slot.n)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if isinstance(action, Kill) else signal.SIGTERM)

    async def _spawn(self, slot: Slot, now: float) -> None:
        cfg = self.cfg
        r, w = os.pipe()
        # A single-file binary (sys.frozen) is zq itself, not a Python that runs -m zq.
        zq = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "zq"]
        argv = [*zq, "worker", cfg.app, "--endpoint", self.endpoint,
                "--concurrency", str(cfg.concurrency), "--drain-timeout", f"{cfg.drain_timeout:g}"]
        for q in self.queues:
            argv += ["--queue", q]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(w,),
                env={**os.environ, NODE_BEAT_FD: str(w)})
        except OSError as exc:
            os.close(r)
            log.error("cannot start worker %d: %s", slot.n, exc)
            self.sup.exited(slot, 127, now)
            return
        finally:
            os.close(w)
        self._procs[slot.n] = proc
        self.sup.started(slot, proc.pid, now)
        log.info("worker %d started (pid %d)", slot.n, proc.pid)
        loop = asyncio.get_running_loop()
        loop.add_reader(r, self._beats, slot, r, proc.pid)
        task = asyncio.create_task(self._reap(slot, proc), name=f"zq node worker {slot.n}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _beats(self, slot: Slot, r: int, pid: int) -> None:
        try:
            got = os.read(r, 4096)
        except OSError:
            got = b""
        if not got:  # the worker is gone (its end of the pipe closed)
            asyncio.get_running_loop().remove_reader(r)
            os.close(r)
            return
        if slot.pid == pid:
            was = slot.ready
            self.sup.beat(slot, time.monotonic())
            if not was:
                self._wake.set()

    async def _reap(self, slot: Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._procs.get(slot.n) is proc:
            del self._procs[slot.n]
        self._cpu.pop(proc.pid, None)
        if slot.pid == proc.pid:
            self.sup.exited(slot, code, time.monotonic())
        self._wake.set()

    async def _drain(self) -> None:
        """SIGTERM every worker; wait for them (their drain, and a margin); kill the rest."""
        self.sup.stopping = True
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        procs = list(self._procs.values())
        if procs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in procs],
                timeout=self.cfg.drain_timeout + 5)
            for p in procs:
                if p.returncode is None:
                    log.error("worker pid %d did not stop in time: killing it", p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        log.info("node %s stopped (%d restart(s))", self.cfg.name, self.sup.restarts)

    # ------------------------------------------------------------ the figures

    async def _watch(self, client: Client) -> None:
        """Every interval: the broker's figures and the node's, the policy's decision."""
        last = ""
        while True:
            try:
                self.figures = [await _figures(client, q) for q in self.queues]
            except ZqError as exc:
                log.warning("no figures from the broker: %s", exc)
            else:
                before = self.scaler.target
                target = self.scaler.tick(time.monotonic(), self.figures, self._own())
                self.sup.target = target
                reason = self.scaler.decision.reason
                if target != before or (target != len(self.sup.active()) and reason != last):
                    log.info("scaling: %s", reason)
                    last = reason
                    self._wake.set()
                await self._report(client)
            await asyncio.sleep(self.cfg.interval)

    async def _report(self, client: Client) -> None:
        """Tell the broker who this node is and what it runs (zq nodes, zq stats)."""
        cfg, sup, own = self.cfg, self.sup, self._last_own
        workers = [{"n": s.n, "pid": s.pid, "state": s.state, "exits": s.exits[-3:]}
                   for s in sup.slots]
        try:
            await client._manage("node", {
                "name": cfg.name, "host": platform.node(), "pid": os.getpid(),
                "app": cfg.app, "queue": self.queues[0] if self.queues else "",
                "queues": self.queues, "workers": workers, "target": sup.target,
                "min": cfg.min, "max": cfg.max, "policy": cfg.policy,
                "decision": self.scaler.decision.reason, "restarts": sup.restarts,
                "cpu_percent": own.cpu_percent, "rss_mb": own.rss_mb, "load1": own.load1,
                "interval": cfg.interval})
        except ZqError as exc:
            log.warning("could not report this node to the broker: %s", exc)

    def _own(self) -> NodeFigures:
        now = time.monotonic()
        elapsed, self._looked = max(1e-3, now - self._looked), now
        cpu = rss = 0.0
        for proc in list(self._procs.values()):
            used, kib = _usage(proc.pid)
            cpu += max(0.0, used - self._cpu.get(proc.pid, used))
            self._cpu[proc.pid] = used
            rss += kib / 1024
        cfg = self.cfg
        self._last_own = NodeFigures(len(self.sup.active()), cfg.min, cfg.max,
                                     cfg.concurrency, cpu_percent=round(100 * cpu / elapsed, 1),
                                     rss_mb=round(rss, 1), load1=os.getloadavg()[0])
        return self._last_own


async def _figures(client: Client, queue: str) -> QueueFigures:
    try:
        st = (await client.queue_info(queue))["stats"]
    except UnknownQueue:
        return QueueFigures(queue)
    rates = st.get("rates", {})
    return QueueFigures(queue, st["ready"], st["delayed"], st["in_flight"], st["consumers"],
                        rates.get("publish", 0.0), rates.get("ack", 0.0), st["oldest_age"])


def _usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS KiB) of process ``pid`` from /proc; zeros where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0
    return cpu, rss
