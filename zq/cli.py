"""The ``zq`` command line: broker, publish, consume, stats."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import click

from zq import __version__
from zq.broker import run_loop, serve
from zq.client import Client
from zq.config import (
    DEFAULT_ENDPOINT,
    DISPATCH_POLICIES,
    FSYNC_MODES,
    STORAGE_KINDS,
    broker_config,
)
from zq.errors import ZqError

T = TypeVar("T")

endpoint_option = click.option(
    "--endpoint", "-e", envvar="ZQ_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True,
    show_envvar=True, help="Broker endpoint to connect to.")


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_client(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a client coroutine; turn zq errors into a one-line message and exit 1."""
    result: list[T] = []

    async def main() -> None:
        task = asyncio.ensure_future(fn())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            result.append(await task)

    try:
        run_loop(main())
    except ZqError as exc:
        raise click.ClickException(str(exc)) from None
    if not result:
        sys.exit(130)
    return result[0]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zq")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level (logs go to stderr).")
def main(log_level: str) -> None:
    """zq: a lightweight durable message and task broker on ZeroMQ.

    \b
    Start a broker, publish, consume:
      zq broker &
      zq publish jobs "hello" "world"
      zq consume jobs --count 2
    """
    _setup_logging(log_level)


@main.command()
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
@click.option("--dispatch", type=click.Choice(list(DISPATCH_POLICIES)), default=None,
              help="How consumers of one queue share it. [default: round-robin]")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML file with a [broker] table; flags override it.")
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


@main.command()
@click.argument("queue")
@click.argument("bodies", nargs=-1)
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="Add a header to every message (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the message ids.")
@endpoint_option
def publish(queue: str, bodies: tuple[str, ...], headers: tuple[str, ...], quiet: bool,
            endpoint: str) -> None:
    """Publish BODIES to QUEUE, or one message per line of stdin when none are given.

    Prints each stored message's id (after the broker's confirm).

    \b
    Examples:
      zq publish jobs "resize img-1.png"
      seq 1 1000 | zq publish numbers -q
      zq publish mail -H to=ops@example.com "disk almost full"
    """
    hdr: dict[str, str] = {}
    for item in headers:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--header")
        hdr[key] = value

    async def run() -> int:
        total = 0
        async with Client(endpoint, name="zq-publish") as client:
            chunks: Iterator[list[bytes]] = (
                iter([[b.encode() for b in bodies]]) if bodies else _stdin_lines(1000))
            for chunk in chunks:
                ids = await client.publish_many(
                    queue, chunk, headers=[hdr] * len(chunk) if hdr else None)
                total += len(ids)
                if not quiet:
                    sys.stdout.write("".join(f"{i}\n" for i in ids))
                    sys.stdout.flush()
        return total

    n = _run_client(run)
    click.echo(f"published {n} message(s) to {queue}", err=True)


@main.command()
@click.argument("queue")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None,
              help="Exit after this many messages. [default: run until Ctrl-C]")
@click.option("--prefetch", "-p", type=click.IntRange(min=1), default=100, show_default=True,
              help="Credit: most unacked messages held at once.")
@click.option("--timeout", "-t", type=float, default=None,
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

    async def run() -> int:
        n = 0
        async with Client(endpoint, name="zq-consume") as client, \
                client.consume(queue, prefetch=prefetch) as consumer:
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

    n = _run_client(run)
    click.echo(f"consumed {n} message(s) from {queue}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw counters as JSON.")
@endpoint_option
def stats(as_json: bool, endpoint: str) -> None:
    """Show the broker's counters, queues and connected peers.

    \b
    Examples:
      zq stats
      zq stats --json | jq .queues
    """

    async def run() -> dict[str, Any]:
        async with Client(endpoint, name="zq-stats") as client:
            return await client.stats()

    s = _run_client(run)
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


if __name__ == "__main__":  # pragma: no cover
    main()
