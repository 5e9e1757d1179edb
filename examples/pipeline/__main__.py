"""An event pipeline on zq: ingest -> enrich -> a stream read by two consumer groups.

    python -m examples.pipeline setup            # declare the stream (kept 7 days)
    python -m examples.pipeline enrich           # raw orders in, enriched ones appended
    python -m examples.pipeline billing          # group "billing": what comes from now on
    python -m examples.pipeline ingest -n 20     # 20 raw orders into the work queue
    python -m examples.pipeline audit            # group "audit": everything, from the start

``ingest`` publishes raw orders to the work queue ``orders.raw``. ``enrich`` takes each
once (a queue: two enrich processes share the work), adds its tax and total, appends
the result to the stream ``orders`` and acks the raw order once the stream has it: a
crash in between appends it again (at least once; the raw order's id goes along, so
readers can tell). Two consumer groups read the stream, each getting every order:
``billing`` from the moment it first joined ("next"), ``audit`` from the first order
the stream holds ("first"); ``audit --replay`` moves its group back to the start and
reads everything again. ``-n`` makes a reader stop after that many orders, ``--idle``
after that many seconds without one. The endpoint is ``ZQ_ENDPOINT`` or
``tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator

import zq

RAW = "orders.raw"  # a work queue: each raw order is enriched once
STREAM = "orders"  # the enriched orders, kept for a week, read by any number of groups
TAX = {"eu": 0.20, "us": 0.08, "jp": 0.10}


async def setup(c: zq.Client, args: argparse.Namespace) -> None:
    s = await c.declare_stream(STREAM, max_age=7 * 86400)
    print(f"stream {STREAM}: {'declared' if s['created'] else 'there'}, {s['entries']} "
          f"order(s)", flush=True)


async def ingest(c: zq.Client, args: argparse.Namespace) -> None:
    rnd = random.Random(args.seed)
    orders = [{"order": i, "region": rnd.choice(sorted(TAX)),
               "amount": round(rnd.uniform(5, 500), 2)} for i in range(args.n or 10)]
    await c.publish_many(RAW, [json.dumps(o).encode() for o in orders])
    print(f"ingested {len(orders)} raw order(s)", flush=True)


async def enrich(c: zq.Client, args: argparse.Namespace) -> None:
    async for m in _take(c.consume(RAW, prefetch=50), args):
        order = json.loads(m.body)
        tax = round(order["amount"] * TAX[order["region"]], 2)
        order.update(tax=tax, total=round(order["amount"] + tax, 2), raw_id=m.id)
        await c.publish(STREAM, json.dumps(order).encode())  # confirmed: stored
        await m.ack()
        print(f"enriched order {order['order']}", flush=True)


async def billing(c: zq.Client, args: argparse.Namespace) -> None:
    async for m in _take(c.consume(STREAM, group="billing", start="next"), args):
        order = json.loads(m.body)
        print(f"billed order {order['order']}: {order['total']:.2f} (offset {m.offset})",
              flush=True)
        await m.ack()


async def audit(c: zq.Client, args: argparse.Namespace) -> None:
    if args.replay:
        with contextlib.suppress(zq.UnknownQueue):  # no group yet: it starts first anyway
            await c.reset_group(STREAM, "audit", "first")
    async for m in _take(c.consume(STREAM, group="audit", start="first"), args):
        order = json.loads(m.body)
        print(f"audit offset {m.offset}: order {order['order']} {order['region']} "
              f"{order['total']:.2f}", flush=True)
        await m.ack()


async def _take(consumer: zq.Consumer, args: argparse.Namespace) -> AsyncIterator[zq.Message]:
    """The consumer's messages until ``-n`` of them, or ``--idle`` seconds of none."""
    print("READY", flush=True)
    async with consumer:
        n = 0
        while not args.n or n < args.n:
            try:
                m = await consumer.get(args.idle)
            except TimeoutError:
                return
            yield m
            n += 1


async def main() -> None:
    p = argparse.ArgumentParser(prog="python -m examples.pipeline")
    p.add_argument("step", choices=["setup", "ingest", "enrich", "billing", "audit"])
    p.add_argument("-n", type=int, default=0, help="orders to ingest, or to read then stop")
    p.add_argument("--idle", type=float, default=None, help="stop after this many idle s")
    p.add_argument("--replay", action="store_true", help="audit: read from the start again")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    endpoint = os.environ.get("ZQ_ENDPOINT", "tcp://127.0.0.1:5555")
    async with zq.Client(endpoint, name=f"pipeline-{args.step}") as c:
        await globals()[args.step](c, args)


if __name__ == "__main__":
    asyncio.run(main())
