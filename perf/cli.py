"""``python -m perf``: throughput and latency (zq and the baseline), baseline alone,
backlog (a deep sqlite store: memory, drain, restart), lanes (priorities and tenants on
the hot path), delays (delay accuracy under load), uplink (an edge broker forwarding to a
centre), topics (a publish to a topic with several bindings), the relay."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from perf import (
    backlog,
    delays,
    fanin,
    harness,
    hop,
    idle,
    lanes,
    latency,
    plot,
    queues,
    recovery,
    relay,
    report,
    streams,
    suite,
    topics,
    uplink,
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
T = TypeVar("T")

# Options several subcommands share; where their help or default differs, it is an argument.
STORAGE_HELP = "zq's store: memory, sqlite (synchronous=FULL) or sqlite-normal."


def _messages(help: str) -> Callable[[F], F]:
    return click.option("--messages", "-n", type=int, default=None, help=help)


def _producers(default: int = 1) -> Callable[[F], F]:
    return click.option("--producers", "-p", type=int, default=default, show_default=True,
                        help="Producer processes.")


def _consumers(help: str = "Consumer processes.", default: int = 1) -> Callable[[F], F]:
    return click.option("--consumers", "-c", type=int, default=default, show_default=True,
                        help=help)


def _prefetch(help: str = "Consumer credit.", default: int = 1000) -> Callable[[F], F]:
    return click.option("--prefetch", type=int, default=default, show_default=True, help=help)


def _size(help: str, default: int = 100) -> Callable[[F], F]:
    return click.option("--size", "-s", type=int, default=default, show_default=True,
                        help=help)


def _storage(help: str = "zq's store.") -> Callable[[F], F]:
    return click.option("--storage", type=click.Choice(STORAGES), default="memory",
                        show_default=True, help=help)


def _relay_mode() -> Callable[[F], F]:
    return click.option("--relay-mode", type=click.Choice(RELAY_MODES), default="poll",
                        show_default=True, help="The baseline relay's loop.")


def _relay_io(help: str = "How the baseline relay moves parts.") -> Callable[[F], F]:
    return click.option("--relay-io", type=click.Choice(RELAY_IO), default="multipart",
                        show_default=True, help=help)


def _systems(choices: tuple[str, ...]) -> Callable[[F], F]:
    return click.option("--system", "systems", type=click.Choice(choices), multiple=True,
                        help="Run only this system (repeatable). [default: zq and baseline]")


def _fsync() -> Callable[[F], F]:
    return click.option("--fsync", type=click.Choice(["full", "normal"]), default="full",
                        show_default=True, help="The sqlite broker's --fsync.")


def _quick(help: str) -> Callable[[F], F]:
    return click.option("--quick", is_flag=True, help=help)


def _timeout(default: float, help: str) -> Callable[[F], F]:
    return click.option("--timeout", type=float, default=default, show_default=True,
                        help=help)


def _json(help: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def load_options(fn: F) -> F:
    options: list[Callable[[F], F]] = [
        _messages(f"Messages in one run. [default: {DEFAULT_MESSAGES:,}; "
                  f"{QUICK_MESSAGES:,} with --quick]"),
        _producers(),
        _consumers(),
        click.option("--batch", "-b", type=int, default=100, show_default=True,
                     help="Bodies per publish_many (1: one publish() per message)."),
        _prefetch("Consumer credit (per queue with --queues)."),
        click.option("--queues", "-q", type=int, default=1, show_default=True,
                     help="Queues Q: batch j goes to queue j % Q; every consumer consumes "
                          "every queue (one client.consume(queue, prefetch) per queue). "
                          "Baseline: producers send [Q, queue, seq, bodies] and each "
                          "consumer's hello names all Q queues, so the relay routes each "
                          "batch by queue name, round robin among that queue's consumers."),
        _size("Bytes per body (at least 8)."),
        click.option("--window", type=int, default=DEFAULT_WINDOW, show_default=True,
                     help="Unconfirmed messages a producer may have (the SDK's "
                          "publish_window)."),
        click.option("--tasks", type=int, default=0,
                     help="Publishing tasks per producer. [default: 500 for --batch 1, "
                          "else window / batch]"),
        _relay_mode(),
        _relay_io("How the relay moves parts: recv/send_multipart as the broker "
                  "does, or one recv/send per part with plain-int flags."),
        _storage(STORAGE_HELP),
        _quick(f"{QUICK_MESSAGES:,} messages."),
        click.option("--repeat", "-r", type=int, default=1, show_default=True,
                     help="Rounds to run; each round runs every system once."),
        _timeout(300.0, "Seconds one run may take before it counts as failed."),
        _json("Also print one JSON line per result (lines start with '{')."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _or_default(value: Any, quick: bool, quick_value: Any, full_value: Any) -> Any:
    """An option left out (None) takes its --quick or its full-size default."""
    if value is not None:
        return value
    return quick_value if quick else full_value


def _config(cls: Callable[..., T], **fields: Any) -> T:
    """``cls(**fields)``, a ValueError from its checks reported as a bad parameter."""
    try:
        return cls(**fields)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _each_system(mod: Any, cfg: Any, systems: tuple[str, ...], prefix: str
                 ) -> tuple[dict[str, Any], str]:
    """``mod.run`` for each system (all of ``mod.SYSTEMS`` if none named) in one temporary
    folder; the results so far and, if a run failed, "system: error" (the rest skipped)."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for system in systems or getattr(mod, "DEFAULT_SYSTEMS", mod.SYSTEMS):
            try:
                results[system] = mod.run(system, cfg, Path(tmp))
            except (harness.RunFailed, ServerError) as exc:
                return results, f"{system}: {exc}"
    return results, ""


def _once(prefix: str, run: Callable[[Path], T], errors: tuple[type[Exception], ...],
          work_dir: str | None = None) -> T:
    """``run`` in a fresh temporary folder; exit 1 with "run failed" on one of ``errors``."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=work_dir) as tmp:
        try:
            return run(Path(tmp))
        except errors as exc:
            click.echo(f"run failed: {exc!r}", err=True)
            sys.exit(1)


def _finish(failed: str, ok: bool, see: str = " (see the delivery column)") -> None:
    if failed:
        click.echo(f"run failed: {failed}", err=True)
        sys.exit(1)
    if not ok:
        click.echo(f"verification failed{see}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """zq benchmarks against real processes on this machine."""


@main.command()
@load_options
@click.option("--curve", is_flag=True,
              help="Also run zq with CURVE on every connection (zq-curve: keys made for "
                   "the run), and print CURVE / plaintext.")
@click.option("--admin", is_flag=True,
              help="Also run zq with its admin listener on and /metrics and /api/overview "
                   "scraped every second (zq-admin), and print scraped / not.")
def throughput(curve: bool, admin: bool, **opts: Any) -> None:
    """zq's msg/s and the baseline relay's, same traffic, same invocation, and the ratio.

    Starts `zq broker --storage memory` (or --storage sqlite in a fresh data folder)
    on tcp://127.0.0.1:*, runs producer and
    consumer processes with the zq SDK, verifies every message arrived exactly
    once, then does the same through a bare pyzmq ROUTER relay.
    """
    systems = ("zq", *(("zq-curve",) if curve else ()), *(("zq-admin",) if admin else ()),
               "baseline")
    _run(systems, **opts)


@main.command()
@load_options
def router(**opts: Any) -> None:
    """zq direct, zq through one router, and the baseline relay, same traffic and run.

    The router system is a one-broker cluster (`zq broker --cluster`) behind
    `zq router`: producers publish through the router, consumers locate their
    queue through it and consume from the broker directly. Use --batch 1 for one
    message per frame, --storage sqlite for the durable figures.
    """
    _run(("zq", "zq-router", "baseline"), **opts)


@main.command()
@load_options
def ha(**opts: Any) -> None:
    """zq alone, zq replicated (`zq broker --ha`: a primary and its synchronous standby
    on this machine's one disk, with etcd), and the baseline relay, same traffic and run.

    Use --storage sqlite (the replicated pair always is): the issue's figure is
    replicated / single at --batch 100. Needs etcd (apt-get install etcd-server).
    """
    _run(("zq", "zq-ha", "baseline"), **opts)


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
@_size("Bytes per body (at least 16: index and intended send time).")
@_storage(STORAGE_HELP)
@_prefetch()
@_relay_mode()
@_relay_io()
@_systems(latency.SYSTEMS)
@_quick("A 2-second run.")
@_timeout(60.0, "Seconds past the schedule's end before a run counts as failed.")
@_json("Also print one JSON line per system (lines start with '{').")
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
    cfg = _config(latency.LatencyConfig,
                  rate=rate if rate is not None else latency.DEFAULT_RATE,
                  duration=_or_default(duration, quick, latency.QUICK_DURATION,
                                       latency.DEFAULT_DURATION), **fields)
    click.echo(latency.header(cfg))
    if plot_file is not None and not plot.available():
        click.echo(plot.MISSING, err=True)
        plot_file = None
    results, failed = _each_system(latency, cfg, systems, "zq-perf-")
    if results:
        click.echo(latency.table(results))
        if plot_file is not None:
            click.echo(plot.latency_plot(results, latency.header(cfg).splitlines()[0],
                                         Path(plot_file)), err=True)
    if as_json:
        for line in latency.json_lines(cfg, results):
            click.echo(line)
    _finish(failed, all(r.ok for r in results.values()), " (see the delivery lines)")


@main.command("backlog")
@_messages(f"Messages to store. [default: {backlog.DEFAULT_MESSAGES:,}; "
           f"{backlog.QUICK_MESSAGES:,} with --quick]")
@_size("Bytes per body (at least 8).", backlog.DEFAULT_SIZE)
@click.option("--batch", "-b", type=int, default=1000, show_default=True,
              help="Bodies per publish_many.")
@click.option("--tasks", type=int, default=10, show_default=True,
              help="Concurrent publish_many calls.")
@_prefetch("The draining consumer's credit.")
@_fsync()
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
@_quick(f"{backlog.QUICK_MESSAGES:,} messages.")
@_timeout(600.0, "Seconds publishing, and draining, may take.")
@_json("Also print the result as a JSON line.")
def backlog_cmd(messages: int | None, quick: bool, work_dir: str | None, as_json: bool,
                **fields: Any) -> None:
    """A deep sqlite backlog: broker RSS while publishing and draining, restart-to-ready.

    Publishes N messages with no consumer, restarts the broker after SIGKILL and
    after SIGTERM (timing process start to `ZQ READY`, and the same on an empty
    store), then drains everything with one consumer, checking exactly-once
    delivery. RSS is VmRSS from /proc/<pid>/status, sampled every 20 ms.
    """
    cfg = _config(backlog.BacklogConfig, messages=_or_default(
        messages, quick, backlog.QUICK_MESSAGES, backlog.DEFAULT_MESSAGES), **fields)
    click.echo(backlog.header(cfg))
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)

    def run(tmp: Path) -> backlog.BacklogResult:
        with BAR.scope("backlog"):
            return backlog.run(cfg, tmp, say=BAR.say)

    res = _once("zq-backlog-", run, (ServerError, TimeoutError, OSError), work_dir)
    click.echo(backlog.table(res))
    if as_json:
        click.echo(backlog.json_line(cfg, res))
    _finish("", res.ok, " (see the delivery line)")


@main.command("recovery")
@_messages(f"Messages to store. [default: {recovery.DEFAULT_MESSAGES:,}; "
           f"{recovery.QUICK_MESSAGES:,} with --quick]")
@_size("Bytes per body (at least 8).", recovery.DEFAULT_SIZE)
@click.option("--rounds", type=int, default=None,
              help=f"SIGKILL and SIGTERM restarts to time, each. "
                   f"[default: {recovery.DEFAULT_ROUNDS}; {recovery.QUICK_ROUNDS} with --quick]")
@_fsync()
@_quick(f"{recovery.QUICK_MESSAGES:,} messages, {recovery.QUICK_ROUNDS} round.")
@_json("Also print the result as a JSON line.")
def recovery_cmd(messages: int | None, rounds: int | None, quick: bool, as_json: bool,
                 **fields: Any) -> None:
    """Start-to-ready with N messages stored, after a SIGKILL and after a SIGTERM stop.

    Stores N messages (sqlite, no consumer), then repeats: SIGKILL the broker and
    start it again, SIGTERM it and start it again; each start is timed from process
    start to the `ZQ READY` line, and each time the broker must report all N
    messages. Also times the first start, on the empty store.
    """
    cfg = _config(
        recovery.RecoveryConfig,
        messages=_or_default(messages, quick, recovery.QUICK_MESSAGES, recovery.DEFAULT_MESSAGES),
        rounds=_or_default(rounds, quick, recovery.QUICK_ROUNDS, recovery.DEFAULT_ROUNDS),
        **fields)
    click.echo(recovery.header(cfg))
    res = _once("zq-recovery-", lambda tmp: recovery.run(cfg, tmp),
                (ServerError, TimeoutError, OSError))
    click.echo(recovery.table(res))
    if as_json:
        click.echo(recovery.json_line(cfg, res))
    _finish("", res.ok, "")


@main.command("idle")
@click.option("--storage", "storages", type=click.Choice(idle.STORAGES), multiple=True,
              help="Only this storage (repeatable). [default: memory and sqlite]")
@click.option("--repeat", "-r", type=int, default=None,
              help=f"Starts per storage. [default: {idle.DEFAULT_REPEAT}; "
                   f"{idle.QUICK_REPEAT} with --quick]")
@click.option("--settle", type=float, default=idle.DEFAULT_SETTLE, show_default=True,
              help="Seconds between the ready line and reading RSS.")
@_quick(f"{idle.QUICK_REPEAT} starts per storage.")
@_json("Also print one JSON line per storage.")
def idle_cmd(storages: tuple[str, ...], repeat: int | None, settle: float, quick: bool,
             as_json: bool) -> None:
    """An idle broker's RSS, and start-to-ready on an empty store.

    Starts `zq broker` on an empty store several times per storage, timing process
    start to `ZQ READY`, and reads VmRSS after --settle seconds with no client.
    Targets: RSS <= 50 MB, start to ready <= 0.5 s.
    """
    cfg = _config(idle.IdleConfig, storages=storages or idle.STORAGES,
                  repeat=_or_default(repeat, quick, idle.QUICK_REPEAT, idle.DEFAULT_REPEAT),
                  settle=settle)
    click.echo(idle.header(cfg))
    res = _once("zq-idle-", lambda tmp: idle.run(cfg, tmp), (ServerError, OSError))
    click.echo(idle.table(res))
    if as_json:
        for line in idle.json_lines(cfg, res):
            click.echo(line)
    _finish("", all(r.ok for r in res.values()), "")


@main.command("fanin")
@click.option("--clients", type=int, default=fanin.DEFAULT_CLIENTS, show_default=True,
              help="Producers in all, one connection each.")
@click.option("--processes", type=int, default=fanin.DEFAULT_PROCESSES, show_default=True,
              help="OS processes the producers are spread over.")
@click.option("--per-client", type=int, default=None,
              help=f"Messages each producer publishes, one publish() at a time. "
                   f"[default: {fanin.DEFAULT_PER_CLIENT}; {fanin.QUICK_PER_CLIENT} with "
                   f"--quick]")
@_size("Bytes per body (at least 8).")
@_consumers()
@_prefetch()
@_storage()
@_relay_mode()
@_relay_io()
@_systems(fanin.SYSTEMS)
@_quick(f"{fanin.QUICK_PER_CLIENT} messages per producer.")
@_timeout(300.0, "Seconds publishing may take before the run counts as failed.")
@_json("Also print one JSON line per system.")
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
    cfg = _config(fanin.FaninConfig, per_client=_or_default(
        per_client, quick, fanin.QUICK_PER_CLIENT, fanin.DEFAULT_PER_CLIENT), **fields)
    click.echo(fanin.header(cfg))
    results, failed = _each_system(fanin, cfg, systems, "zq-fanin-")
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
@_producers(2)
@_consumers("Consumer processes; consumer c takes queues c, c + C, ...", 4)
@_prefetch("Credit per queue (one client.consume(queue, prefetch) each).", 10)
@_size("Bytes per body (at least 16: index and send time).")
@click.option("--tasks", type=int, default=500, show_default=True,
              help="Concurrent publish() calls per producer (the baseline: messages in "
                   "flight per producer).")
@_storage()
@_relay_mode()
@_relay_io()
@_systems(queues.SYSTEMS)
@_quick(f"{queues.QUICK_PER_QUEUE} messages per queue.")
@_timeout(300.0, "Seconds one run may take before it counts as failed.")
@_json("Also print one JSON line per system.")
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
    cfg = _config(queues.QueuesConfig, per_queue=_or_default(
        per_queue, quick, queues.QUICK_PER_QUEUE, queues.DEFAULT_PER_QUEUE), **fields)
    click.echo(queues.header(cfg))
    results, failed = _each_system(queues, cfg, systems, "zq-queues-")
    if results:
        click.echo(queues.table(results))
    if as_json:
        for line in queues.json_lines(cfg, results):
            click.echo(line)
    _finish(failed, all(r.ok for r in results.values()))


@main.command("lanes")
@load_options
@click.option("--tiny", is_flag=True,
              help=f"{lanes.TINY_MESSAGES:,} messages (CI: checks that it runs).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the priority run's random priorities.")
@click.option("--system", "systems", type=click.Choice(lanes.SYSTEMS), multiple=True,
              help="Run only this one (repeatable). [default: plain, priority, tenant and "
                   "baseline]")
def lanes_cmd(messages: int | None, quick: bool, tiny: bool, repeat: int, as_json: bool,
              systems: tuple[str, ...], **fields: Any) -> None:
    """The same traffic plain, with priorities, with tenants, and through the baseline.

    Four throughput runs, each on a fresh broker and checked for exactly-once
    delivery: zq with no publish options; zq with a random priority 0-9 on every
    publish_many batch; zq with 4 tenants weighted 1, 2, 3, 4 (the producers declare
    the queue with the weights), batch j from tenant j % 4; the bare relay. Prints
    msg/s, each zq run's ratio to the plain run and each run's ratio to the baseline
    of the same round: what lanes cost on the hot path.
    """
    if repeat < 1:
        raise click.BadParameter("--repeat must be >= 1")
    if quick and tiny:
        raise click.BadParameter("--quick and --tiny exclude each other")
    n = messages if messages is not None else (
        lanes.TINY_MESSAGES if tiny else QUICK_MESSAGES if quick else DEFAULT_MESSAGES)
    cfg = _config(LoadConfig, messages=n, **fields)
    click.echo(lanes.header(cfg))
    rounds: list[dict[str, harness.Result]] = []
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-lanes-") as tmp, BAR.scope("lanes"):
        for r in range(repeat):
            res: dict[str, harness.Result] = {}
            for system in systems or lanes.SYSTEMS:
                try:
                    with BAR.scope(f"round {r + 1}/{repeat} {system}"):
                        res[system] = lanes.run(system, cfg, Path(tmp))
                except (harness.RunFailed, ServerError) as exc:
                    failed = f"{system}: {exc}"
                    break
            if res:
                rounds.append(res)
            if failed:
                break
    if rounds:
        click.echo(lanes.table(rounds))
    if as_json:
        for line in lanes.json_lines(cfg, rounds):
            click.echo(line)
    _finish(failed, all(r.ok for res in rounds for r in res.values()))


@main.command("delays")
@_messages(f"Messages, each with its own delay. [default: {delays.DEFAULT_MESSAGES:,}; "
           f"{delays.QUICK_MESSAGES:,} with --quick; {delays.TINY_MESSAGES:,} with --tiny]")
@click.option("--max-delay", "-D", type=float, default=None,
              help=f"Seconds: each delay is uniform in [0, D). [default: "
                   f"{delays.DEFAULT_MAX_DELAY:g}; {delays.TINY_MAX_DELAY:g} with --tiny]")
@click.option("--rate", type=float, default=delays.DEFAULT_RATE, show_default=True,
              help="Messages published per second, on a fixed schedule.")
@_size("Bytes per body (at least 16: index and due time).")
@_prefetch("The consumer's credit.", delays.DEFAULT_PREFETCH)
@_storage(STORAGE_HELP)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the delays.")
@_quick(f"{delays.QUICK_MESSAGES:,} messages.")
@click.option("--tiny", is_flag=True,
              help=f"{delays.TINY_MESSAGES:,} messages, delays under "
                   f"{delays.TINY_MAX_DELAY:g} s (CI: checks that it runs).")
@_timeout(60.0, "Seconds past the last due time before the run counts as failed.")
@_json("Also print the result as a JSON line.")
def delays_cmd(messages: int | None, max_delay: float | None, quick: bool, tiny: bool,
               as_json: bool, **fields: Any) -> None:
    """Delay accuracy under load: lateness of delayed messages, and early arrivals.

    One producer publishes N messages at a steady rate, one publish(delay=d) each,
    d uniform in [0, D); the due time is time.monotonic() just before the publish
    call plus d, carried in the body. One consumer (separate process; CLOCK_MONOTONIC
    is one clock for the machine) acks each and records lateness = arrival - due.
    Prints p50, p90, p99, p99.9, max and the count of early arrivals; an early
    arrival, or a message lost or duplicated, makes the exit code 1. Target: p99
    lateness <= 50 ms and no early arrival. No baseline: the relay has no delays.
    """
    if quick and tiny:
        raise click.BadParameter("--quick and --tiny exclude each other")
    n = messages if messages is not None else (
        delays.TINY_MESSAGES if tiny else delays.QUICK_MESSAGES if quick
        else delays.DEFAULT_MESSAGES)
    d = max_delay if max_delay is not None else (
        delays.TINY_MAX_DELAY if tiny else delays.DEFAULT_MAX_DELAY)
    cfg = _config(delays.DelaysConfig, messages=n, max_delay=d, **fields)
    click.echo(delays.header(cfg))
    results, failed = _each_system(delays, cfg, (), "zq-delays-")
    if results:
        click.echo(delays.table(results))
    if as_json:
        for line in delays.json_lines(cfg, results):
            click.echo(line)
    _finish(failed, all(r.ok for r in results.values()), " (see the delivery line)")


@main.command("uplink")
@_messages(f"Messages per measurement. [default: {uplink.DEFAULT_MESSAGES:,}; "
           f"{uplink.QUICK_MESSAGES:,} with --quick]")
@click.option("--rounds", "-r", type=int, default=None,
              help=f"Rounds, each with a direct and an uplink measurement (every other "
                   f"round in reverse order). [default: {uplink.DEFAULT_ROUNDS}; "
                   f"{uplink.QUICK_ROUNDS} with --quick]")
@_size("Bytes per body (at least 8).")
@click.option("--batch", "-b", type=int, default=100, show_default=True,
              help="Bodies per publish_many (at the edge too: one frame there is one run "
                   "the uplink forwards).")
@click.option("--window", type=int, default=DEFAULT_WINDOW, show_default=True,
              help="The producers' publish_window; window / batch concurrent tasks.")
@click.option("--fsync", type=click.Choice(["full", "normal"]), default="full",
              show_default=True, help="--fsync of both sqlite brokers, centre and edge.")
@click.option("--e2e", is_flag=True,
              help="Also publish N at the edge with the link up, timed from the first "
                   "publish to N stored at the centre.")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the logs, the data folders and uplink.json (kept). "
                   "[default: a new zq-uplink-* folder in the temporary folder]")
@click.option("--keep-data", is_flag=True,
              help="Keep both brokers' data folders (else removed; logs and JSON stay).")
@click.option("--profile", is_flag=True,
              help="Record the edge broker with py-spy (every thread, idle included, in "
                   "time order) during each uplink drain, into "
                   "edge-uplink-r<N>.speedscope.json in the folder. Sampling slows the "
                   "edge: the figures are then not the uplink's.")
@_quick(f"{uplink.QUICK_MESSAGES:,} messages, {uplink.QUICK_ROUNDS} rounds.")
@_timeout(300.0, "Seconds one measurement may take before the run counts as failed.")
@_json("Also print the result as a JSON line.")
def uplink_cmd(messages: int | None, rounds: int | None, quick: bool, work_dir: str | None,
               keep_data: bool, as_json: bool, **fields: Any) -> None:
    """An edge broker's uplink against a direct publish to the centre, in one run.

    The centre is a sqlite broker behind `zq router`; the edge a sqlite broker with
    `--uplink <router> --uplink-queues up.#`. Each round times one producer
    publishing N messages to the centre through the router (first publish to last
    confirm), and the edge forwarding N: the queue paused at the edge, N published
    there, then resumed and timed until the centre stores all N (its count read
    every 10 ms; then the edge's uplink must drain to nothing and the centre hold
    exactly N). Prints msg/s of each, the ratio, the medians, and PASS or FAIL for a
    median ratio >= 70 % (issue 14; a FAIL does not change the exit code, a failed
    or miscounted run does). Writes uplink.json next to the logs.
    """
    n = _or_default(messages, quick, uplink.QUICK_MESSAGES, uplink.DEFAULT_MESSAGES)
    r = _or_default(rounds, quick, uplink.QUICK_ROUNDS, uplink.DEFAULT_ROUNDS)
    cfg = _config(uplink.UplinkConfig, messages=n, rounds=r, **fields)
    click.echo(uplink.header(cfg))
    if work_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="zq-uplink-"))
    else:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
    try:
        with BAR.scope("uplink"):
            res = uplink.run(cfg, folder, say=BAR.say)
    except (ServerError, OSError) as exc:
        click.echo(f"run failed: {exc!r} (logs in {folder})", err=True)
        sys.exit(1)
    finally:
        if not keep_data:
            for sub in ("centre-data", "edge-data"):
                shutil.rmtree(folder / sub, ignore_errors=True)
    line = uplink.json_line(cfg, res)
    (folder / "uplink.json").write_text(line + "\n", encoding="utf-8")
    click.echo(uplink.table(res, cfg.e2e))
    if as_json:
        click.echo(line)
    _finish("; ".join(res.problems), True)


@main.command("topics")
@_messages(f"Messages per measurement. [default: {topics.DEFAULT_MESSAGES:,}; "
           f"{topics.QUICK_MESSAGES:,} with --quick]")
@click.option("--rounds", "-r", type=int, default=None,
              help=f"Rounds, each measuring every binding count, the plain queue and the "
                   f"relay (every other round in reverse order). [default: "
                   f"{topics.DEFAULT_ROUNDS}; {topics.QUICK_ROUNDS} with --quick]")
@click.option("--bindings", "-k", "bindings", type=int, multiple=True,
              help="Queues bound to the topic (repeatable). [default: "
                   + ", ".join(map(str, topics.DEFAULT_BINDINGS)) + "]")
@_size("Bytes per body (at least 8).")
@click.option("--batch", "-b", type=int, default=100, show_default=True,
              help="Bodies per publish_many.")
@click.option("--window", type=int, default=DEFAULT_WINDOW, show_default=True,
              help="The producer's publish_window; window / batch concurrent tasks.")
@_fsync()
@click.option("--no-relay", "no_relay", is_flag=True,
              help="Leave out the bare relay's measurement.")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the logs, the data folders and topics.json (kept). "
                   "[default: a new zq-topics-* folder in the temporary folder]")
@click.option("--keep-data", is_flag=True,
              help="Keep every broker's data folder (else removed once measured).")
@_quick(f"{topics.QUICK_MESSAGES:,} messages, {topics.QUICK_ROUNDS} round(s).")
@_timeout(300.0, "Seconds one measurement may take before the run counts as failed.")
@_json("Also print the result as a JSON line.")
def topics_cmd(messages: int | None, rounds: int | None, bindings: tuple[int, ...],
               no_relay: bool, quick: bool, work_dir: str | None, as_json: bool,
               **fields: Any) -> None:
    """A publish to a topic with 1, 5 and 20 bindings against a plain queue (issue 17).

    Each measurement runs on a fresh sqlite broker and data folder: k queues bound
    to a topic (every key), one producer publishing N bodies to it with publish_many
    (first publish to last confirm: msg/s, and copies/s = msg/s x k); then SIGTERM,
    and the database (zq.db and any -wal, less an empty one's) per message and per
    copy. The rows are counted with sqlite3: N x k messages and, for k > 1, N bodies
    stored once; a miscount fails the run. The baselines, in the same rounds: the same
    N to one plain queue, and the bare relay of `perf throughput` (publish to
    delivery, nothing stored). Prints medians; writes topics.json next to the logs.
    """
    n = _or_default(messages, quick, topics.QUICK_MESSAGES, topics.DEFAULT_MESSAGES)
    r = _or_default(rounds, quick, topics.QUICK_ROUNDS, topics.DEFAULT_ROUNDS)
    cfg = _config(topics.TopicsConfig, messages=n, rounds=r,
                  bindings=bindings or topics.DEFAULT_BINDINGS, relay=not no_relay, **fields)
    click.echo(topics.header(cfg))
    if work_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="zq-topics-"))
    else:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
    with BAR.scope("topics"):
        res = topics.run(cfg, folder, say=BAR.say)
    line = topics.json_line(cfg, res)
    (folder / "topics.json").write_text(line + "\n", encoding="utf-8")
    click.echo(topics.table(res, cfg))
    if as_json:
        click.echo(line)
    _finish("; ".join(res.problems), True)


@main.command("streams")
@_messages(f"Messages per measurement. [default: {streams.DEFAULT_MESSAGES:,}; "
           f"{streams.QUICK_MESSAGES:,} with --quick]")
@click.option("--rounds", "-r", type=int, default=None,
              help=f"Rounds of throughput measurements. [default: {streams.DEFAULT_ROUNDS}; "
                   f"{streams.QUICK_ROUNDS} with --quick]")
@_size("Bytes per body (at least 16).")
@click.option("--batch", "-b", type=int, default=100, show_default=True,
              help="Bodies per publish_many.")
@click.option("--window", type=int, default=DEFAULT_WINDOW, show_default=True,
              help="The producer's publish_window; window / batch concurrent tasks.")
@click.option("--prefetch", type=int, default=1000, show_default=True,
              help="Each reader's credit.")
@click.option("--rate", type=int, default=1000, show_default=True,
              help="Latency: messages per second, one at a time, on a fixed schedule.")
@click.option("--seconds", type=float, default=10.0, show_default=True,
              help="Latency: how long to publish at that rate.")
@_fsync()
@click.option("--no-relay", "no_relay", is_flag=True,
              help="Leave out the bare relay's measurement.")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the logs and streams.json (kept). [default: a new "
                   "zq-streams-* folder in the temporary folder]")
@_quick(f"{streams.QUICK_MESSAGES:,} messages, {streams.QUICK_ROUNDS} round(s).")
@_timeout(300.0, "Seconds one measurement may take before the run counts as failed.")
@_json("Also print the result as a JSON line.")
def streams_cmd(messages: int | None, rounds: int | None, no_relay: bool, quick: bool,
                work_dir: str | None, as_json: bool, **fields: Any) -> None:
    """A stream's appends and its groups' reads against a plain queue, and publish to
    deliver latency through a stream at a fixed rate (issue 17).

    Each round, on a fresh sqlite broker: N bodies published to a queue (publish_many,
    first publish to last confirm) and drained by one consumer; the same N appended to
    a stream, read by one group from first, then by three groups at once (each group
    must get every offset once, in order); and the bare relay of `perf throughput`.
    Then, on fresh brokers, open-loop latency at --rate msg/s for --seconds through a
    stream (a group from next) and through a queue: p50, p99, p99.9, max. Prints
    medians; writes streams.json next to the logs.
    """
    n = _or_default(messages, quick, streams.QUICK_MESSAGES, streams.DEFAULT_MESSAGES)
    r = _or_default(rounds, quick, streams.QUICK_ROUNDS, streams.DEFAULT_ROUNDS)
    cfg = _config(streams.StreamsConfig, messages=n, rounds=r, relay=not no_relay, **fields)
    click.echo(streams.header(cfg))
    if work_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="zq-streams-"))
    else:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
    with BAR.scope("streams"):
        res = streams.run(cfg, folder, say=BAR.say)
    line = streams.json_line(cfg, res)
    (folder / "streams.json").write_text(line + "\n", encoding="utf-8")
    click.echo(streams.table(res, cfg))
    if as_json:
        click.echo(line)
    _finish("; ".join(res.problems), True)


@main.command("suite")
@_quick("Small runs: under a minute on 2 cores.")
@click.option("--tiny", is_flag=True,
              help="Tiny runs, to check that everything runs (CI); the figures mean nothing.")
@click.option("--only", "only", multiple=True, type=click.Choice(list(suite.STEPS)),
              help="Run only this step (repeatable).")
@click.option("--skip", "skip", multiple=True, type=click.Choice(list(suite.STEPS)),
              help="Leave this step out (repeatable).")
@_json("Also print JSON lines: each scenario's own, then one per summary figure "
       "(\"scenario\": \"suite\") and a last one with the wall time.")
def suite_cmd(quick: bool, tiny: bool, only: tuple[str, ...], skip: tuple[str, ...],
              as_json: bool) -> None:
    """Every scenario in sequence, then one summary table against the targets.

    \b
    Steps: throughput in memory (batches of 100, prefetch 1,000), durable (sqlite
    FULL), one-message API, 10 queues; latency p99 at 1,000 msg/s in memory and
    durable and at 10,000 msg/s durable; backlog; recovery; fanin; queues; lanes
    (plain, priority, tenant, baseline; memory); delay lateness in memory and
    durable; idle.
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


@main.command("hop")
@click.option("--bind", default="tcp://127.0.0.1:*", show_default=True)
@click.option("--backend", required=True, help="The zq broker's endpoint.")
def hop_cmd(bind: str, backend: str) -> None:
    """Run the thinnest Python hop in front of a broker until SIGTERM (prints `HOP READY
    <endpoint>`): what one more process on the path costs (latency --system zq-hop)."""
    sys.exit(hop.serve(bind, backend))


def _nothing() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def _run(systems: tuple[str, ...], *, messages: int | None, quick: bool, repeat: int,
         as_json: bool, **fields: Any) -> None:
    if repeat < 1:
        raise click.BadParameter("--repeat must be >= 1")
    cfg = _config(LoadConfig, messages=_or_default(messages, quick, QUICK_MESSAGES,
                                                   DEFAULT_MESSAGES), **fields)
    click.echo(report.header(cfg))
    rounds: list[dict[str, harness.Result]] = []
    failed = ""
    with tempfile.TemporaryDirectory(prefix="zq-perf-") as tmp, BAR.scope("throughput"):
        for r in range(repeat):
            res: dict[str, harness.Result] = {}
            # Every other round runs the systems in reverse: a machine that slows down
            # (or warms up) during a round does not always favour the same system.
            for system in systems if r % 2 == 0 else tuple(reversed(systems)):
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
    _finish(failed, all(r.ok for res in rounds for r in res.values()))
