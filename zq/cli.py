"""The ``zq`` command line: broker, publish, consume, stats, queue and dlq operations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import click

from zq import __version__
from zq.broker import run_loop, serve
from zq.client import Client
from zq.client.schedules import check_cron, parse_every
from zq.config import (
    DEFAULT_ENDPOINT,
    FSYNC_MODES,
    STORAGE_KINDS,
    broker_config,
)
from zq.errors import UnknownQueue, ZqError
from zq.settings import MAX_COUNT
from zq.worker import WorkerConfig, build_worker, stuck_threads
from zq.worker import serve as serve_worker

T = TypeVar("T")

endpoint_option = click.option(
    "--endpoint", "-e", envvar="ZQ_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True,
    show_envvar=True, help="Broker endpoint to connect to.")


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _finite(v: float | None, param: click.Parameter) -> float | None:
    if v is not None and not math.isfinite(v):
        raise click.BadParameter(f"{v} is not a number of seconds", param=param)
    return v


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
      zq queue declare jobs --max-attempts 3 --time-limit 60
      zq dlq ls jobs.dlq
      zq schedule add nightly --cron "0 3 * * *" --queue jobs --body cleanup
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


@main.command()
@click.argument("app_spec", metavar="MODULE:ATTR")
@click.option("--queue", "-q", "queues", multiple=True, metavar="QUEUE",
              help="Consume this queue (repeatable). [default: every queue of the app's tasks]")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most tasks running at once (async ones on the loop, plain functions in "
                   "a thread or process pool).")
@click.option("--prefetch", "-p", type=click.IntRange(min=1), default=None,
              help="Credit per queue: most messages held, running or waiting. [default: "
                   "--concurrency, grown only while tasks are short compared with the "
                   "broker's round trip]")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", callback=lambda ctx, param, v: _finite(v, param),
              help="On SIGTERM or Ctrl-C, how long running tasks may finish before they are "
                   "nacked.")
@click.option("--endpoint", "-e", envvar="ZQ_ENDPOINT", default=None, show_envvar=True,
              help="Broker endpoint. [default: the App's endpoint]")
def worker(app_spec: str, queues: tuple[str, ...], concurrency: int, prefetch: int | None,
           drain_timeout: float, endpoint: str | None) -> None:
    """Run the tasks of the zq.App MODULE:ATTR until SIGTERM or Ctrl-C.

    MODULE is imported with the current directory first on the import path.
    Once every queue has its credit, prints one line to stdout:
    `zq worker ready: queues Q1, Q2 (concurrency N, prefetch P|auto)`; logs go
    to stderr. On SIGTERM or Ctrl-C it stops taking work, gives back messages
    it has not started (ready again at once, attempt not counted), lets running
    tasks finish for up to --drain-timeout, nacks the rest and exits 0; a
    second signal cuts the wait short.

    \b
    Examples:
      zq worker myapp.tasks:app
      zq worker myapp.tasks:app --queue emails --queue thumbnails --concurrency 16
      zq worker tasks:app --prefetch 1 --drain-timeout 60
      zq worker tasks:app -e tcp://10.0.0.5:5555
    """
    try:
        w = build_worker(WorkerConfig(app_spec, queues, concurrency, prefetch, drain_timeout,
                                      endpoint))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:ATTR") from None

    def ready() -> None:
        click.echo(f"zq worker ready: queues {', '.join(w.queues)} (concurrency "
                   f"{w.concurrency}, prefetch {w.prefetch or 'auto'})")
        sys.stdout.flush()

    try:
        run_loop(serve_worker(w, ready))
    except ZqError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        # Stopped, or stopping: a further SIGTERM or Ctrl-C must not cut the exit short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    c = w.counters
    click.echo(f"zq worker stopped: {c['succeeded']} succeeded, {c['failed']} failed, "
               f"{c['released']} released, {c['abandoned']} nacked at the drain timeout",
               err=True)
    if stuck_threads():  # plain functions past the drain timeout cannot be stopped
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
    hdr: dict[str, str] = {}
    for item in headers:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--header")
        hdr[key] = value
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

    async def run() -> int:
        total = 0
        async with Client(endpoint, name="zq-publish") as client:
            if dedup_id is not None:
                mid = await client.publish(queue, single[0], headers=hdr or None,
                                           dedup_id=dedup_id, **opts)
                if not quiet:
                    click.echo(mid)
                return 1
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

    n = _run_client(run)
    click.echo(f"published {n} message(s) to {queue}", err=True)


@main.command()
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


# ---------------------------------------------------------------- queue and dlq

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print the broker's raw reply as JSON. Bytes (bodies, binary headers) are shown "
         "as UTF-8 text, invalid bytes replaced with U+FFFD.")


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return repr(v)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable))


def _text(body: bytes, limit: int = 200) -> str:
    t = body.decode("utf-8", "replace")
    return t if len(t) <= limit else t[:limit] + f"... ({len(body)} bytes)"


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


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


@main.group()
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

    async def run() -> dict[str, Any]:
        async with Client(endpoint, name="zq-queue") as client:
            return await client.declare_queue(name, **settings)

    result = _run_client(run)
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

    async def run() -> dict[str, Any]:
        async with Client(endpoint, name="zq-queue") as client:
            return await client.queue_info(name)

    info = _run_client(run)
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

    async def run() -> dict[str, Any]:
        async with Client(endpoint, name="zq-queue") as client:
            return await client.queues()

    queues = _run_client(run)
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
        async def run() -> Any:
            async with Client(endpoint, name="zq-queue") as client:
                return await call(client, name)

        click.echo(done(name, _run_client(run)))


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
    async def run() -> list[dict[str, Any]]:
        async with Client(endpoint, name="zq-queue") as client:
            try:
                return await client.peek(name, limit)
            except UnknownQueue:
                if missing_ok:  # a dead-letter queue exists once something has died
                    return []
                raise

    return _run_client(run)


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


@main.group()
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

    async def run() -> tuple[int, int]:
        async with Client(endpoint, name="zq-dlq") as client:
            moved = await client.redrive(dlq_name, to=to, match=match, since=t0, until=t1,
                                         limit=limit)
            left = (await client.queue_info(dlq_name))["stats"].get("on_disk", 0)
            return moved, int(left)

    moved, left = _run_client(run)
    click.echo(f"moved {moved} message(s) from {dlq_name}")
    if not moved:
        click.echo("nothing matched: only dead letters (with a zq-origin header) move "
                   "back by themselves; give --to for other messages", err=True)
    if left:
        click.echo(f"{left} more wait on disk (they did not page in or did not match); "
                   "run it again to retry", err=True)


# ---------------------------------------------------------------- schedules


def _fmt_every(ms: Any) -> str:
    """12000 -> '12s', 5400000 -> '1h30m', 1500 -> '1.5s'."""
    if not isinstance(ms, int) or ms <= 0:
        return "?"
    if ms < 1000:
        return f"{ms}ms"
    if ms % 1000:
        return f"{ms / 1000:g}s"
    secs, parts = ms // 1000, []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            parts.append(f"{secs // size}{unit}")
            secs %= size
    return "".join(parts)


def _local(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).astimezone().isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


@main.group()
def schedule() -> None:
    """Periodic messages, published by the broker itself.

    A schedule lives in the broker's store: there is no scheduler process to
    run, and each due time fires exactly once however many workers there are.
    After the broker was down, --misfire once (the default) fires once at
    start for the due times it missed; --misfire skip waits for the next one.

    \b
    Examples:
      zq schedule add heartbeat --every 10s --queue pings --body ping
      zq schedule add digest --cron "0 7 * * 1-5" --queue mail --body-file digest.json
      zq schedule ls
      zq schedule rm heartbeat
    """


@schedule.command("add")
@click.argument("name")
@click.option("--every", default=None, metavar="DURATION",
              help="Fire at this interval: seconds, or 500ms, 10s, 5m, 1h, 1h30m, 2d.")
@click.option("--cron", default=None, metavar="EXPR",
              help='Fire at the times of a five-field cron expression in UTC: minute hour '
                   'day-of-month month day-of-week, e.g. "*/5 * * * *".')
@click.option("--queue", "-q", "queue_name", required=True, help="Queue to publish to.")
@click.option("--body", default=None, metavar="TEXT", help="The message body (UTF-8).")
@click.option("--body-file", type=click.File("rb"), default=None, metavar="FILE",
              help="Read the message body from FILE ('-' for stdin).")
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="A header of every fired message (repeatable).")
@click.option("--misfire", type=click.Choice(["once", "skip"]), default="once",
              show_default=True,
              help="After broker downtime: fire once at start, or skip to the next due time.")
@click.option("--priority", type=click.IntRange(0, 9), default=None,
              help="0..9, higher is delivered first. [default: 0]")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Seconds a fired message may wait before it expires.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Seconds one attempt may run before it is retried.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Failed attempts before a fired message is dead.")
@click.option("--tenant", default=None, help="The tenant (fair-share group) of the messages.")
@endpoint_option
def schedule_add(name: str, every: str | None, cron: str | None, queue_name: str,
                 body: str | None, body_file: Any, headers: tuple[str, ...], misfire: str,
                 endpoint: str, **opts: Any) -> None:
    """Create schedule NAME (or replace the one of that name).

    Give exactly one of --every and --cron. Prints the first due time.
    Fired messages carry the headers zq-schedule (NAME) and zq-due (the due
    time, epoch seconds) besides those given with --header.

    \b
    Examples:
      zq schedule add cleanup --every 1h --queue jobs --body '{"task": "cleanup"}'
      zq schedule add ping --every 500ms --queue pings --misfire skip
      zq schedule add report --cron "30 6 * * *" --queue reports -H kind=daily
      zq schedule add big --every 5m --queue jobs --body-file payload.bin --priority 9
    """
    if (every is None) == (cron is None):
        raise click.UsageError("give exactly one of --every and --cron")
    if body is not None and body_file is not None:
        raise click.UsageError("give at most one of --body and --body-file")
    try:  # refuse a bad interval or cron expression before connecting
        if every is not None:
            parse_every(every)
        else:
            check_cron(cron)
    except ZqError as exc:
        raise click.BadParameter(exc.message, param_hint="--every" if every else "--cron"
                                 ) from None
    data = body.encode() if body is not None else body_file.read() if body_file else b""
    hdr: dict[str, str] = {}
    for item in headers:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--header")
        hdr[key] = value
    options = {k: v for k, v in opts.items() if v is not None}

    async def run() -> float:
        async with Client(endpoint, name="zq-schedule") as client:
            return await client.add_schedule(name, queue_name, data, every=every, cron=cron,
                                             misfire=misfire, headers=hdr or None, **options)

    next_due = _run_client(run)
    how = f"every {every}" if every is not None else f"cron '{cron}' (UTC)"
    click.echo(f"schedule {name}: {how} to {queue_name}, next due {_local(next_due)}")


@schedule.command("ls")
@json_option
@endpoint_option
def schedule_ls(as_json: bool, endpoint: str) -> None:
    """List every schedule with its next due time and how often it fired.

    \b
    Examples:
      zq schedule ls
      zq schedule ls --json | jq '.[].name'
    """

    async def run() -> list[dict[str, Any]]:
        async with Client(endpoint, name="zq-schedule") as client:
            return await client.schedules()

    items = _run_client(run)
    if as_json:
        _echo_json(items)
        return
    if not items:
        click.echo("no schedules")
        return
    click.echo(f"{'schedule':<24} {'queue':<20} {'when':<20} {'misfire':<7} "
               f"{'next due':<25} {'fired':>7}  last fired")
    for s in sorted(items, key=lambda s: str(s.get("name"))):
        when = (f"cron {s['cron']}" if s.get("cron")
                else f"every {_fmt_every(s.get('every_ms'))}")
        last = _local(s["last_fired"]) if s.get("last_fired") is not None else "never"
        click.echo(f"{s.get('name', '?'):<24} {s.get('queue', '?'):<20} {when:<20} "
                   f"{s.get('misfire', '?'):<7} {_local(s.get('next_due')):<25} "
                   f"{s.get('fired', 0):>7}  {last}")


@schedule.command("rm")
@click.argument("name")
@endpoint_option
def schedule_rm(name: str, endpoint: str) -> None:
    """Remove schedule NAME. Messages it already published stay.

    Exits 1 if there is no schedule NAME.

    \b
    Examples:
      zq schedule rm heartbeat
    """

    async def run() -> bool:
        async with Client(endpoint, name="zq-schedule") as client:
            return await client.remove_schedule(name)

    if not _run_client(run):
        raise click.ClickException(f"no schedule named {name!r}")
    click.echo(f"removed schedule {name}")



if __name__ == "__main__":  # pragma: no cover
    main()
