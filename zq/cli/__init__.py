"""The ``zq`` command line: broker, router, publish, consume, stats, queue and dlq operations.

The commands live in :mod:`zq.cli.broker` (broker, a flag per BrokerConfig field),
:mod:`zq.cli.router` (router, the router of a cluster),
:mod:`zq.cli.messages` (publish, consume, stats), :mod:`zq.cli.queues` (the queue
group), :mod:`zq.cli.dlq` (the dlq group) and :mod:`zq.cli.tasks` (worker and the
schedule group); :mod:`zq.cli.common` holds what they share.
"""

from __future__ import annotations

import click

from zq import __version__, logs
from zq.cli.backup import backup
from zq.cli.broker import broker
from zq.cli.cluster import cluster
from zq.cli.dlq import dlq
from zq.cli.explain import explain
from zq.cli.keys import admin, keys
from zq.cli.messages import consume, publish, stats
from zq.cli.moves import queue_move as _queue_move  # noqa: F401  (zq queue move)
from zq.cli.node import node, nodes
from zq.cli.queues import queue
from zq.cli.router import router
from zq.cli.tasks import schedule, worker
from zq.cli.top import top


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in (broker, router, cluster, worker, publish, consume, stats, queue, dlq,
                 schedule, keys, admin, node, nodes, explain, top, backup):
    main.add_command(_command)
