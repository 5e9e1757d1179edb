"""The ``zq`` command line: broker, router, publish, consume, stats, queue and dlq operations.

The commands live in :mod:`zq.cli.broker` (broker, a flag per BrokerConfig field),
:mod:`zq.cli.router` (router, the router of a cluster),
:mod:`zq.cli.messages` (publish, consume, stats), :mod:`zq.cli.queues` (the queue
group), :mod:`zq.cli.dlq` (the dlq group) and :mod:`zq.cli.tasks` (worker and the
schedule group); :mod:`zq.cli.common` holds what they share.
"""

from __future__ import annotations

import importlib

import click

from zq import __version__, logs

# Each command's module is imported when the command is used: a broker process loads
# the broker's code, not the client's, the terminal UI's or the router's (less memory,
# a faster start; what a single-file binary on a small host needs).
_COMMANDS = {
    "broker": "zq.cli.broker:broker", "router": "zq.cli.router:router",
    "cluster": "zq.cli.cluster:cluster", "worker": "zq.cli.tasks:worker",
    "publish": "zq.cli.messages:publish", "consume": "zq.cli.messages:consume",
    "stats": "zq.cli.messages:stats",
    "queue": "zq.cli.moves:queue",  # the queue group, with `zq queue move` added to it
    "dlq": "zq.cli.dlq:dlq", "schedule": "zq.cli.tasks:schedule", "keys": "zq.cli.keys:keys",
    "admin": "zq.cli.keys:admin", "node": "zq.cli.node:node", "nodes": "zq.cli.node:nodes",
    "explain": "zq.cli.explain:explain", "top": "zq.cli.top:top",
    "backup": "zq.cli.backup:backup", "topic": "zq.cli.topics:topic",
    "stream": "zq.cli.streams:stream",
}


class _Lazy(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            module, attr = where.split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Lazy, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zq")
@logs.options  # also on the process commands: `zq broker --log-json` works as well
def main() -> None:
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
