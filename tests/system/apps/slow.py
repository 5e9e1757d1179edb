"""A task that blocks until the test releases it (acceptance 2: drain on SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import time

import zq
from tests.system.apps._record import append, test_dir

app = zq.App(name="slow-app")


@app.task(queue="slow")
async def hold(i: int) -> int:
    """Note that call ``i`` started, wait for the file ``release``, return ``i``."""
    append("started.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    release = test_dir() / "release"
    while not release.exists():  # noqa: ASYNC110 - the test creates it
        await asyncio.sleep(0.01)
    append("finished.jsonl", {"i": i, "pid": os.getpid(), "at": time.time()})
    return i
