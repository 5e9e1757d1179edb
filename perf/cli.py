"""``python -m perf``: throughput and latency (zq and the baseline), baseline alone,
backlog (a deep sqlite store: memory, drain, restart), the relay."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from perf import (
    backlog,
    fanin,
    harness,
    idle,
    latency,
    plot,
    queues,
    recovery,
    relay,
    report,
    suite,
)
from perf.config import (
    DEFAULT_MESSAGES,
    DEFAULT_WINDOW,
    QUICK_MESSAGES,
    RELAY_IO,
    RELAY_MODES,
    STORAGES,
    LoadConfig,
)
from perf.progress import BAR
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
                     help="Consumer credit (per queue with --queues)."),
        click.option("--queues", "-q", type=int, default=1, show_default=True,
                     help="Queues Q: batch j goes to queue j % Q; every consumer consumes "
                          "every queue (one client.consume(queue, prefetch) per queue). "
                          "Baseline: producers send [Q, queue, seq, bodies] and each "
                          "consumer's hello names all Q queues, so the relay routes each "
                          "batch by queue name, round robin among that queue's consumers."),
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
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="Also write a latency-by-percentile plot (PNG) to this file, if "
                   "matplotlib is installed (it is not a dependency; without it the plot "
                   "is skipped with a message).")
def latency_cmd(rate: float | None, duration: float | None, quick: bool,
                systems: tuple[str, ...], as_json: bool, plot_file: str | None,
                **fields: Any) -> None:
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
    if plot_file is not None and not plot.available():
        click.echo(plot.MISSING, err=True)
        plot_file = None
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
        if plot_file is not None:
            click.echo(plot.latency_plot(results, latency.header(cfg).splitlines()[0],
                                         Path(plot_file)), err=True)
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
            with BAR.scope("backlog"):
                res = backlog.run(cfg, Path(tmp), say=BAR.say)
        except (ServerError, TimeoutError, OSError) as exc:
            click.echo(f"run failed: {exc!r}", err=True)
            sys.exit(1)
    click.echo(backlog.table(res))
    if as_json:
        click.echo(backlog.json_line(cfg, res))
    if not res.ok:
        click.echo("verification failed (see the delivery line)", err=True)
        sys.exit(1)


@main.command("recovery")
@click.option("--messages", "-n", type=int, default=None,
              help=f"Messages to store. [default: {recovery.DEFAULT_MESSAGES:,}; "
                   f"{recovery.QUICK_MESSAGES:,} with --quick]")
@click.option("--size", "-s", type=int, default=recovery.DEFAULT_SIZE, show_default=True,
              help="Bytes per body (at least 8).")
@click.option("--rounds", type=int, default=None,
              help=f"SIGKILL and SIGTERM restarts to time, each. "
                   f"[default: {recovery.DEFAULT_ROUNDS}; {recovery.QUICK_ROUNDS} with --quick]")
@click.option("--fsync", type=click.Choice(["full", "normal"]), default="full",
              show_default=True, help="The sqlite broker's --fsync.")
@click.option("--quick", is_flag=True,
              help=f"{recovery.QUICK_MESSAGES:,} messages, {recovery.QUICK_ROUNDS} round.")
@click.option("--json", "as_json", is_flag=True, help="Also print the result as a JSON line.")
def recovery_cmd(messages: int | None, rounds: int | None, quick: bool, as_json: bool,
                 **fields: Any) -> None:
    """Start-to-ready with N messages stored, after a SIGKILL and after a SIGTERM stop.

    Stores N messages (sqlite, no consumer), then repeats: SIGKILL the broker and
    start it again, SIGTERM it and start it again; each start is timed from process
    start to the `ZQ READY` line, and each time the broker must report all N
    messages. Also times the first start, on the empty store.
    """
    try:
        cfg = recovery.RecoveryConfig(
            messages=messages if messages is not None else (
                recovery.QUICK_MESSAGES if quick else recovery.DEFAULT_MESSAGES),
            rounds=rounds if rounds is not None else (
                recovery.QUICK_ROUNDS if quick else recovery.DEFAULT_ROUNDS), **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(recovery.header(cfg))
    with tempfile.TemporaryDirectory(prefix="zq-recovery-") as tmp:
        try:
            res = recovery.run(cfg, Path(tmp))
        except (ServerError, TimeoutError, OSError) as exc:
            click.echo(f"run failed: {exc!r}", err=True)
            sys.exit(1)
    click.echo(recovery.table(res))
    if as_json:
        click.echo(recovery.json_line(cfg, res))
    if not res.ok:
        click.echo("verification failed", err=True)
        sys.exit(1)


@main.command("idle")
@click.option("--storage", "storages", type=click.Choice(idle.STORAGES), multiple=True,
              help="Only this storage (repeatable). [default: memory and sqlite]")
@click.option("--repeat", "-r", type=int, default=None,
              help=f"Starts per storage. [default: {idle.DEFAULT_REPEAT}; "
                   f"{idle.QUICK_REPEAT} with --quick]")
@click.option("--settle", type=float, default=idle.DEFAULT_SETTLE, show_default=True,
              help="Seconds between the ready line and reading RSS.")
@click.option("--quick", is_flag=True, help=f"{idle.QUICK_REPEAT} starts per storage.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON line per storage.")
def idle_cmd(storages: tuple[str, ...], repeat: int | None, settle: float, quick: bool,
             as_json: bool) -> None:
    """An idle broker's RSS, and start-to-ready on an empty store.

    Starts `zq broker` on an empty store several times per storage, timing process
    start to `ZQ READY`, and reads VmRSS after --settle seconds with no client.
    Targets: RSS <= 50 MB, start to ready <= 0.5 s.
    """
    try:
        cfg = idle.IdleConfig(storages=storages or idle.STORAGES,
                              repeat=repeat if repeat is not None else (
                                  idle.QUICK_REPEAT if quick else idle.DEFAULT_REPEAT),
                              settle=settle)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(idle.header(cfg))
    with tempfile.TemporaryDirectory(prefix="zq-idle-") as tmp:
        try:
            res = idle.run(cfg, Path(tmp))
        except (ServerError, OSError) as exc:
            click.echo(f"run failed: {exc!r}", err=True)
            sys.exit(1)
    click.echo(idle.table(res))
    if as_json:
        for line in idle.json_lines(cfg, res):
            click.echo(line)
    if not all(r.ok for r in res.values()):
        click.echo("verification failed", err=True)
        sys.exit(1)


@main.command("fanin")
@click.option("--clients", type=int, default=fanin.DEFAULT_CLIENTS, show_default=True,
              help="Producers in all, one connection each.")
@click.option("--processes", type=int, default=fanin.DEFAULT_PROCESSES, show_default=True,
              help="OS processes the producers are spread over.")
@click.option("--per-client", type=int, default=None,
              help=f"Messages each producer publishes, one publish() at a time. "
                   f"[default: {fanin.DEFAULT_PER_CLIENT}; {fanin.QUICK_PER_CLIENT} with "
                   f"--quick]")
@click.option("--size", "-s", type=int, default=100, show_default=True,
              help="Bytes per body (at least 8).")
@click.option("--consumers", "-c", type=int, default=1, show_default=True,
              help="Consumer processes.")
@click.option("--prefetch", type=int, default=1000, show_default=True, help="Consumer credit.")
@click.option("--storage", type=click.Choice(STORAGES), default="memory", show_default=True,
              help="zq's store.")
@click.option("--relay-mode", type=click.Choice(RELAY_MODES), default="poll",
              show_default=True, help="The baseline relay's loop.")
@click.option("--relay-io", type=click.Choice(RELAY_IO), default="multipart",
              show_default=True, help="How the baseline relay moves parts.")
@click.option("--system", "systems", type=click.Choice(fanin.SYSTEMS), multiple=True,
              help="Run only this system (repeatable). [default: zq and baseline]")
@click.option("--quick", is_flag=True,
              help=f"{fanin.QUICK_PER_CLIENT} messages per producer.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds publishing may take before the run counts as failed.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON line per system.")
def fanin_cmd(per_client: int | None, quick: bool, systems: tuple[str, ...], as_json: bool,
              **fields: Any) -> None:
    """Many producers on one broker: msg/s, the broker's CPU and RSS, connection setup.

    Spreads the producers over a few processes; a zq producer is one zq.Client
    publishing its messages with publish(), one at a time. One consumer drains the
    queue. Connection setup is timed from the connect signal until each producer's
    session is open. The baseline runs the same shape through the relay: one DEALER
    socket per producer (one zmq.Context per process), a ping as the connection
    check, one message in flight per producer, confirmed by the consumer's ack.
    """
    try:
        cfg = fanin.FaninConfig(
            per_client=per_client if per_client is not None else (
                fanin.QUICK_PER_CLIENT if quick else fanin.DEFAULT_PER_CLIENT), **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(fanin.header(cfg))
    results: dict[str, fanin.FaninResult] = {}
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-fanin-") as tmp:
        for system in systems or fanin.SYSTEMS:
            try:
                results[system] = fanin.run(system, cfg, Path(tmp))
            except (harness.RunFailed, ServerError) as exc:
                failed = f"{system}: {exc}"
                break
    if results:
        click.echo(fanin.table(results))
    if as_json:
        for line in fanin.json_lines(cfg, results):
            click.echo(line)
    _finish(failed, all(r.ok for r in results.values()))


@main.command("queues")
@click.option("--queues", "-q", type=int, default=queues.DEFAULT_QUEUES, show_default=True,
              help="Queues.")
@click.option("--per-queue", type=int, default=None,
              help=f"Messages each queue gets. [default: {queues.DEFAULT_PER_QUEUE}; "
                   f"{queues.QUICK_PER_QUEUE} with --quick]")
@click.option("--producers", "-p", type=int, default=2, show_default=True,
              help="Producer processes.")
@click.option("--consumers", "-c", type=int, default=4, show_default=True,
              help="Consumer processes; consumer c takes queues c, c + C, ...")
@click.option("--prefetch", type=int, default=10, show_default=True,
              help="Credit per queue (one client.consume(queue, prefetch) each).")
@click.option("--size", "-s", type=int, default=100, show_default=True,
              help="Bytes per body (at least 16: index and send time).")
@click.option("--tasks", type=int, default=500, show_default=True,
              help="Concurrent publish() calls per producer (the baseline: messages in "
                   "flight per producer).")
@click.option("--storage", type=click.Choice(STORAGES), default="memory", show_default=True,
              help="zq's store.")
@click.option("--relay-mode", type=click.Choice(RELAY_MODES), default="poll",
              show_default=True, help="The baseline relay's loop.")
@click.option("--relay-io", type=click.Choice(RELAY_IO), default="multipart",
              show_default=True, help="How the baseline relay moves parts.")
@click.option("--system", "systems", type=click.Choice(queues.SYSTEMS), multiple=True,
              help="Run only this system (repeatable). [default: zq and baseline]")
@click.option("--quick", is_flag=True, help=f"{queues.QUICK_PER_QUEUE} messages per queue.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds one run may take before it counts as failed.")
@click.option("--json", "as_json", is_flag=True, help="Also print one JSON line per system.")
def queues_cmd(per_queue: int | None, quick: bool, systems: tuple[str, ...], as_json: bool,
               **fields: Any) -> None:
    """Many queues with light traffic each: msg/s, broker RSS and CPU, first delivery.

    Message i goes to queue i % Q, published with publish() from many concurrent
    tasks; a few consumer processes share the queues (one client.consume per queue)
    and ack every message. Bodies carry their send time: reports the time from the
    first publish to the first delivery, to every queue having delivered, and each
    queue's first message's publish-to-delivery. The baseline relay gets the same
    traffic, routed by queue name.
    """
    try:
        cfg = queues.QueuesConfig(
            per_queue=per_queue if per_queue is not None else (
                queues.QUICK_PER_QUEUE if quick else queues.DEFAULT_PER_QUEUE), **fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(queues.header(cfg))
    results: dict[str, harness.Result] = {}
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-queues-") as tmp:
        for system in systems or queues.SYSTEMS:
            try:
                results[system] = queues.run(system, cfg, Path(tmp))
            except (harness.RunFailed, ServerError) as exc:
                failed = f"{system}: {exc}"
                break
    if results:
        click.echo(queues.table(results))
    if as_json:
        for line in queues.json_lines(cfg, results):
            click.echo(line)
    _finish(failed, all(r.ok for r in results.values()))


def _finish(failed: str, ok: bool) -> None:
    if failed:
        click.echo(f"run failed: {failed}", err=True)
        sys.exit(1)
    if not ok:
        click.echo("verification failed (see the delivery column)", err=True)
        sys.exit(1)


@main.command("suite")
@click.option("--quick", is_flag=True, help="Small runs: under a minute on 2 cores.")
@click.option("--tiny", is_flag=True,
              help="Tiny runs, to check that everything runs (CI); the figures mean nothing.")
@click.option("--only", "only", multiple=True, type=click.Choice(list(suite.STEPS)),
              help="Run only this step (repeatable).")
@click.option("--skip", "skip", multiple=True, type=click.Choice(list(suite.STEPS)),
              help="Leave this step out (repeatable).")
@click.option("--json", "as_json", is_flag=True,
              help="Also print JSON lines: each scenario's own, then one per summary figure "
                   "(\"scenario\": \"suite\") and a last one with the wall time.")
def suite_cmd(quick: bool, tiny: bool, only: tuple[str, ...], skip: tuple[str, ...],
              as_json: bool) -> None:
    """Every scenario in sequence, then one summary table against the targets.

    \b
    Steps: throughput in memory (batches of 100, prefetch 1,000), durable (sqlite
    FULL), one-message API, 10 queues; latency p99 at 1,000 msg/s in memory and
    durable and at 10,000 msg/s durable; backlog; recovery; fanin; queues; idle.
    Full size takes a few minutes on 2 cores (under 10), --quick under one.
    Each scenario's own table is printed as it finishes; the summary shows zq's
    figure, the baseline's where there is one, the ratio, and the target and
    verdict where the issue sets a target. Exit code 1 if any step failed.
    """
    if quick and tiny:
        raise click.BadParameter("--quick and --tiny exclude each other")
    size = "tiny" if tiny else "quick" if quick else "full"
    steps = [s for s in (only or suite.STEPS) if s not in skip]
    figures, wall = suite.run(size, steps, BAR.out, as_json)
    click.echo("")
    click.echo(suite.summary(figures, size, wall))
    if as_json:
        for line in suite.json_lines(figures, size, wall):
            click.echo(line)
    if not all(f.ok for f in figures):
        click.echo("some steps failed (see RUN FAILED above)", err=True)
        sys.exit(1)


@main.command("relay")
@click.option("--bind", default="tcp://127.0.0.1:*", show_default=True)
@click.option("--mode", type=click.Choice(RELAY_MODES), default="poll", show_default=True)
@click.option("--io", type=click.Choice(RELAY_IO), default="multipart", show_default=True)
def relay_cmd(bind: str, mode: str, io: str) -> None:
    """Run the baseline relay until SIGTERM (prints `RELAY READY <endpoint>`)."""
    sys.exit(relay.serve(bind, mode, io))


def _nothing() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


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
    with tempfile.TemporaryDirectory(prefix="zq-perf-") as tmp, BAR.scope("throughput"):
        for r in range(repeat):
            res: dict[str, harness.Result] = {}
            for system in systems:
                try:
                    with BAR.scope(f"round {r + 1}/{repeat}") if repeat > 1 else _nothing():
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
