"""Tasks for ``zq node`` tests: one that takes 50 ms, one that takes as long as it is
told, one that blocks its worker's event loop, and a switch that makes the worker
processes of a node crash at start."""

from __future__ import annotations

import asyncio
import os
import time

import zq
from tests.system.apps._record import append, read, test_dir

# While the file $ZQ_TEST_DIR/crash-at-start exists, a worker process started by
# `zq node` (it has the node's heartbeat pipe, ZQ_NODE_BEAT_FD) dies importing this
# module, before its first heartbeat; the node itself, and a plain `zq worker`, do not.
CRASH_FILE = "crash-at-start"
if os.environ.get("ZQ_NODE_BEAT_FD") and os.environ.get("ZQ_TEST_DIR") \
        and (test_dir() / CRASH_FILE).exists():
    raise RuntimeError(f"nodework: {CRASH_FILE} is there: crashing at start")

app = zq.App(name="node-app")


@app.task(queue="work")
async def work(i: int) -> int:
    """Record that call ``i`` ran (and in which worker), taking 50 ms."""
    await asyncio.sleep(0.05)
    append("ran.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    return i


@app.task(queue="work")
async def nap(i: int, seconds: float) -> int:
    """Record that call ``i`` started (started.jsonl), take ``seconds``, then record that
    it ran (ran.jsonl), as ``work`` does."""
    append("started.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    await asyncio.sleep(seconds)
    append("ran.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    return i


@app.task(queue="work")
async def hang(i: int, after: float, block: float) -> int:
    """Record that call ``i`` started; ``after`` seconds later (awaited: the worker's loop
    and its heartbeats go on) block the worker's event loop for ``block`` seconds, the
    first time call ``i`` runs only (blocked.jsonl); then record that it ran."""
    first = i not in {r["i"] for r in read(test_dir() / "started.jsonl")}
    append("started.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    await asyncio.sleep(after)
    if first:
        append("blocked.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
        time.sleep(block)  # noqa: ASYNC251 - a task that blocks its loop, as careless ones do
    append("ran.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    return i
