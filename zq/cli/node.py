"""``zq node``: run and scale an App's workers on this host (zq.node.noded)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from zq import logs, policies
from zq.broker import run_loop
from zq.cli.common import _clean, _echo_json, _with_client, client_options, curve_options
from zq.client import Client
from zq.errors import ZqError
from zq.node.noded import Node, NodeConfig


@click.command()
@click.argument("app", metavar="MODULE:ATTR")
@click.option("--queue", "-q", "queues", multiple=True, metavar="QUEUE",
              help="A queue of the App to work on (repeat it). [default: all its queues]")
@click.option("--min", "lo", type=click.IntRange(min=0), default=1, show_default=True,
              help="Fewest worker processes.")
@click.option("--max", "hi", type=click.IntRange(min=1), default=4, show_default=True,
              help="Most worker processes.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=8,
              show_default=True, help="Tasks each worker runs at once.")
@click.option("--policy", default="backlog", show_default=True, metavar="NAME",
              help="Scaling policy: backlog (enough workers to drain the backlog in 10 s at "
                   "the measured service time), fixed (always --min), or a plugin of the "
                   "zq.policies entry-point group.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              metavar="SECONDS", help="Seconds between scaling decisions.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="How long the policy must want fewer workers before "
                                      "one is drained and stopped.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0,
              show_default=True, metavar="SECONDS",
              help="A stopping worker's running tasks may finish for this long.")
@click.option("--endpoint", "-e", envvar="ZQ_ENDPOINT", default="", show_envvar=True,
              help="Broker endpoint. [default: the App's]")
@click.option("--name", default="", help="This node's name. [default: node-<host>-<pid>]")
@curve_options
@logs.options
def node(app: str, queues: tuple[str, ...], lo: int, hi: int, concurrency: int, policy: str,
         interval: float, cooldown: float, drain_timeout: float, endpoint: str,
         name: str) -> None:
    """Run MODULE:ATTR's workers on this host: start --min `zq worker` processes,
    restart one that exits or stops heartbeating (with a growing delay if it crashes at
    start), and scale between --min and --max by the scaling policy.

    Prints `ZQ NODE READY <name>` once --min workers are ready; SIGTERM or Ctrl-C drains
    every worker (they finish running tasks and hand back prefetched ones) and exits.

    \b
    Examples:
      zq node tasks:app --min 1 --max 6
      zq node tasks:app --queue emails --policy fixed --min 4
    """
    try:
        cfg = NodeConfig(app, queues, lo, hi, concurrency, policy, interval, cooldown,
                         drain_timeout, endpoint, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if policy not in policies.available("scaling"):
        raise click.BadParameter(f"unknown scaling policy {policy!r}", param_hint="--policy")

    async def main() -> None:
        runner = Node(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.request_stop)

        def ready(node_name: str) -> None:
            sys.stdout.write(f"ZQ NODE READY {node_name}\n")
            sys.stdout.flush()

        await runner.run(ready)

    os.environ.update(logs.environ())  # the workers it starts log as it does
    try:
        run_loop(main())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:ATTR") from None
    except ZqError as exc:  # the broker cannot be reached, say
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the nodes' reports as JSON.")
@client_options
def nodes(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """Show the work nodes (`zq node`) that report to the broker: each node, its workers
    and their states, and its last scaling decision with its reason. A node silent for
    three of its intervals is shown as lost.

    \b
    Examples:
      zq nodes
      zq nodes --json | jq '.[].workers'
    """
    s = _with_client(endpoint, "zq-nodes", Client.stats, timeout=connect_timeout)
    found = s.get("nodes") or {}
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no work node reports to this broker")
        return
    for name, n in sorted(found.items()):
        workers = n.get("workers") or []
        states = ", ".join(f"{w.get('n')}:{w.get('state')}" for w in workers)
        click.echo(f"node {_clean(name)} ({n.get('state')}, seen {n.get('seen_s', 0):.1f} s "
                   f"ago) on {_clean(str(n.get('host', '?')))}: {n.get('app')} on "
                   f"{', '.join(map(str, n.get('queues') or []))}")
        click.echo(f"  workers {len(workers)} (target {n.get('target')}, min {n.get('min')}, "
                   f"max {n.get('max')}, {n.get('restarts', 0)} restart(s)): {states}")
        click.echo(f"  cpu {n.get('cpu_percent', 0)} %, rss {n.get('rss_mb', 0)} MB, "
                   f"load {n.get('load1', 0):.2f}")
        click.echo(f"  last decision ({n.get('policy')}): {_clean(str(n.get('decision')))}")
