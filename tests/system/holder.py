"""A consumer process that takes messages and never settles them.

Usage: python -m tests.system.holder ENDPOINT QUEUE PREFETCH
Prints ``HOLDING <n> <ids>`` each time it has received more, once the broker knows
it started them (a ``sync`` after the START the SDK sends for taken messages).
"""

from __future__ import annotations

import asyncio
import sys

import zq


async def main(endpoint: str, queue: str, prefetch: int) -> None:
    async with zq.Client(endpoint, name="holder") as client:
        held: list[int] = []
        async for msg in client.consume(queue, prefetch=prefetch):
            held.append(msg.id)
            if client.conn.consumers[queue].buffered:
                continue  # more to take in this turn
            await client.sync()
            print(f"HOLDING {len(held)} {','.join(map(str, held))}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
