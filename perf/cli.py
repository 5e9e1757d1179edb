"""``python -m perf``: throughput and latency (zq and the baseline), baseline alone,
backlog (a deep sqlite store: memory, drain, restart), the relay."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from perf import backlog, harness, latency, relay, report
from perf.config import (
    DEFAULT_MESSAGES,
    DEFAULT_WINDOW,
    QUICK_MESSAGES,
    RELAY_IO,
    RELAY_MODES,
    STORAGES,
    LoadConfig,
)
from perf.server import ServerError

F = TypeVar("F", bound=Callable[..., Any])


def load_options(fn: F) -> F:
    options = [
        click.option("--messages", "-n", type=int, default=None,
                     help=f"Messages in one run. [default: {DEFAULT_MESSAGES:,}; "
                          f"{QUICK_MESSAGES:,} with --quick]"),
        click.option("--producers", "-p", type=int, default=1, show_default=True,
                     help="Producer processes."),
        click.option("--consumers", "-c", type=int, default=1, show_default=True,
                     help="Consumer processes."),
        click.option("--batch", "-b", type=int, default=100, show_default=True,
                     help="Bodies per publish_many (1: one publish() per message)."),
        click.option("--prefetch", type=int, default=1000, show_default=True,
                     help="Consumer credit."),
        click.option("--size", "-s", type=int, default=100, show_default=True,
                     help="Bytes per body (at least 8)."),
        click.option("--window", type=int, default=DEFAULT_WINDOW, show_default=True,
                     help="Unconfirmed messages a producer may have (the SDK's "
                          "publish_window)."),
        click.option("--tasks", type=int, default=0,
                     help="Publishing tasks per producer. [default: 500 for --batch 1, "
                          "else window / batch]"),
        click.option("--relay-mode", type=click.Choice(RELAY_MODES), default="poll",
                     show_default=True, help="The baseline relay's loop."),
        click.option("--relay-io", type=click.Choice(RELAY_IO), default="multipart",
                     show_default=True,
                     help="How the relay moves parts: recv/send_multipart as the broker "
                          "does, or one recv/send per part with plain-int flags."),
        click.option("--storage", type=click.Choice(STORAGES), default="memory",
                     show_default=True,
                     help="zq's store: memory, sqlite (synchronous=FULL) or sqlite-normal."),
        click.option("--quick", is_flag=True, help=f"{QUICK_MESSAGES:,} messages."),
        click.option("--repeat", "-r", type=int, default=1, show_default=True,
                     help="Rounds to run; each round runs every system once."),
        click.option("--timeout", type=float, default=300.0, show_default=True,
                     help="Seconds one run may take before it counts as failed."),
        click.option("--json", "as_json", is_flag=True,
                     help="Also print one JSON line per result (lines start with '{')."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """zq benchmarks against real processes on this machine."""


@main.command()
@load_options
def throughput(**opts: Any) -> None:
    """zq's msg/s and the baseline relay's, same traffic, same invocation, and the ratio.

    Starts `zq broker --storage memory` (or --storage sqlite in a fresh data folder)
    on tcp://127.0.0.1:*, runs producer and
    consumer processes with the zq SDK, verifies every message arrived exactly
    once, then does the same through a bare pyzmq ROUTER relay.
    """
    _run(("zq", "baseline"), **opts)


@main.command()
@load_options
def baseline(**opts: Any) -> None:
    """Only the baseline: the traffic through a bare pyzmq ROUTER relay."""
    _run(("baseline",), **opts)


@main.command("latency")
@click.option("--rate", type=float, default=None,
              help="Offered messages per second. [default: 1000]")
@click.option("--duration", type=float, default=None,
              help="Seconds of traffic. [default: 10; 2 with --quick]")
@click.option("--size", "-s", type=int, default=100, show_default=True,
              help="Bytes per body (at least 16: index and intended send time).")
@click.option("--storage", type=click.Choice(STORAGES), default="memory", show_default=True,
              help="zq's store: memory, sqlite (synchronous=FULL) or sqlite-normal.")
@click.option("--prefetch", type=int, default=1000, show_default=True,
              help="Consumer credit.")
@click.option("--relay-mode", type=click.Choice(RELAY_MODES), default="poll",
              show_default=True, help="The baseline relay's loop.")
@click.option("--relay-io", type=click.Choice(RELAY_IO), default="multipart",
              show_default=True, help="How the baseline relay moves parts.")
@click.option("--system", "systems", type=click.Choice(latency.SYSTEMS), multiple=True,
              help="Run only this system (repeatable). [default: zq and baseline]")
@click.option("--quick", is_flag=True, help="A 2-second run.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds past the schedule's end before a run counts as failed.")
@click.option("--json", "as_json", is_flag=True,
              help="Also print one JSON line per system (lines start with '{').")
def latency_cmd(rate: float | None, duration: float | None, quick: bool,
                systems: tuple[str, ...], as_json: bool, **fields: Any) -> None:
    """Open-loop latency at a fixed offered rate: zq, the baseline relay, and the ratio.

    One producer process calls publish() once per message on a fixed schedule
    (message i is due at t0 + i/rate) and one consumer process acks each
    message. publish→confirm and publish→deliver are measured from each
    message's intended send time, so a producer that falls behind counts the
    delay (no coordinated omission). Prints p50, p90, p99, p99.9 and max.
    """
    if duration is None:
        duration = latency.QUICK_DURATION if quick else latency.DEFAULT_DURATION
    try:
        cfg = latency.LatencyConfig(rate=rate if rate is not None else latency.DEFAULT_RATE,
                                    duration=duration, **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(latency.header(cfg))
    results: dict[str, latency.LatencyResult] = {}
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-perf-") as tmp:
        for system in systems or latency.SYSTEMS:
            try:
                results[system] = latency.run(system, cfg, Path(tmp))
            except (harness.RunFailed, ServerError) as exc:
                failed = f"{system}: {exc}"
                break
    if results:
        click.echo(latency.table(results))
    if as_json:
        for line in latency.json_lines(cfg, results):
            click.echo(line)
    if failed:
        click.echo(f"run failed: {failed}", err=True)
        sys.exit(1)
    if not all(r.ok for r in results.values()):
        click.echo("verification failed (see the delivery lines)", err=True)
        sys.exit(1)


@main.command("backlog")
@click.option("--messages", "-n", type=int, default=None,
              help=f"Messages to store. [default: {backlog.DEFAULT_MESSAGES:,}; "
                   f"{backlog.QUICK_MESSAGES:,} with --quick]")
@click.option("--size", "-s", type=int, default=backlog.DEFAULT_SIZE, show_default=True,
              help="Bytes per body (at least 8).")
@click.option("--batch", "-b", type=int, default=1000, show_default=True,
              help="Bodies per publish_many.")
@click.option("--tasks", type=int, default=10, show_default=True,
              help="Concurrent publish_many calls.")
@click.option("--prefetch", type=int, default=1000, show_default=True,
              help="The draining consumer's credit.")
@click.option("--fsync", type=click.Choice(["full", "normal"]), default="full",
              show_default=True, help="The sqlite broker's --fsync.")
@click.option("--window", type=int, default=0,
              help="ZQ_BROKER_WINDOW for the broker: ready messages per queue in memory. "
                   "[default: the broker's own]")
@click.option("--window-bytes", type=int, default=0,
              help="ZQ_BROKER_WINDOW_BYTES for the broker. [default: the broker's own]")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False), default=None,
              help="Folder to put the data folder in (needs about 1.4 x messages x size "
                   "bytes free). [default: a temporary folder]")
@click.option("--drop-caches", is_flag=True,
              help="Before each restart, sync and empty the machine's page cache "
                   "(/proc/sys/vm/drop_caches, root only), so the broker reads its store "
                   "from disk.")
@click.option("--quick", is_flag=True, help=f"{backlog.QUICK_MESSAGES:,} messages.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds publishing, and draining, may take.")
@click.option("--json", "as_json", is_flag=True, help="Also print the result as a JSON line.")
def backlog_cmd(messages: int | None, quick: bool, work_dir: str | None, as_json: bool,
                **fields: Any) -> None:
    """A deep sqlite backlog: broker RSS while publishing and draining, restart-to-ready.

    Publishes N messages with no consumer, restarts the broker after SIGKILL and
    after SIGTERM (timing process start to `ZQ READY`, and the same on an empty
    store), then drains everything with one consumer, checking exactly-once
    delivery. RSS is VmRSS from /proc/<pid>/status, sampled every 20 ms.
    """
    n = messages if messages is not None else (
        backlog.QUICK_MESSAGES if quick else backlog.DEFAULT_MESSAGES)
    try:
        cfg = backlog.BacklogConfig(messages=n, **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(backlog.header(cfg))
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zq-backlog-", dir=work_dir) as tmp:
        try:
            res = backlog.run(cfg, Path(tmp), say=lambda s: click.echo(s, err=True))
        except (ServerError, TimeoutError, OSError) as exc:
            click.echo(f"run failed: {exc!r}", err=True)
            sys.exit(1)
    click.echo(backlog.table(res))
    if as_json:
        click.echo(backlog.json_line(cfg, res))
    if not res.ok:
        click.echo("verification failed (see the delivery line)", err=True)
        sys.exit(1)


@main.command("relay")
@click.option("--bind", default="tcp://127.0.0.1:*", show_default=True)
@click.option("--mode", type=click.Choice(RELAY_MODES), default="poll", show_default=True)
@click.option("--io", type=click.Choice(RELAY_IO), default="multipart", show_default=True)
def relay_cmd(bind: str, mode: str, io: str) -> None:
    """Run the baseline relay until SIGTERM (prints `RELAY READY <endpoint>`)."""
    sys.exit(relay.serve(bind, mode, io))


def _run(systems: tuple[str, ...], *, messages: int | None, quick: bool, repeat: int,
         as_json: bool, **fields: Any) -> None:
    n = messages if messages is not None else QUICK_MESSAGES if quick else DEFAULT_MESSAGES
    if repeat < 1:
        raise click.BadParameter("--repeat must be >= 1")
    try:
        cfg = LoadConfig(messages=n, **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(report.header(cfg))
    rounds: list[dict[str, harness.Result]] = []
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-perf-") as tmp:
        for _ in range(repeat):
            res: dict[str, harness.Result] = {}
            for system in systems:
                try:
                    res[system] = harness.run(system, cfg, Path(tmp))
                except (harness.RunFailed, ServerError) as exc:
                    failed = f"{system}: {exc}"
                    break
            if res:
                rounds.append(res)
            if failed:
                break
    if rounds:
        click.echo(report.table(rounds))
    if as_json:
        for line in report.json_lines(cfg, rounds):
            click.echo(line)
    if failed:
        click.echo(f"run failed: {failed}", err=True)
        sys.exit(1)
    if not all(r.ok for res in rounds for r in res.values()):
        click.echo("verification failed (see the delivery column)", err=True)
        sys.exit(1)
