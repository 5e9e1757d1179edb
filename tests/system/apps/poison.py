"""A poison task that kills its worker process, among healthy ones (issue 10, acceptance 4)."""

from __future__ import annotations

import os
import signal

import zq
from tests.system.apps._record import append, current_message

app = zq.App(name="poison-app")


@app.task(queue="poison", max_attempts=5)
async def work(n: int, poison: bool) -> int:
    append("started.jsonl", {"n": n, "attempt": current_message().attempt, "pid": os.getpid()})
    if poison:
        os.kill(os.getpid(), signal.SIGKILL)  # at once: its START may not have left yet
    append("done.jsonl", {"n": n})
    return n
