"""A consumer of a stream in a group (issue 17, streams), as its own process.

Usage: python -m tests.system.apps.stream_reader ENDPOINT STREAM GROUP START PREFETCH MODE
MODE ``ack``: acks each message; ``slow``: the same, pausing a millisecond every ten
messages; ``hold``: takes messages and never settles them (a consumer stuck on its
work, to be killed). Each message taken is recorded in
``$ZQ_TEST_DIR/<GROUP>-<pid>.jsonl`` as {"offset", "body", "attempt"}. Prints
``READING`` once its consumer is started.
"""

from __future__ import annotations

import asyncio
import os
import sys

import zq
from tests.system.apps._record import append


async def main(endpoint: str, stream: str, group: str, start: str, prefetch: int,
               mode: str) -> None:
    out = f"{group}-{os.getpid()}.jsonl"
    async with zq.Client(endpoint, name=f"reader-{group}") as client, client.consume(
            stream, group=group, start=start, prefetch=prefetch) as consumer:
        print("READING", flush=True)
        n = 0
        async for msg in consumer:
            append(out, {"offset": msg.offset, "body": msg.body.decode(),
                         "attempt": msg.attempt})
            if mode == "hold":
                continue
            await msg.ack()
            n += 1
            if mode == "slow" and n % 10 == 0:
                await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                     sys.argv[6]))
