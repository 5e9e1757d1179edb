"""A consumer process that settles each message only when told to (fencing tests).

Usage: python tests/system/scripts/qa_consumer.py ENDPOINT QUEUE

Consumes QUEUE with prefetch 1. For each message it prints ``GOT <id> <attempt>``
once the broker knows it was started (a ``sync`` after the SDK's START),
then waits for a line on stdin: ``ack`` does ``await msg.ack(wait=True)`` and
prints ``ACK OK`` or ``ACK <ERROR NAME>`` (e.g. ``ACK STALE_DELIVERY``); then it
goes on consuming. If the consumer fails (the broker dropped the session), it
prints ``CONSUME <ERROR NAME>`` and keeps going once the client has a session
again. End of stdin ends the process.
"""

from __future__ import annotations

import asyncio
import sys

import zq


def say(line: str) -> None:
    print(line, flush=True)


async def main(endpoint: str, queue: str) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with zq.Client(endpoint, name="qa-consumer-a") as client, \
            client.consume(queue, prefetch=1) as consumer:
        while True:
            try:
                msg = await consumer.get()
            except zq.ZqError as exc:
                say(f"CONSUME {exc.name}")
                await client.wait_connected(timeout=10)
                continue
            except StopAsyncIteration:
                return
            await client.sync()  # its START is in: a stall from now on costs the attempt
            say(f"GOT {msg.id} {msg.attempt}")
            line = (await stdin.readline()).decode().strip()
            if not line:
                return  # stdin closed
            if line == "ack":
                try:
                    await msg.ack(wait=True)
                except zq.ZqError as exc:
                    say(f"ACK {exc.name}")
                else:
                    say("ACK OK")
            else:
                say(f"UNKNOWN COMMAND {line!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
