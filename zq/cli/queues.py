"""``zq queue``: declare, inspect, pause, purge and delete queues (``zq dlq`` is in
:mod:`zq.cli.dlq`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click

from zq.cli.common import (
    _body,
    _echo_json,
    _jsonable,
    _peek,
    _with_client,
    client_options,
    json_option,
)
from zq.client import Client


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
@click.option("--idle-ttl", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Delete the queue (messages and bindings too) once it has had no "
                   "consumer for this long; 0 = never.")
@click.option("--weight", "weights", multiple=True, metavar="TENANT=W",
              help="A tenant's weight in the fair share (repeatable; default 1).")
@click.option("--cap", "caps", multiple=True, metavar="TENANT=N",
              help="Most messages of a tenant in flight at once (repeatable).")
@json_option
@client_options
def queue_declare(name: str, weights: tuple[str, ...], caps: tuple[str, ...], as_json: bool,
                  endpoint: str, connect_timeout: float, **options: Any) -> None:
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

    result = _with_client(endpoint, "zq-queue", lambda c: c.declare_queue(name, **settings),
                          timeout=connect_timeout)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"queue {name}:")
    _print_settings(result)


@queue.command("info")
@click.argument("name")
@json_option
@client_options
def queue_info(name: str, as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """Show the settings and counters of queue NAME.

    \b
    Examples:
      zq queue info jobs
      zq queue info jobs --json | jq .stats.ready
    """
    info = _with_client(endpoint, "zq-queue", lambda c: c.queue_info(name),
                        timeout=connect_timeout)
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
    if st.get("undeliverable"):
        click.echo(f"  undeliverable {st['undeliverable']}: stored, larger than max_frame; "
                   f"skipped until the broker restarts with a larger --max-frame")
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
@client_options
def queue_ls(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """List every queue with its counters.

    \b
    Examples:
      zq queue ls
      zq queue ls --json | jq 'keys'
    """
    queues = _with_client(endpoint, "zq-queue", Client.queues, timeout=connect_timeout)
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
    @client_options
    def command(name: str, endpoint: str, connect_timeout: float) -> None:
        click.echo(done(name, _with_client(endpoint, "zq-queue", lambda c: call(c, name),
                                           timeout=connect_timeout)))


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


@queue.command("peek")
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Most messages to show.")
@json_option
@client_options
def queue_peek(name: str, limit: int, as_json: bool, endpoint: str,
               connect_timeout: float) -> None:
    """Show the first ready messages of queue NAME without taking them.

    Bodies are shown as UTF-8 text (invalid bytes replaced), a task's call
    (header zq-task) as its name and arguments; both cut at 200 characters.
    --json shows every body as text.

    \b
    Examples:
      zq queue peek jobs
      zq queue peek jobs --limit 50 --json
    """
    msgs = _peek(name, limit, endpoint, connect_timeout)
    if as_json:
        _echo_json(msgs)
        return
    if not msgs:
        click.echo(f"no ready messages in {name}")
    for m in msgs:
        headers = m.get("headers") or {}
        click.echo(f"id {m['id']}  attempts {m.get('attempts', 0)}"
                   + (f"  headers {json.dumps(headers, default=_jsonable)}" if headers else ""))
        click.echo(f"  {_body(m)}")
