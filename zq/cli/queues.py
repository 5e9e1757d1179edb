"""``zq queue`` and ``zq dlq``: declare, inspect, pause, purge, delete, redrive."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import click

from zq.cli.common import (
    _echo_json,
    _jsonable,
    _text,
    _when,
    _with_client,
    endpoint_option,
    json_option,
)
from zq.client import Client
from zq.errors import UnknownQueue
from zq.settings import MAX_COUNT


def _pairs(items: tuple[str, ...], option: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not sep or not key or n < 1:
            raise click.BadParameter(f"expected TENANT=N with N >= 1, got {item!r}",
                                     param_hint=option)
        out[key] = n
    return out


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


def _print_settings(settings: dict[str, Any]) -> None:
    for key in sorted(settings):
        v = settings[key]
        if isinstance(v, dict):
            v = ", ".join(f"{k}={n}" for k, n in sorted(v.items())) or "-"
        elif key == "dlq" and v in ("", "-"):
            v = "(default: NAME.dlq; none for a queue named *.dlq)" if v == "" else "- (drop)"
        elif v == "":
            v = '""'
        click.echo(f"  {key:<16} {v}")


@click.group()
def queue() -> None:
    """Declare, inspect, pause, purge and delete queues.

    \b
    Examples:
      zq queue declare jobs --max-attempts 3 --time-limit 60 --retry exponential
      zq queue ls
      zq queue info jobs
      zq queue peek jobs --limit 5
    """


@queue.command("declare")
@click.argument("name")
@click.option("--max-length", type=click.IntRange(min=0), default=None,
              help="Most ready and delayed messages; 0 = unbounded.")
@click.option("--overflow", default=None, metavar="reject|drop-oldest|PLUGIN",
              help="What a publish to a full queue does: be refused (QUEUE_FULL) or "
                   "dead-letter the oldest messages.")
@click.option("--ttl", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Seconds a message may wait before it expires to the DLQ; 0 = never.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Failed attempts before a message goes to the DLQ.")
@click.option("--dlq", default=None, metavar="NAME",
              help="Dead-letter queue. Default: NAME.dlq (a queue whose name ends in .dlq "
                   "has none); '-' drops dead messages.")
@click.option("--dedup-window", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="Seconds a dedup id is remembered.")
@click.option("--time-limit", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Seconds one attempt may run before it is retried; 0 = no limit.")
@click.option("--retry", default=None, metavar="fixed|exponential|PLUGIN",
              help="Backoff for retries after a nack without a delay or a time limit.")
@click.option("--retry-delay", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The backoff's base delay.")
@click.option("--retry-max-delay", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help="The backoff's longest delay.")
@click.option("--selection", default=None, metavar="weighted-fair|strict|PLUGIN",
              help="Which tenant is served next among those of one priority.")
@click.option("--weight", "weights", multiple=True, metavar="TENANT=W",
              help="A tenant's weight in the fair share (repeatable; default 1).")
@click.option("--cap", "caps", multiple=True, metavar="TENANT=N",
              help="Most messages of a tenant in flight at once (repeatable).")
@json_option
@endpoint_option
def queue_declare(name: str, weights: tuple[str, ...], caps: tuple[str, ...], as_json: bool,
                  endpoint: str, **options: Any) -> None:
    """Create queue NAME, or change the given settings of it (the others stay).

    Prints the queue's settings afterwards. Durations are in seconds.

    \b
    Examples:
      zq queue declare jobs --max-attempts 3 --time-limit 60
      zq queue declare jobs --retry exponential --retry-delay 1 --retry-max-delay 300
      zq queue declare uploads --max-length 10000 --overflow drop-oldest --ttl 3600
      zq queue declare work --weight acme=3 --weight globex=1 --cap acme=10
    """
    settings = {k: v for k, v in options.items() if v is not None}
    if weights:
        settings["weights"] = _pairs(weights, "--weight")
    if caps:
        settings["caps"] = _pairs(caps, "--cap")

    result = _with_client(endpoint, "zq-queue", lambda c: c.declare_queue(name, **settings))
    if as_json:
        _echo_json(result)
        return
    click.echo(f"queue {name}:")
    _print_settings(result)


@queue.command("info")
@click.argument("name")
@json_option
@endpoint_option
def queue_info(name: str, as_json: bool, endpoint: str) -> None:
    """Show the settings and counters of queue NAME.

    \b
    Examples:
      zq queue info jobs
      zq queue info jobs --json | jq .stats.ready
    """
    info = _with_client(endpoint, "zq-queue", lambda c: c.queue_info(name))
    if as_json:
        _echo_json(info)
        return
    st = info.get("stats", {})
    click.echo(f"queue {info.get('queue', name)}{' (paused)' if st.get('paused') else ''}, "
               f"dead letters to {info.get('dlq') or '(dropped)'}")
    click.echo(f"  ready {st.get('ready', 0)} (on disk {st.get('on_disk', 0)}), "
               f"delayed {st.get('delayed', 0)}, in flight {st.get('in_flight', 0)}, "
               f"consumers {st.get('consumers', 0)}, oldest {st.get('oldest_age', 0):.1f}s")
    click.echo(f"  published {st.get('published', 0)}, delivered {st.get('delivered', 0)}, "
               f"acked {st.get('acked', 0)}, nacked {st.get('nacked', 0)}, "
               f"dead {st.get('dead', 0)}")
    rates = st.get("rates", {})
    if rates:
        click.echo("  rates " + ", ".join(f"{k} {v}/s" for k, v in sorted(rates.items())))
    for t, ts in sorted(st.get("tenants", {}).items()):
        click.echo(f"  tenant {t}: in flight {ts.get('in_flight', 0)}, weight "
                   f"{ts.get('weight', 1)}, cap {ts.get('cap') or '-'}")
    click.echo("settings:")
    _print_settings(info.get("settings", {}))


@queue.command("ls")
@json_option
@endpoint_option
def queue_ls(as_json: bool, endpoint: str) -> None:
    """List every queue with its counters.

    \b
    Examples:
      zq queue ls
      zq queue ls --json | jq 'keys'
    """
    queues = _with_client(endpoint, "zq-queue", Client.queues)
    if as_json:
        _echo_json(queues)
        return
    click.echo(f"{'queue':<32} {'ready':>10} {'delayed':>8} {'in-flight':>10} "
               f"{'consumers':>9} {'dead':>8}  state")
    for qname, st in sorted(queues.items()):
        click.echo(f"{qname:<32} {st.get('ready', 0):>10} {st.get('delayed', 0):>8} "
                   f"{st.get('in_flight', 0):>10} {st.get('consumers', 0):>9} "
                   f"{st.get('dead', 0):>8}  {'paused' if st.get('paused') else 'active'}")


def _simple_op(verb: str, doc: str, call: Callable[[Client, str], Awaitable[Any]],
               done: Callable[[str, Any], str]) -> None:
    @queue.command(verb, help=doc)
    @click.argument("name")
    @endpoint_option
    def command(name: str, endpoint: str) -> None:
        click.echo(done(name, _with_client(endpoint, "zq-queue", lambda c: call(c, name))))


_simple_op("pause", """Stop delivering from queue NAME; publishes are still stored.

    \b
    Examples:
      zq queue pause jobs
    """, Client.pause_queue, lambda n, _: f"paused {n}")
_simple_op("resume", """Deliver from queue NAME again after a pause.

    \b
    Examples:
      zq queue resume jobs
    """, Client.resume_queue, lambda n, _: f"resumed {n}")
_simple_op("purge", """Delete the ready and delayed messages of queue NAME.

    Messages in flight stay with their consumers.

    \b
    Examples:
      zq queue purge jobs
    """, Client.purge_queue, lambda n, k: f"purged {k} message(s) from {n}")
_simple_op("delete", """Remove queue NAME, its settings and all its messages.

    Messages in flight are dropped too; their acks are refused.

    \b
    Examples:
      zq queue delete old-jobs
    """, Client.delete_queue, lambda n, k: f"deleted queue {n} and {k} message(s)")


def _peek(name: str, limit: int, endpoint: str, missing_ok: bool = False
          ) -> list[dict[str, Any]]:
    async def peek(client: Client) -> list[dict[str, Any]]:
        try:
            return await client.peek(name, limit)
        except UnknownQueue:
            if missing_ok:  # a dead-letter queue exists once something has died
                return []
            raise

    return _with_client(endpoint, "zq-queue", peek)


@queue.command("peek")
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Most messages to show.")
@json_option
@endpoint_option
def queue_peek(name: str, limit: int, as_json: bool, endpoint: str) -> None:
    """Show the first ready messages of queue NAME without taking them.

    Bodies are shown as UTF-8 text (invalid bytes replaced), cut at 200 characters.

    \b
    Examples:
      zq queue peek jobs
      zq queue peek jobs --limit 50 --json
    """
    msgs = _peek(name, limit, endpoint)
    if as_json:
        _echo_json(msgs)
        return
    if not msgs:
        click.echo(f"no ready messages in {name}")
    for m in msgs:
        headers = m.get("headers") or {}
        click.echo(f"id {m['id']}  attempts {m.get('attempts', 0)}"
                   + (f"  headers {json.dumps(headers, default=_jsonable)}" if headers else ""))
        click.echo(f"  {_text(m.get('body', b''))}")


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
@endpoint_option
def dlq_ls(dlq_name: str, limit: int, as_json: bool, endpoint: str) -> None:
    """Show the first dead letters of DLQ: origin, reason, attempt history, body.

    \b
    Examples:
      zq dlq ls jobs.dlq
      zq dlq ls jobs.dlq --limit 100 --json | jq '.[].headers["zq-reason"]'
    """
    msgs = _peek(dlq_name, limit, endpoint, missing_ok=True)
    if as_json:
        _echo_json(msgs)
        return
    if not msgs:
        click.echo(f"no dead letters in {dlq_name}")
    for m in msgs:
        h = m.get("headers") or {}
        click.echo(f"id {m['id']}  from {h.get('zq-origin', '?')}  died "
                   f"{_when(h.get('zq-dead-at'))}  reason: {h.get('zq-reason', '?')}")
        for e in h.get("zq-history") or []:
            if not isinstance(e, dict):
                continue
            took = ""
            if isinstance(e.get("start"), int | float) and isinstance(e.get("end"), int | float):
                took = f" after {e['end'] - e['start']:.3f}s"
            by = f" by {e['consumer']}" if e.get("consumer") else ""
            why = f": {e['reason']}" if e.get("reason") else ""
            click.echo(f"  attempt {e.get('attempt', '?')} {e.get('outcome', '?')}{by} at "
                       f"{_when(e.get('end'))}{took}{why}")
        click.echo(f"  body: {_text(m.get('body', b''))}")


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
@endpoint_option
def dlq_redrive(dlq_name: str, to: str | None, match: str | None, since: str | None,
                until: str | None, limit: int, endpoint: str) -> None:
    """Move dead letters from DLQ back to work; their attempts start over.

    They keep their attempt history.

    \b
    Examples:
      zq dlq redrive jobs.dlq
      zq dlq redrive jobs.dlq --to jobs-retry --match "time limit"
      zq dlq redrive jobs.dlq --since 2024-05-01T00:00 --limit 100
    """
    t0, t1 = _epoch(since, "--since"), _epoch(until, "--until")

    async def redrive(client: Client) -> tuple[int, int]:
        moved = await client.redrive(dlq_name, to=to, match=match, since=t0, until=t1,
                                     limit=limit)
        left = (await client.queue_info(dlq_name))["stats"].get("on_disk", 0)
        return moved, int(left)

    moved, left = _with_client(endpoint, "zq-dlq", redrive)
    click.echo(f"moved {moved} message(s) from {dlq_name}")
    if not moved:
        click.echo("nothing matched: only dead letters (with a zq-origin header) move "
                   "back by themselves; give --to for other messages", err=True)
    if left:
        click.echo(f"{left} more wait on disk (they did not page in or did not match); "
                   "run it again to retry", err=True)


