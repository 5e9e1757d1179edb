"""What producer and consumer processes of both systems share: bodies, clocks, reports.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine
on Linux, so times taken in different processes can be compared.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

QUEUE = "perf"
INDEX = struct.Struct(">Q")  # the first 8 bytes of every body: its index in the run
_CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.02  # seconds between RSS samples
MiB = 1024 * 1024


def queue_names(n: int) -> tuple[str, ...]:
    """The names of a run's ``n`` queues: ``perf`` alone, else ``perf.0`` .. ``perf.<n-1>``."""
    if n < 1:
        raise ValueError("a run needs at least one queue")
    return (QUEUE,) if n == 1 else tuple(f"{QUEUE}.{k}" for k in range(n))


def queue_of(first: int, batch: int, queues: int) -> int:
    """The queue (its number) a batch whose first body has index ``first`` goes to.

    Batch ``j`` of the run (indexes ``j*batch ..``) goes to queue ``j % queues``: with
    ``batch == 1``, message ``i`` to queue ``i % queues``.
    """
    return (first // batch) % queues


def subscribed(consumer: int, consumers: int, queues: int, partition: bool) -> list[int]:
    """The queue numbers one consumer takes: all of them, or every ``consumers``-th one."""
    if not partition:
        return list(range(queues))
    return list(range(consumer, queues, consumers))

# Messages each consumer has received so far, one slot per consumer (a RawArray: each
# consumer writes only its own slot, and readers only need an eventually exact sum).
Counts = ctypes.Array[ctypes.c_longlong]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # the name in (...) may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14, 15


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    """``key`` (VmRSS, VmHWM, ...) from /proc/<pid>/status in KiB; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(key.encode() + b":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class RssSampler(threading.Thread):
    """Samples one process's VmRSS every ``every`` seconds and keeps the peak."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY) -> None:
        super().__init__(name="perf-rss", daemon=True)
        self.pid = pid
        self.every = every
        self.peak_kib = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def sample(self) -> None:
        kib = rss_kib(self.pid)
        if kib:
            self.samples += 1
            self.peak_kib = max(self.peak_kib, kib)

    def stop(self) -> float:
        """Stop sampling; return the peak in MiB (one last sample included)."""
        self._halt.set()
        if self.is_alive():
            self.join(5.0)
        self.sample()
        return self.peak_kib / 1024


@contextlib.contextmanager
def sampling(pid: int) -> Iterator[RssSampler]:
    s = RssSampler(pid)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def make_bodies(lo: int, hi: int, size: int) -> list[bytes]:
    pad = b"x" * (size - INDEX.size)
    pack = INDEX.pack
    return [pack(i) + pad for i in range(lo, hi)]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process needs to know (picklable: it crosses ``spawn``)."""

    role: str  # "producer" or "consumer"
    index: int
    endpoint: str
    messages: int  # in the whole run
    lo: int = 0  # producers: indexes [lo, hi) to publish
    hi: int = 0
    batch: int = 1
    prefetch: int = 1
    size: int = 8
    window: int = 1
    tasks: int = 1
    window_batches: int = 1
    timeout: float = 300.0
    queues: int = 1  # the run's queues (see queue_names); batch j goes to queue j % queues
    subscribe: tuple[int, ...] = ()  # consumers: the queue numbers to consume (empty: all)
    stamp: bool = False  # bodies carry their send time (perf.hist.HEAD); consumers record
    # publish->deliver and each queue's first delivery
    lanes: str = "plain"  # zq producers: plain, priority or tenant (perf.config.LANES)
    seed: int = 1  # lanes == "priority": seeds the batches' random priorities


@dataclass(slots=True)
class WorkerReport:
    """What a worker sends back when it is done."""

    role: str
    index: int
    count: int = 0  # producers: messages confirmed; consumers: messages received and acked
    duplicates: int = 0  # consumers: received more than once by this consumer
    t_first: float = 0.0  # producers: just before the first publish
    t_last: float = 0.0  # producers: last confirm; consumers: last ack
    cpu_s: float = 0.0  # CPU seconds during the run
    seen: bytes = b""  # consumers: one byte per message index, 1 if received
    extra: dict[str, Any] = field(default_factory=dict)


# Worker -> harness: ("ready", role, index), ("report", WorkerReport), ("error", role, index, text)
Events = Queue


def run_worker(spec: WorkerSpec, events: Events[Any], body: Callable[[], WorkerReport]) -> None:
    """Run ``body`` and send its report, or the traceback if it failed."""
    try:
        report = body()
    except BaseException:
        events.put(("error", spec.role, spec.index, traceback.format_exc()))
        raise SystemExit(1) from None
    events.put(("report", report))


def run_async_worker(spec: WorkerSpec, events: Events[Any],
                     main: Callable[[list[WorkerReport]], Coroutine[Any, Any, None]]) -> None:
    """Run the coroutine ``main(out)`` on a fresh event loop and send the report it
    leaves in ``out`` (or the traceback, as :func:`run_worker` does)."""
    from zq.broker import run_loop  # the broker's loop choice (uvloop when installed)

    def body() -> WorkerReport:
        out: list[WorkerReport] = []
        run_loop(main(out))
        return out[0]

    run_worker(spec, events, body)
