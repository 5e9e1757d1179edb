"""What producer and consumer processes of both systems share: bodies, clocks, reports.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the whole machine
on Linux, so times taken in different processes can be compared.
"""

from __future__ import annotations

import ctypes
import os
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any

QUEUE = "perf"
INDEX = struct.Struct(">Q")  # the first 8 bytes of every body: its index in the run
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# Messages each consumer has received so far, one slot per consumer (a RawArray: each
# consumer writes only its own slot, and readers only need an eventually exact sum).
Counts = ctypes.Array[ctypes.c_longlong]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # the name in (...) may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: fields 14, 15


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
