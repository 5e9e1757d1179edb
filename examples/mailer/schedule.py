"""Have the broker run the ``digest`` task periodically: a durable schedule.

Run it from the repository root while a broker runs::

    python -m examples.mailer.schedule --every 30s    # add (or replace) it
    python -m examples.mailer.schedule --list
    python -m examples.mailer.schedule --remove

The schedule lives in the broker, not here: this script adds it and exits, the
broker publishes a ``digest`` task message at every due time (exactly once,
however many workers run), and a worker runs it. ``zq schedule ls`` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

import zq
from examples.mailer.app import app, digest
from zq.tasks import TASK_HEADER, encode_body

NAME = "mailer-digest"


async def add_digest_schedule(client: zq.Client, *, every: str | float | None = None,
                              cron: str | None = None) -> float:
    """Add (or replace) the schedule that runs ``digest``; return its first due time."""
    # A task call is a message: msgpack {"args", "kwargs"} and the task's name.
    return await client.add_schedule(
        NAME, digest.queue, encode_body((), {}), headers={TASK_HEADER: digest.name},
        every=every, cron=cron, misfire="skip")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--every", default="30s", help="interval, like 30s, 5m or 1h")
    group.add_argument("--cron", help='five-field cron expression in UTC, like "0 7 * * *"')
    group.add_argument("--list", action="store_true", help="show the broker's schedules")
    group.add_argument("--remove", action="store_true", help=f"remove {NAME}")
    args = parser.parse_args()
    async with app:
        client = await app.client()
        if args.list:
            for s in await client.schedules():
                print(f"{s['name']}: to {s['queue']}, next due "
                      f"{datetime.fromtimestamp(s['next_due']):%H:%M:%S}, fired {s['fired']}")
            return
        if args.remove:
            removed = await client.remove_schedule(NAME)
            print(f"removed {NAME}" if removed else f"there was no schedule {NAME}")
            return
        next_due = await add_digest_schedule(client, cron=args.cron,
                                             every=None if args.cron else args.every)
        print(f"{NAME}: {digest.name} on {digest.queue}, "
              f"first at {datetime.fromtimestamp(next_due):%H:%M:%S}")


if __name__ == "__main__":
    asyncio.run(main())
