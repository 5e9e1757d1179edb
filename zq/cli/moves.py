"""``zq queue move``: move a queue to another broker of its cluster (PROTOCOL.md 17.5)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from zq.cli.common import _echo_json, _run_client, client_options, json_option
from zq.cli.queues import queue
from zq.client import Client


@queue.command("move")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="BROKER",
              help="Id of the broker (in the cluster file) the queue goes to.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the move until it is done, or return once it is recorded.")
@click.option("--max-wait", "max_wait", type=click.FloatRange(min=0.1), default=600.0,
              show_default=True,
              metavar="SECONDS", help="How long to follow it (the move goes on after).")
@json_option
@client_options
def queue_move(name: str, to: str, wait: bool, max_wait: float, as_json: bool, endpoint: str,
               connect_timeout: float) -> None:
    """Move queue NAME, with its messages, to broker BROKER of the cluster.

    New publishes and consumers go to BROKER at once (they are answered MOVED
    here, and clients follow); ready and delayed messages are shipped in
    batches and deleted here once BROKER stored them; messages held by consumers
    finish here. A restart of either broker resumes the move. ENDPOINT may be a
    router or any broker: the move is sent to the broker that holds NAME.

    \b
    Examples:
      zq queue move jobs --to b2 --endpoint tcp://127.0.0.1:5701
      zq queue move jobs --to b2 --no-wait
    """

    async def run() -> dict[str, Any]:
        async with Client(endpoint, name="zq-queue", connect_timeout=connect_timeout) as c:
            where = await c.locate(name)
        if not where.get("exists"):
            raise click.ClickException(f"no queue named {name!r} in the cluster")
        async with Client(where["endpoint"], name="zq-queue",
                          connect_timeout=connect_timeout) as src:
            status = await src.move_queue(name, to)
            if wait:
                status = await _follow(src, name, max_wait, as_json)
        return status

    status = _run_client(run)
    if as_json:
        _echo_json(status)
        return
    if status.get("announced"):
        click.echo(f"moved {name} to {to}: {status['shipped']} message(s) shipped")
    else:
        click.echo(f"moving {name} to {to}: {status['phase']}, {status['left']} message(s) "
                   f"left on the source"
                   + (f" (last error: {status['error']})" if status.get("error") else ""))
        if wait:
            raise SystemExit(1)


async def _follow(src: Client, name: str, seconds: float, quiet: bool) -> dict[str, Any]:
    """Poll the source's status until the move is done (or ``seconds`` passed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    shown = -1.0
    while True:
        status = await src.move_status(name)
        if status.get("announced") or loop.time() >= end:
            return status
        if not quiet and loop.time() - shown >= 1.0:
            shown = loop.time()
            click.echo(f"  {status['phase']}: {status['shipped']} shipped, "
                       f"{status['left']} left", err=True)
        await asyncio.sleep(0.1)
