"""``python -m perf``: throughput (zq and the baseline), baseline alone, the relay."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from perf import harness, relay, report
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
