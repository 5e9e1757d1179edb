"""Queue welcome mails for new sign-ups and wait until each is sent (or dead).

Run it from the repository root while a broker and a worker run::

    python -m examples.mailer.producer            # 10 sign-ups and a bad address
    python -m examples.mailer.producer --users 100

Each mail is rendered by one task and sent by another; the producer waits for
the results. One address (``ghost@invalid.example``) does not exist: its send
fails on every attempt and ends dead, which ``result()`` reports as
``zq.TaskFailed`` with the worker's traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import zq
from examples.mailer import sender
from examples.mailer.app import app, render, send

NAMES = ["ann", "bob", "cho", "dee", "eli", "fay", "gus", "hal", "ivy", "jon"]


def signups(n: int) -> list[tuple[str, str]]:
    """``n`` made-up (name, address) pairs, then one address that does not exist."""
    users = [(f"{NAMES[i % len(NAMES)]}{i // len(NAMES) or ''}".capitalize(),
              f"{NAMES[i % len(NAMES)]}{i // len(NAMES) or ''}@mail.example") for i in range(n)]
    return [*users, ("Ghost", "ghost@invalid.example")]


async def welcome_all(n: int, wait: float) -> tuple[int, int]:
    """Render and send a welcome mail per sign-up; return (sent, dead)."""
    users = signups(n)
    # Each delay() is published at once; awaiting a handle waits for the broker's
    # confirm (the message is stored), gather() waits for them all.
    renders = await asyncio.gather(*(
        render.delay("welcome", email, {"name": name, "email": email})
        for name, email in users))
    print(f"queued {len(renders)} renders; the first is {(await renders[0].status())['state']}")
    mails = await asyncio.gather(*(h.result(timeout=wait) for h in renders))
    sends = await asyncio.gather(*(send.delay(m["to"], m["subject"], m["text"]) for m in mails))
    print(f"rendered them; queued {len(sends)} sends")
    sent = dead = 0
    for mail, handle in zip(mails, sends, strict=True):
        try:
            message_id = await handle.result(timeout=wait)
        except zq.TaskFailed as exc:
            dead += 1
            state = await handle.status()
            print(f"  FAILED {mail['to']}: {exc.type}: {exc.message} "
                  f"(after {state['attempt']} attempts)")
            # The worker's traceback, as text: where it failed, in the worker.
            where = [ln for ln in exc.traceback.splitlines() if ln.startswith("  File")]
            print(f"         raised at{where[-1][6:] if where else ' ?'}")
            continue
        state = await handle.status()
        sent += 1
        print(f"  sent   {mail['to']:<28} attempt {state['attempt']}  {message_id}")
    return sent, dead


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10, help="sign-ups to welcome")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each result")
    args = parser.parse_args()
    start = time.monotonic()
    async with app:
        sent, dead = await welcome_all(args.users, args.timeout)
    print(f"{sent} sent, {dead} dead in {time.monotonic() - start:.1f}s; "
          f"the outbox {sender.outbox()} holds {len(sender.sent())} mails")


if __name__ == "__main__":
    asyncio.run(main())
