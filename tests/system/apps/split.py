"""A 100 ms task that says which worker process ran it (acceptance 3: even split)."""

from __future__ import annotations

import asyncio
import os

import zq

app = zq.App(name="split-app")


@app.task(queue="split")
async def whoami() -> int:
    await asyncio.sleep(0.1)
    return os.getpid()
