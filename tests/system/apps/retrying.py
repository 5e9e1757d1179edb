"""Tasks that fail (acceptance 4: retries with exponential backoff, dead tasks)."""

from __future__ import annotations

import time

import zq
from tests.system.apps._record import append, read, test_dir

app = zq.App(name="retrying-app")


class FlakyError(Exception):
    pass


@app.task(queue="retrying", max_attempts=5, retry=zq.Retry("exponential", base=0.2))
async def flaky(key: str) -> str:
    """Fail on the first two attempts for ``key``, then succeed."""
    append(f"flaky-{key}.jsonl", {"at": time.time()})
    n = len(read(test_dir() / f"flaky-{key}.jsonl"))
    if n <= 2:
        raise FlakyError(f"{key}: attempt {n} fails")
    return f"{key} done after {n} attempts"


def explode(tag: str) -> None:
    raise ValueError(f"cannot process {tag}")


@app.task(queue="retrying", max_attempts=2, retry=zq.Retry("fixed", base=0.05))
def doomed(tag: str) -> None:
    """Always fails (a plain function: it runs in the worker's thread pool)."""
    append(f"doomed-{tag}.jsonl", {"at": time.time()})
    explode(tag)
