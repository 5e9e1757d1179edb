"""``zq broker``, ``zq publish``, ``zq consume`` and ``zq stats``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from zq.broker import serve
from zq.cli.common import _finite, _headers, _with_client, endpoint_option
from zq.client import Client
from zq.config import DEFAULT_ENDPOINT, FSYNC_MODES, STORAGE_KINDS, broker_config


@click.command()
@click.option("--bind", "-b", default=None,
              help=f"Endpoint to bind. [default: {DEFAULT_ENDPOINT}; "
                   "tcp://127.0.0.1:* picks a free port]")
@click.option("--data", "-d", default=None, type=click.Path(file_okay=False),
              help="Data folder for the store. [default: ./zq-data]")
@click.option("--storage", type=click.Choice(STORAGE_KINDS), default=None,
              help="Where messages live. 'sqlite': a database in --data, in WAL mode; a "
                   "confirm means the message is on disk. 'memory': NO durability, a restart "
                   "or crash loses every message. [default: sqlite]")
@click.option("--fsync", type=click.Choice(FSYNC_MODES), default=None,
              help="sqlite only. 'full': every commit reaches the disk before its confirms "
                   "(synchronous=FULL). 'normal': faster, and a power loss (not a crash of "
                   "the broker) may lose the last commits. [default: full]")
@click.option("--max-db-bytes", type=int, default=None,
              help="sqlite only: cap the database file; past it publishes get STORAGE_FULL "
                   "until acks free space. [default: 0, no cap]")
@click.option("--heartbeat", type=float, default=None,
              help="Seconds between heartbeats, both ways. [default: 1.0]")
@click.option("--liveness", type=int, default=None,
              help="Heartbeats a peer may miss before it is dropped and its messages "
                   "requeued. [default: 3]")
@click.option("--max-batch", type=int, default=None,
              help="Most messages in one DELIVER frame. [default: 1000]")
@click.option("--max-credit", type=int, default=None,
              help="Largest credit window per consumer and queue. [default: 100000]")
@click.option("--dispatch", default=None, metavar="POLICY",
              help="How consumers of one queue share it. [default: round-robin]")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML file with a [broker] table of these settings and "
                                 "[queues.NAME] tables of queue settings (as in `zq queue "
                                 "declare`); flags override it.")
def broker(config_file: str | None, **flags: Any) -> None:
    """Run a broker until SIGTERM or Ctrl-C.

    Prints exactly one line to stdout once it is bound and ready,
    `ZQ READY <endpoint>`, with the real port; logs go to stderr.
    Settings come from --config, then ZQ_BROKER_<SETTING> environment
    variables, then flags.

    \b
    Examples:
      zq broker                              # sqlite in ./zq-data
      zq broker --data /var/lib/zq --fsync normal
      zq broker --storage memory             # no durability
      zq broker --bind 'tcp://127.0.0.1:*' --heartbeat 0.5
      ZQ_BROKER_MAX_BATCH=500 zq broker --config broker.toml
    """
    try:
        cfg = broker_config(config_file, **flags)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc)) from None
    sys.exit(serve(cfg))


def _stdin_lines(chunk: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in sys.stdin.buffer:
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


@click.command()
@click.argument("queue")
@click.argument("bodies", nargs=-1)
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="Add a header to every message (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the message ids.")
@click.option("--priority", type=click.IntRange(0, 9), default=None,
              help="0..9, higher is delivered first. [default: 0]")
@click.option("--delay", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Deliver no sooner than this many seconds from now.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Expire to the dead-letter queue if not delivered within this many "
                   "seconds. [default: the queue's]")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Seconds one attempt may run before it is retried. [default: the queue's]")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Failed attempts before the message is dead. [default: the queue's]")
@click.option("--tenant", default=None, help="The tenant (fair-share group) of the messages.")
@click.option("--dedup-id", default=None,
              help="Deduplication id: a repeat within the queue's dedup window stores "
                   "nothing and prints the first message's id. Needs exactly one message.")
@endpoint_option
def publish(queue: str, bodies: tuple[str, ...], headers: tuple[str, ...], quiet: bool,
            priority: int | None, delay: float | None, ttl: float | None,
            time_limit: float | None, max_attempts: int | None, tenant: str | None,
            dedup_id: str | None, endpoint: str) -> None:
    """Publish BODIES to QUEUE, or one message per line of stdin when none are given.

    Prints each stored message's id (after the broker's confirm). The options
    apply to every message.

    \b
    Examples:
      zq publish jobs "resize img-1.png"
      seq 1 1000 | zq publish numbers -q
      zq publish mail -H to=ops@example.com "disk almost full"
      zq publish jobs --priority 9 --time-limit 30 "urgent"
      zq publish invoices --dedup-id inv-2024-17 "send invoice 17"
    """
    hdr = _headers(headers)
    if dedup_id is not None and len(bodies) > 1:
        raise click.BadParameter("a dedup id needs exactly one message", param_hint="--dedup-id")
    opts: dict[str, Any] = {k: v for k, v in (
        ("priority", priority), ("delay", delay), ("ttl", ttl), ("time_limit", time_limit),
        ("max_attempts", max_attempts), ("tenant", tenant)) if v is not None}
    single: list[bytes] = []
    if dedup_id is not None:
        single = [b.encode() for b in bodies] if bodies else \
            [line for chunk in _stdin_lines(1000) for line in chunk]
        if len(single) != 1:
            raise click.BadParameter(f"a dedup id needs exactly one message, got "
                                     f"{len(single)}", param_hint="--dedup-id")

    async def send(client: Client) -> int:
        if dedup_id is not None:
            mid = await client.publish(queue, single[0], headers=hdr or None,
                                       dedup_id=dedup_id, **opts)
            if not quiet:
                click.echo(mid)
            return 1
        total = 0
        chunks: Iterator[list[bytes]] = (
            iter([[b.encode() for b in bodies]]) if bodies else _stdin_lines(1000))
        for chunk in chunks:
            ids = await client.publish_many(
                queue, chunk, headers=[hdr] * len(chunk) if hdr else None, **opts)
            total += len(ids)
            if not quiet:
                sys.stdout.write("".join(f"{i}\n" for i in ids))
                sys.stdout.flush()
        return total

    n = _with_client(endpoint, "zq-publish", send)
    click.echo(f"published {n} message(s) to {queue}", err=True)


@click.command()
@click.argument("queue")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None,
              help="Exit after this many messages. [default: run until Ctrl-C]")
@click.option("--prefetch", "-p", type=click.IntRange(min=1), default=100, show_default=True,
              help="Credit: most unacked messages held at once.")
@click.option("--timeout", "-t", type=click.FloatRange(0, 1e9), default=None,
              callback=lambda ctx, param, v: _finite(v, param),
              help="Exit when no message arrives for this many seconds.")
@click.option("--headers", "show_headers", is_flag=True,
              help="Print id, attempt and headers as JSON before each body.")
@endpoint_option
def consume(queue: str, count: int | None, prefetch: int, timeout: float | None,
            show_headers: bool, endpoint: str) -> None:
    """Print message bodies from QUEUE, one per line, acking each after printing.

    \b
    Examples:
      zq consume jobs
      zq consume jobs --count 10 --prefetch 10
      zq consume jobs --timeout 2 > drained.txt
    """
    out = sys.stdout.buffer

    async def drain(client: Client) -> int:
        n = 0
        async with client.consume(queue, prefetch=prefetch) as consumer:
            while count is None or n < count:
                try:
                    msg = await consumer.get(timeout)
                except TimeoutError:
                    break
                if show_headers:
                    meta = {"id": msg.id, "attempt": msg.attempt, "headers": msg.headers}
                    out.write(json.dumps(meta, default=repr).encode() + b"\n")
                out.write(msg.body + b"\n")
                out.flush()
                await msg.ack()
                n += 1
        return n

    n = _with_client(endpoint, "zq-consume", drain)
    click.echo(f"consumed {n} message(s) from {queue}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw counters as JSON.")
@endpoint_option
def stats(as_json: bool, endpoint: str) -> None:
    """Show the broker's counters, queues and connected peers.

    \b
    Examples:
      zq stats
      zq stats --json | jq .queues
    """
    s = _with_client(endpoint, "zq-stats", Client.stats)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    c = s["counters"]
    click.echo(f"broker {s['broker']}: published {c['published']}, delivered {c['delivered']} "
               f"(avg batch {c['avg_deliver_batch']:.1f}), acked {c['acked']}, "
               f"unroutable {c['unroutable']}")
    store = s.get("store", {})
    if store.get("kind") == "sqlite":
        click.echo(f"store sqlite (fsync {store['fsync']}): {store['commits']} commits, "
                   f"{store['messages_written']} messages written, "
                   f"{store['pages_read']} backlog pages read")
    elif store:
        click.echo(f"store {store.get('kind')}: not durable")
    click.echo(f"{'queue':<32} {'ready':>10} {'on disk':>10} {'in-flight':>10} "
               f"{'consumers':>9} {'acked':>12}")
    for name, q in sorted(s["queues"].items()):
        click.echo(f"{name:<32} {q['ready']:>10} {q.get('on_disk', 0):>10} "
                   f"{q['in_flight']:>10} {q['consumers']:>9} {q['acked']:>12}")


