"""``zq dlq``: show dead letters with their history, move them back to work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from zq.cli.common import (
    _body,
    _clean,
    _echo_json,
    _peek,
    _when,
    _with_client,
    client_options,
    json_option,
)
from zq.client import Client
from zq.errors import UnknownQueue
from zq.settings import MAX_COUNT


def _epoch(value: str | None, option: str) -> float | None:
    """Epoch seconds, or an ISO 8601 date and time (local time unless it has an offset)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"expected epoch seconds or an ISO date, got {value!r}",
                                 param_hint=option) from None


@click.group()
def dlq() -> None:
    """Inspect dead letters and move them back to work.

    A message dies after its queue's max attempts, on a nack without requeue,
    when its TTL runs out, or when an overflow rule drops it. It then waits in
    the dead-letter queue (by default QUEUE.dlq) with its attempt history.

    \b
    Examples:
      zq dlq ls jobs.dlq
      zq dlq redrive jobs.dlq
      zq dlq redrive jobs.dlq --match "time limit" --limit 100
    """


@dlq.command("ls")
@click.argument("dlq_name", metavar="DLQ")
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Most dead letters to show.")
@json_option
@client_options
def dlq_ls(dlq_name: str, limit: int, as_json: bool, endpoint: str,
           connect_timeout: float) -> None:
    """Show the first dead letters of DLQ: origin, reason, attempt history, body.

    A task's body (header zq-task) is shown as its call, name and arguments.

    \b
    Examples:
      zq dlq ls jobs.dlq
      zq dlq ls jobs.dlq --limit 100 --json | jq '.[].headers["zq-reason"]'
    """
    msgs = _peek(dlq_name, limit, endpoint, connect_timeout, missing_ok=True)
    if as_json:
        _echo_json(msgs)
        return
    if not msgs:
        click.echo(f"no dead letters in {dlq_name}")
    for m in msgs:
        h = m.get("headers") or {}
        click.echo(f"id {m['id']}  from {h.get('zq-origin', '?')}  died "
                   f"{_when(h.get('zq-dead-at'))}  reason: {_clean(h.get('zq-reason', '?'))}")
        for e in h.get("zq-history") or []:
            if isinstance(e, dict):
                click.echo(_attempt_line(e))
        click.echo(f"  body: {_body(m)}")


def _attempt_line(e: dict[str, Any]) -> str:
    took = ""
    if isinstance(e.get("start"), int | float) and isinstance(e.get("end"), int | float):
        took = f" after {e['end'] - e['start']:.3f}s"
    by = f" by {_clean(e['consumer'])}" if e.get("consumer") else ""
    why = f": {_clean(e['reason'])}" if e.get("reason") else ""
    return (f"  attempt {e.get('attempt', '?')} {e.get('outcome', '?')}{by} at "
            f"{_when(e.get('end'))}{took}{why}")


async def _info(client: Client, name: str) -> dict[str, Any]:
    """Queue ``name``'s info; ``{}`` if it does not exist, as a DLQ before anything died."""
    try:
        return await client.queue_info(name)
    except UnknownQueue:
        return {}


def _waiting(info: dict[str, Any]) -> int:
    """Messages in a queue that a redrive could move: ready (in memory or on disk), delayed."""
    st = info.get("stats") or {}
    return int(st.get("ready", 0)) + int(st.get("delayed", 0))


@dlq.command("redrive")
@click.argument("dlq_name", metavar="DLQ")
@click.option("--to", "to", default=None, metavar="QUEUE",
              help="Move them here. [default: the queue each died in]")
@click.option("--match", default=None, metavar="TEXT",
              help="Only dead letters whose reason contains TEXT.")
@click.option("--since", default=None, metavar="TIME",
              help="Only those that died at or after this time (epoch seconds or ISO 8601).")
@click.option("--until", default=None, metavar="TIME",
              help="Only those that died at or before this time (epoch seconds or ISO 8601).")
@click.option("--limit", "-n", type=click.IntRange(0, MAX_COUNT), default=0, show_default=True,
              help="Most to move; 0 = all.")
@client_options
def dlq_redrive(dlq_name: str, to: str | None, match: str | None, since: str | None,
                until: str | None, limit: int, endpoint: str, connect_timeout: float) -> None:
    """Move dead letters from DLQ back to work; their attempts start over.

    They keep their attempt history. A DLQ that is empty, or that does not
    exist because nothing has died yet, has nothing to redrive (exit 0).

    \b
    Examples:
      zq dlq redrive jobs.dlq
      zq dlq redrive jobs.dlq --to jobs-retry --match "time limit"
      zq dlq redrive jobs.dlq --since 2024-05-01T00:00 --limit 100
    """
    t0, t1 = _epoch(since, "--since"), _epoch(until, "--until")

    async def redrive(client: Client) -> tuple[int, int] | None:
        if not _waiting(await _info(client, dlq_name)):
            return None
        moved = await client.redrive(dlq_name, to=to, match=match, since=t0, until=t1,
                                     limit=limit)
        left = (await _info(client, dlq_name)).get("stats", {}).get("on_disk", 0)
        return moved, int(left)

    result = _with_client(endpoint, "zq-dlq", redrive, timeout=connect_timeout)
    if result is None:
        click.echo(f"nothing to redrive: no dead letters in {dlq_name}")
        return
    moved, left = result
    click.echo(f"moved {moved} message(s) from {dlq_name}")
    if not moved:
        click.echo("nothing matched: only dead letters (with a zq-origin header) move "
                   "back by themselves; give --to for other messages", err=True)
    if left:
        click.echo(f"{left} more wait on disk (they did not page in or did not match); "
                   "run it again to retry", err=True)


