"""Tasks for workflows (issue 17, acceptance 4): each records its runs, and sleeps a
little so that a worker can be killed while some run."""

from __future__ import annotations

import asyncio
import os

import zq
from tests.system.apps._record import append

app = zq.App(name="canvas-app")


@app.task(name="add", queue="canvas")
async def add(x: int, y: int) -> int:
    append("canvas.jsonl", {"pid": os.getpid(), "task": "add", "args": [x, y]})
    await asyncio.sleep(0.2)
    return x + y


@app.task(name="mul", queue="canvas")
async def mul(x: int, y: int) -> int:
    append("canvas.jsonl", {"pid": os.getpid(), "task": "mul", "args": [x, y]})
    await asyncio.sleep(0.2)
    return x * y


@app.task(name="total", queue="canvas.join")
async def total(xs: list[int], plus: int = 0) -> int:
    append("canvas.jsonl", {"pid": os.getpid(), "task": "total", "args": [xs, plus]})
    return sum(xs) + plus
