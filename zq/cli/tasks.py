"""``zq worker`` and ``zq schedule``: run an App's tasks, manage periodic messages."""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import Any

import click
from click.core import ParameterSource

from zq import logs
from zq.broker import run_loop
from zq.cli.common import (
    _echo_json,
    _finite,
    _headers,
    _with_client,
    client_options,
    connect_timeout_option,
    curve_options,
    json_option,
)
from zq.client import Client
from zq.client.schedules import check_cron, parse_every
from zq.errors import ZqError
from zq.node.config import MissingSetting, SettingError, WorkerConfig, worker_config
from zq.node.launch import build_worker
from zq.node.launch import serve as serve_worker
from zq.node.runner import stuck_threads

# What names each WorkerConfig field in an error message: its flag, or the argument.
_HINTS = {"app": "MODULE:ATTR", "queues": "--queue", "concurrency": "--concurrency",
          "prefetch": "--prefetch", "drain_timeout": "--drain-timeout",
          "endpoint": "--endpoint", "connect_timeout": "--timeout",
          "broadcast_idle_ttl": "--broadcast-idle-ttl", "": "--config"}
# Parameters whose value is a WorkerConfig field of the same name; unless given on the
# command line they are left to worker_config (file, then environment, then default).
_FIELDS = {"app_spec": "app", "queues": "queues", "concurrency": "concurrency",
           "prefetch": "prefetch", "drain_timeout": "drain_timeout", "endpoint": "endpoint",
           "connect_timeout": "connect_timeout", "broadcast_idle_ttl": "broadcast_idle_ttl"}


def _given_flags(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The WorkerConfig fields given on the command line (defaults and click's own
    environment variables are left to worker_config, which layers them)."""
    return {field: params[name] for name, field in _FIELDS.items()
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}


def _config(ctx: click.Context, config_file: str | None, params: dict[str, Any]
            ) -> WorkerConfig:
    try:
        return worker_config(config_file, **_given_flags(ctx, params))
    except MissingSetting:
        arg = next(p for p in ctx.command.params if p.name == "app_spec")
        raise click.MissingParameter(
            ctx=ctx, param=arg, message="Give it, or 'app' in the [worker] table of "
                                        "--config, or $ZQ_WORKER_APP.") from None
    except SettingError as exc:
        raise click.BadParameter(str(exc), param_hint=_HINTS.get(exc.setting)) from None


@click.command()
@click.argument("app_spec", metavar="MODULE:ATTR", required=False)
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
@click.option("--broadcast-idle-ttl", type=click.FloatRange(min=0, min_open=True),
              default=120.0, show_default=True, metavar="SECONDS",
              help="The broker deletes this worker's queue of a broadcast task once it has "
                   "had no consumer this long (the worker died); a clean stop deletes it.")
@click.option("--endpoint", "-e", envvar="ZQ_ENDPOINT", default=None, show_envvar=True,
              help="Broker endpoint. [default: the App's endpoint]")
@curve_options
@connect_timeout_option
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, metavar="FILE",
              help="TOML file with a [worker] table of these settings (app, queues, "
                   "concurrency, prefetch, drain_timeout, endpoint, connect_timeout, "
                   "broadcast_idle_ttl); "
                   "ZQ_WORKER_<SETTING> environment variables override it, flags "
                   "override both.")
@click.option("--path", "paths", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False),
              help="Look for MODULE in DIR too, after the current directory (repeatable; "
                   "PYTHONPATH works as well, also in the single-file binary).")
@logs.options
@click.pass_context
def worker(ctx: click.Context, app_spec: str | None, queues: tuple[str, ...],
           concurrency: int, prefetch: int | None, drain_timeout: float,
           broadcast_idle_ttl: float, endpoint: str | None, connect_timeout: float,
           config_file: str | None, paths: tuple[str, ...]) -> None:
    """Run the tasks of the zq.App MODULE:ATTR until SIGTERM or Ctrl-C.

    MODULE is imported with the current directory first on the import path.
    Once every queue has its credit, prints one line to stdout:
    `zq worker ready: queues Q1, Q2 (concurrency N, prefetch P|auto)`; logs go
    to stderr. On SIGTERM or Ctrl-C it stops taking work, gives back messages
    it has not started (ready again at once, attempt not counted), lets running
    tasks finish for up to --drain-timeout, nacks the rest and exits 0; a
    second signal cuts the wait short. Settings come from --config, then
    ZQ_WORKER_<SETTING> environment variables, then MODULE:ATTR and flags.

    \b
    Examples:
      zq worker myapp.tasks:app
      zq worker myapp.tasks:app --queue emails --queue thumbnails --concurrency 16
      zq worker tasks:app --prefetch 1 --drain-timeout 60
      zq worker tasks:app -e tcp://10.0.0.5:5555
      ZQ_WORKER_CONCURRENCY=32 zq worker --config worker.toml
    """
    cfg = _config(ctx, config_file, dict(ctx.params))
    for folder in reversed(paths):
        sys.path.insert(0, os.path.abspath(folder))
    try:
        w = build_worker(cfg)
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
    logs.notice(f"zq worker stopped: {c['succeeded']} succeeded, {c['failed']} failed, "
                f"{c['released']} released, {c['abandoned']} nacked at the drain timeout",
                "zq.worker", event="worker_stopped", counters=dict(c))
    if stuck_threads():  # plain functions past the drain timeout cannot be stopped
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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


@click.group()
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
@client_options
def schedule_add(name: str, every: str | None, cron: str | None, queue_name: str,
                 body: str | None, body_file: Any, headers: tuple[str, ...], misfire: str,
                 endpoint: str, connect_timeout: float, **opts: Any) -> None:
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
    hdr = _headers(headers)
    options = {k: v for k, v in opts.items() if v is not None}

    next_due = _with_client(endpoint, "zq-schedule", lambda c: c.add_schedule(
        name, queue_name, data, every=every, cron=cron, misfire=misfire, headers=hdr or None,
        **options), timeout=connect_timeout)
    how = f"every {every}" if every is not None else f"cron '{cron}' (UTC)"
    click.echo(f"schedule {name}: {how} to {queue_name}, next due {_local(next_due)}")


@schedule.command("ls")
@json_option
@client_options
def schedule_ls(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """List every schedule with its next due time and how often it fired.

    \b
    Examples:
      zq schedule ls
      zq schedule ls --json | jq '.[].name'
    """
    items = _with_client(endpoint, "zq-schedule", Client.schedules, timeout=connect_timeout)
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
@client_options
def schedule_rm(name: str, endpoint: str, connect_timeout: float) -> None:
    """Remove schedule NAME. Messages it already published stay.

    Exits 1 if there is no schedule NAME.

    \b
    Examples:
      zq schedule rm heartbeat
    """
    if not _with_client(endpoint, "zq-schedule", lambda c: c.remove_schedule(name),
                        timeout=connect_timeout):
        raise click.ClickException(f"no schedule named {name!r}")
    click.echo(f"removed schedule {name}")


