"""The task a schedule fires (acceptance 5): it records its due time and worker."""

from __future__ import annotations

import os
import time

import zq
from tests.system.apps._record import append, current_message

app = zq.App(name="ticks-app")


@app.task(name="tick", queue="ticks")
async def tick() -> float:
    msg = current_message()
    due = float(msg.headers["zq-due"])
    append("ticks.jsonl", {"due": due, "schedule": msg.headers.get("zq-schedule"),
                           "id": msg.id, "attempt": msg.attempt, "pid": os.getpid(),
                           "at": time.time()})
    return due
