"""``zq router``: run the router of a cluster (PROTOCOL.md section 17)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from zq import logs
from zq.admin.settings import HELP as ADMIN_HELP
from zq.cluster.config import load
from zq.router.config import RouterConfig
from zq.router.process import serve
from zq.security.settings import HELP

F = TypeVar("F", bound=Callable[..., Any])


_SECURITY = ("max_frame", "curve_secret", "authorized_keys", "permissions", "server_key",
             "insecure", "max_sessions", "max_sessions_per_key", "hello_timeout",
             "malformed_budget", "admin_bind", "admin_token")
_HELP = {**HELP, **ADMIN_HELP, "max_frame": "Largest message from a client, all parts together; a "
                              "larger one gets FRAME_TOO_LARGE (so does one larger than the "
                              "max_frame of the broker it is for).",
         "server_key": "With --curve-secret: the brokers' public key file, for the "
                               "router's links. [default: the router's own public key: "
                               "the cluster shares one key pair]"}


def security_options(fn: F) -> F:
    """A flag for each security setting of RouterConfig (the broker's have the same)."""
    defaults = {f.name: f.default for f in dataclasses.fields(RouterConfig)}
    for name in reversed(_SECURITY):
        default = defaults[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            fn = click.option(flag, is_flag=True, help=_HELP[name])(fn)
        else:
            fn = click.option(flag, type=type(default), default=default,
                              show_default=bool(default), help=_HELP[name])(fn)
    return fn


@click.command()
@click.option("--bind", "-b", required=True, metavar="ENDPOINT",
              help="Endpoint to bind for clients (tcp://127.0.0.1:* picks a free port).")
@click.option("--cluster", "cluster_file", required=True, metavar="FILE",
              help="The cluster file (cluster.toml): the brokers to link to and where "
                   "new queue names go. SIGHUP reads it again.")
@click.option("--id", "router_id", default=None, metavar="NAME",
              help="This router's id, shown to brokers and in STATS. "
                   "[default: router-<hostname>-<pid>]")
@click.option("--heartbeat", type=float, default=1.0, show_default=True, metavar="S",
              help="Seconds between heartbeats, to clients and on links.")
@click.option("--liveness", type=int, default=3, show_default=True, metavar="N",
              help="Heartbeats a client or a broker may miss before it is lost.")
@click.option("--ha", default="", metavar="etcd://HOST:PORT",
              help="Follow replicated brokers (zq broker --ha) in this etcd: each link goes "
                   "to its broker id's current primary. [default: none]")
@click.option("--ha-cluster", default="zq", show_default=True, metavar="NAME",
              help="With --ha: the name the brokers' etcd keys live under (their "
                   "--ha-cluster).")
@security_options
@logs.options
def router(bind: str, cluster_file: str, router_id: str | None, heartbeat: float,
           liveness: int, ha: str, ha_cluster: str, **security: Any) -> None:
    """Run a cluster router until SIGTERM or Ctrl-C.

    Clients connect to it as to a broker. It forwards each publish, and each queue
    operation, to the broker that holds the queue (or that the cluster file places
    a new queue on), and answers clients that consume with where to go (MOVED).

    Prints exactly one line to stdout once it is bound and has read the cluster
    file, `ZQ READY <endpoint>`, with the real port; logs go to stderr. SIGHUP
    reads the cluster file again: a newer version of it replaces the current one.

    \b
    Example:
      zq router --bind 'tcp://127.0.0.1:5600' --cluster cluster.toml --id r1
    """
    try:
        cfg = RouterConfig(bind=bind, cluster=cluster_file, id=router_id or "",
                           heartbeat=heartbeat, liveness=liveness, ha=ha,
                           ha_cluster=ha_cluster, **security)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        cluster = load(cluster_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--cluster'") from None
    sys.exit(serve(cfg, cluster))
