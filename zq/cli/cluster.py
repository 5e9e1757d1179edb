"""``zq cluster``: status, check, reload and rebalance of a cluster described by its
cluster file.

Each command reads the cluster file (``--cluster``, or ZQ_CLUSTER) and asks every
broker it names, and every router given with ``--router``, directly: a node that
does not answer within ``--timeout`` is reported down, never waited for.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from zq.cli.common import F, _clean, _echo_json, _run_client, curve_options
from zq.client import Client
from zq.cluster.config import ClusterConfig, load
from zq.cluster.rebalance import Plan, plan
from zq.errors import ZqError

_cluster_option = click.option(
    "--cluster", "cluster_file", envvar="ZQ_CLUSTER", required=True, show_envvar=True,
    type=click.Path(exists=True, dir_okay=False), help="The cluster file (cluster.toml).")


def cluster_option(fn: F) -> F:
    """``--cluster``, and the CURVE options for connecting to its nodes."""
    return _cluster_option(curve_options(fn))
router_option = click.option(
    "--router", "routers", multiple=True, metavar="ENDPOINT",
    help="A router to include (repeat for each).")
timeout_option = click.option(
    "--timeout", default=2.0, show_default=True, type=click.FloatRange(0, 3600, min_open=True),
    help="Seconds to wait for each node.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
ha_option = click.option(
    "--ha", default="", envvar="ZQ_HA", show_envvar=True, metavar="etcd://HOST:PORT",
    help="The etcd of replicated brokers (zq broker --ha): each broker id is asked at its "
         "primary, and its primary, standby, term, sync state and lag are shown.")
ha_cluster_option = click.option(
    "--ha-cluster", default="zq", show_default=True, metavar="NAME",
    help="With --ha: the name the brokers' etcd keys live under.")


def _load(path: str) -> ClusterConfig:
    try:
        return load(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


async def _ask(endpoint: str, wait: float, what: str, args: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """One node's STATS (``what`` "stats") or MANAGE reply, or ``{"error": ...}``."""
    try:
        async with asyncio.timeout(wait * 2):
            async with Client(endpoint, name="zq-cluster", connect_timeout=wait) as c:
                if what == "stats":
                    return await c.stats()
                if what == "queues":
                    return {"queues": await c.queues()}
                return await c.conn.manage(what, args or {})
    except (ZqError, TimeoutError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def _gather(cfg: ClusterConfig, routers: tuple[str, ...], wait: float, what: str,
                  args: dict[str, Any] | None = None) -> dict[str, Any]:
    nodes = {b.id: b.endpoint for b in cfg.brokers}
    nodes.update({f"router {r}": r for r in routers})
    replies = await asyncio.gather(*(_ask(ep, wait, what, args) for ep in nodes.values()))
    return dict(zip(nodes, replies, strict=True))


@click.group()
def cluster() -> None:
    """Operate a cluster: brokers from its cluster file, routers given with --router."""


@cluster.command()
@cluster_option
@router_option
@timeout_option
@json_option
@ha_option
@ha_cluster_option
def status(cluster_file: str, routers: tuple[str, ...], timeout: float, as_json: bool,
           ha: str, ha_cluster: str) -> None:
    """Brokers up or down, cluster file versions, queues per broker, routers' links;
    with --ha, each replicated broker's primary, standby, term, sync state and lag."""
    cfg = _load(cluster_file)
    replicas: dict[str, dict[str, Any]] = {}
    if ha:
        replicas = _run_client(lambda: _ha_snapshot(ha, ha_cluster, timeout))
        cfg = _with_primaries(cfg, replicas)
    got = _run_client(lambda: _gather(cfg, routers, timeout, "stats"))
    if as_json:
        _echo_json({"cluster_id": cfg.cluster_id, "version": cfg.version, "nodes": got,
                    **({"ha": replicas} if ha else {})})
        return
    click.echo(f"cluster {cfg.cluster_id}, file version {cfg.version}")
    for b in cfg.brokers:
        s = got[b.id]
        if "error" in s:
            click.echo(f"  broker {b.id:<12} {b.endpoint:<28} DOWN  {_clean(s['error'])}")
        else:
            c = s.get("cluster") or {}
            click.echo(f"  broker {b.id:<12} {b.endpoint:<28} up    version "
                       f"{c.get('version', '?')}  queues {s.get('queues_total', 0)}  "
                       f"sessions {s.get('peers_total', 0)}  links {c.get('links', 0)}  "
                       f"{b.state}")
        if ha:
            click.echo("    " + ha_line(replicas.get(b.id, {}), s.get("ha")))
    for r in routers:
        _router_lines(r, got[f"router {r}"])


async def _ha_snapshot(url: str, name: str, wait: float) -> dict[str, dict[str, Any]]:
    try:
        import aetcd

        from zq.config import etcd_address
        from zq.ha.directory import snapshot
    except ImportError as exc:
        raise click.ClickException(f"--ha needs the HA extra: pip install 'zq[ha]' ({exc})"
                                   ) from None
    try:
        host, port = etcd_address(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--ha'") from None
    client = aetcd.Client(host=host, port=port, timeout=wait)
    try:
        return await snapshot(client, name)
    except (aetcd.ClientError, TimeoutError) as exc:
        raise click.ClickException(f"etcd at {url} did not answer: {exc!r}") from None
    finally:
        await client.close()


def _with_primaries(cfg: ClusterConfig, replicas: dict[str, dict[str, Any]]) -> ClusterConfig:
    from zq.ha.directory import with_leaders

    leaders = {bid: str(r["leader"]["endpoint"]) for bid, r in replicas.items()
               if isinstance(r.get("leader", {}).get("endpoint"), str)}
    try:
        return with_leaders(cfg, leaders)
    except ValueError as exc:
        raise click.ClickException(f"the primaries in etcd do not fit the cluster file: "
                                   f"{exc}") from None


def ha_line(etcd: dict[str, Any], stats: dict[str, Any] | None) -> str:
    """One replicated broker id, as etcd and its primary's STATS say."""
    leader, sync = etcd.get("leader"), etcd.get("sync") or {}
    if leader is None:
        return "ha: NO PRIMARY" + (f" (sync names {sync.get('standby')}, last primary "
                                   f"{sync.get('primary')})" if sync else " (not replicated?)")
    standby = sync.get("standby")
    words = [f"ha: primary {leader['node']} term {leader['term']}",
             f"standby {standby} in sync" if standby else "no standby in sync (confirms alone)"]
    if stats:
        lag = stats.get("lag")
        words.append(f"mode {stats.get('mode')}")
        words.append(f"lag {lag} batch(es)" if lag is not None else "standby not connected")
    return ", ".join(words)


def _router_lines(endpoint: str, s: dict[str, Any]) -> None:
    if "error" in s:
        click.echo(f"  router {endpoint:<41} DOWN  {_clean(s['error'])}")
        return
    c = s.get("cluster") or {}
    click.echo(f"  router {s.get('router', '?')} at {endpoint}: version {c.get('version', '?')}, "
               f"clients {s.get('clients', 0)}")
    for bid, link in sorted((s.get("links") or {}).items()):
        click.echo(f"    link {bid:<12} {link.get('state', '?'):<10} "
                   f"last heard {link.get('last_heard_s', '?')} s  "
                   f"forwarded {link.get('forwarded_out', 0)} out / "
                   f"{link.get('forwarded_in', 0)} in  errors {link.get('errors', 0)}")


@cluster.command()
@cluster_option
@timeout_option
@json_option
def check(cluster_file: str, timeout: float, as_json: bool) -> None:
    """Queues held by two brokers (QUEUE_CONFLICT: exit 1) and brokers that are down."""
    cfg = _load(cluster_file)
    got = _run_client(lambda: _gather(cfg, (), timeout, "queues"))
    holders: dict[str, list[str]] = {}
    down = [bid for bid, r in got.items() if "error" in r]
    moving: dict[str, str] = {}  # a queue being moved is on two brokers for a while
    for bid, r in got.items():
        for name, st in r.get("queues", {}).items():
            holders.setdefault(name, []).append(bid)
            if isinstance(st, dict) and isinstance(st.get("moving"), dict):
                moving[name] = f"{bid} -> {st['moving'].get('to')}"
    conflicts = {q: sorted(b) for q, b in holders.items() if len(b) > 1 and q not in moving}
    if as_json:
        _echo_json({"conflicts": conflicts, "down": down, "queues": len(holders),
                    "moving": moving})
    else:
        for q, how in sorted(moving.items()):
            click.echo(f"MOVING {_clean(q)}: {how}")
        for q, bids in sorted(conflicts.items()):
            click.echo(f"QUEUE_CONFLICT {_clean(q)}: held by {', '.join(bids)}")
        for bid in down:
            click.echo(f"DOWN {bid}: {_clean(got[bid]['error'])}")
        click.echo(f"{len(holders)} queue(s) on {len(got) - len(down)} broker(s) up; "
                   f"{len(conflicts)} conflict(s)")
    if conflicts or down:
        sys.exit(1)


@cluster.command()
@cluster_option
@router_option
@timeout_option
def reload(cluster_file: str, routers: tuple[str, ...], timeout: float) -> None:
    """Hand every broker (and --router) the file; each takes it if newer (exit 1 if any
    node could not be reached or refused it)."""
    cfg = _load(cluster_file)
    got = _run_client(lambda: _gather(cfg, routers, timeout, "cluster_config",
                                      {"config": cfg.to_dict()}))
    failed = False
    for node, r in got.items():
        if "error" in r:
            failed = True
            click.echo(f"{node}: {_clean(r['error'])}")
        else:
            click.echo(f"{node}: version {r.get('version')} ({_clean(r.get('outcome', ''))})")
    if failed:
        sys.exit(1)


@cluster.command()
@cluster_option
@click.option("--plan", "planning", is_flag=True,
              help="Print the moves that would bring each broker to its share (the only "
                   "mode: run them yourself).")
@click.option("--tolerance", default=0.05, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="How far from its share a broker may stay, as a fraction of it.")
@timeout_option
@json_option
def rebalance(cluster_file: str, planning: bool, tolerance: float, timeout: float,
              as_json: bool) -> None:
    """Propose queue moves, one 'zq queue move QUEUE --to BROKER' a line, so that each
    active broker holds its weight's share of messages (then of queues) and draining
    brokers hold nothing; pinned queues move only to their pin. Every broker must
    answer (exit 1 if one does not)."""
    if not planning:
        click.echo("zq cluster rebalance only plans: run it with --plan, then carry out "
                   "the moves it prints (zq queue move QUEUE --to BROKER)", err=True)
        sys.exit(2)
    cfg = _load(cluster_file)
    got = _run_client(lambda: _gather(cfg, (), timeout, "queues"))
    down = {bid: r["error"] for bid, r in got.items() if "error" in r}
    if down:
        for bid, why in down.items():
            click.echo(f"DOWN {bid}: {_clean(why)}", err=True)
        raise click.ClickException("every broker must answer for a plan: none was made")
    held = {bid: {q: _messages(st) for q, st in r["queues"].items()} for bid, r in got.items()}
    p = plan(cfg, held, tolerance)
    if as_json:
        _echo_json(_plan_doc(cfg, p, tolerance))
        return
    _plan_lines(cfg, p, tolerance)


def _messages(stats: dict[str, Any]) -> int:
    """What a queue holds: ready (on disk too), delayed and in flight."""
    return sum(int(stats.get(k, 0)) for k in ("ready", "delayed", "in_flight"))


def _plan_doc(cfg: ClusterConfig, p: Plan, tolerance: float) -> dict[str, Any]:
    brokers = {}
    for b in cfg.brokers:
        x, y = p.before[b.id], p.after[b.id]
        brokers[b.id] = {"state": b.state, "weight": b.weight,
                         "messages": {"before": x.messages, "after": y.messages,
                                      "target": round(x.target_messages, 1)},
                         "queues": {"before": x.queues, "after": y.queues,
                                    "target": round(x.target_queues, 1)}}
    return {"cluster_id": cfg.cluster_id, "version": cfg.version, "tolerance": tolerance,
            "moves": [{"queue": m.queue, "from": m.source, "to": m.target,
                       "messages": m.messages, "reason": m.reason, "command": m.command}
                      for m in p.moves],
            "brokers": brokers, "conflicts": p.conflicts}


def _plan_lines(cfg: ClusterConfig, p: Plan, tolerance: float) -> None:
    """The summary as shell comments, then the commands: the output runs as a script."""
    click.echo(f"# cluster {cfg.cluster_id}, file version {cfg.version}: {len(p.moves)} "
               f"move(s), each broker within {tolerance:.0%} of its share where a move helps")
    for b in cfg.brokers:
        x, y = p.before[b.id], p.after[b.id]
        click.echo(f"# broker {b.id:<12} {b.state:<8} weight {b.weight:g}  messages "
                   f"{x.messages} -> {y.messages} (share {x.target_messages:.0f})  queues "
                   f"{x.queues} -> {y.queues} (share {x.target_queues:.1f})")
    for q in p.conflicts:
        click.echo(f"# QUEUE_CONFLICT {_clean(q)}: on two brokers, not moved (zq cluster check)")
    for m in p.moves:
        click.echo(m.command)
