"""A plain ``client.consume()`` loop that dies on its poison message (issue 10, item 4).

Usage: python -m tests.system.apps.plain_consumer ENDPOINT QUEUE PREFETCH
Records each message it takes in ``$ZQ_TEST_DIR/taken.jsonl`` and acks it, without
awaiting between messages, except the one whose body is ``poison``: then it kills
its own process at once (SIGKILL), before anything it queued can leave it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import zq
from tests.system.apps._record import append


async def main(endpoint: str, queue: str, prefetch: int) -> None:
    async with zq.Client(endpoint, name="plain") as client:
        print("CONSUMING", flush=True)
        async for msg in client.consume(queue, prefetch=prefetch):
            append("taken.jsonl", {"body": msg.body.decode(), "attempt": msg.attempt})
            if msg.body == b"poison":
                os.kill(os.getpid(), signal.SIGKILL)
            await msg.ack()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
