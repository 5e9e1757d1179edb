"""A broadcast task (issue 17, acceptance 2): every running worker records each call."""

from __future__ import annotations

import os

import zq
from tests.system.apps._record import append

app = zq.App(name="broadcast-app")


@app.task(name="reload_config", broadcast=True)
async def reload_config(n: int) -> None:
    append("broadcast.jsonl", {"pid": os.getpid(), "n": n})


@app.task(name="plain_job", queue="plain")
async def plain_job(n: int) -> None:
    append("plain.jsonl", {"pid": os.getpid(), "n": n})
