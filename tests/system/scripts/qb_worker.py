"""A consumer process that takes one message, works on it, then acks and waits.

Usage: python tests/system/scripts/qb_worker.py ENDPOINT QUEUE WORK_SECONDS [blocking]

Prints ``GOT <id> <attempt>`` on receipt, works ``WORK_SECONDS`` with
``asyncio.sleep`` (the event loop, and so the client's heartbeats, keep running),
then acks with ``wait=True`` and prints ``ACKED <seconds held>`` or
``ACKERR <error name> <message>``. With ``blocking`` it works with ``time.sleep``
instead, which stops the loop and its heartbeats (a control for the test).
"""

from __future__ import annotations

import asyncio
import sys
import time

import zq


async def main(endpoint: str, queue: str, work: float, blocking: bool) -> int:
    loop = asyncio.get_running_loop()
    async with zq.Client(endpoint, name="qb-worker") as client, \
            client.consume(queue, prefetch=1) as consumer:
        msg = await consumer.get(timeout=15)
        await client.sync()  # its START is in: the broker knows the work began
        t0 = loop.time()
        print(f"GOT {msg.id} {msg.attempt}", flush=True)
        if blocking:
            time.sleep(work)  # noqa: ASYNC251 - on purpose: no heartbeats meanwhile
        else:
            await asyncio.sleep(work)
        try:
            await msg.ack(wait=True)
        except zq.ZqError as exc:
            print(f"ACKERR {exc.name} {exc.message}", flush=True)
            return 1
        print(f"ACKED {loop.time() - t0:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]),
                             sys.argv[4:] == ["blocking"])))
