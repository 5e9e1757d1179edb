"""``zq publish``, ``zq consume`` and ``zq stats``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from zq.cli.common import (
    DEFAULT_CONNECT_TIMEOUT,
    _clean,
    _finite,
    _headers,
    _with_client,
    client_options,
    endpoint_option,
)
from zq.cli.streams import _option, parse_start
from zq.client import Client, Message
from zq.errors import UnknownQueue
from zq.protocol.names import check_queue_name


def _stdin_lines(chunk: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in sys.stdin.buffer:
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


@click.command()
@click.argument("queue")
@click.argument("bodies", nargs=-1)
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="Add a header to every message (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the message ids.")
@click.option("--priority", type=click.IntRange(0, 9), default=None,
              help="0..9, higher is delivered first. [default: 0]")
@click.option("--delay", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Deliver no sooner than this many seconds from now.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Expire to the dead-letter queue if not delivered within this many "
                   "seconds. [default: the queue's]")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Seconds one attempt may run before it is retried. [default: the queue's]")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Failed attempts before the message is dead. [default: the queue's]")
@click.option("--tenant", default=None, help="The tenant (fair-share group) of the messages.")
@click.option("--dedup-id", default=None,
              help="Deduplication id: a repeat within the queue's dedup window stores "
                   "nothing and prints the first message's id. Needs exactly one message.")
@client_options
def publish(queue: str, bodies: tuple[str, ...], headers: tuple[str, ...], quiet: bool,
            priority: int | None, delay: float | None, ttl: float | None,
            time_limit: float | None, max_attempts: int | None, tenant: str | None,
            dedup_id: str | None, endpoint: str, connect_timeout: float) -> None:
    """Publish BODIES to QUEUE, or one message per line of stdin when none are given.

    Prints each stored message's id (after the broker's confirm). The options
    apply to every message.

    \b
    Examples:
      zq publish jobs "resize img-1.png"
      seq 1 1000 | zq publish numbers -q
      zq publish mail -H to=ops@example.com "disk almost full"
      zq publish jobs --priority 9 --time-limit 30 "urgent"
      zq publish invoices --dedup-id inv-2024-17 "send invoice 17"
    """
    hdr = _headers(headers)
    if dedup_id is not None and len(bodies) > 1:
        raise click.BadParameter("a dedup id needs exactly one message", param_hint="--dedup-id")
    opts: dict[str, Any] = {k: v for k, v in (
        ("priority", priority), ("delay", delay), ("ttl", ttl), ("time_limit", time_limit),
        ("max_attempts", max_attempts), ("tenant", tenant)) if v is not None}
    single: list[bytes] = []
    if dedup_id is not None:
        single = [b.encode() for b in bodies] if bodies else \
            [line for chunk in _stdin_lines(1000) for line in chunk]
        if len(single) != 1:
            raise click.BadParameter(f"a dedup id needs exactly one message, got "
                                     f"{len(single)}", param_hint="--dedup-id")

    async def send(client: Client) -> int:
        if dedup_id is not None:
            mid = await client.publish(queue, single[0], headers=hdr or None,
                                       dedup_id=dedup_id, **opts)
            if not quiet:
                click.echo(mid)
            return 1
        total = 0
        chunks: Iterator[list[bytes]] = (
            iter([[b.encode() for b in bodies]]) if bodies else _stdin_lines(1000))
        for chunk in chunks:
            ids = await client.publish_many(
                queue, chunk, headers=[hdr] * len(chunk) if hdr else None, **opts)
            total += len(ids)
            if not quiet:
                sys.stdout.write("".join(f"{i}\n" for i in ids))
                sys.stdout.flush()
        return total

    n = _with_client(endpoint, "zq-publish", send, timeout=connect_timeout)
    click.echo(f"published {n} message(s) to {queue}", err=True)


async def _look_up(client: Client, queue: str, no_create: bool) -> None:
    """Say so when QUEUE does not exist yet; with --no-create, refuse it. A name that
    breaks the rule is refused first, as the broker would (INVALID_QUEUE_NAME)."""
    check_queue_name(queue)
    try:
        await client.queue_info(queue)
    except UnknownQueue:
        if no_create:
            raise click.ClickException(
                f"queue {queue!r} does not exist (--no-create: nothing was created; "
                "`zq queue ls` lists the queues)") from None
        click.echo(f"queue {queue!r} does not exist yet; waiting for messages on it "
                   "(--no-create refuses unknown queues)", err=True)


async def _look_up_stream(client: Client, stream: str, group: str,
                          start: str | int | None) -> None:
    """Refuse a stream that does not exist (reading in a group does not make one); say
    so when --from does not apply, the group existing already."""
    check_queue_name(stream)
    try:
        s = await client.stream(stream)
    except UnknownQueue:
        raise click.ClickException(
            f"stream {stream!r} does not exist (`zq stream declare` makes one; "
            "`zq stream ls` lists them)") from None
    if start is not None and any(g.get("group") == group for g in s.get("groups") or []):
        click.echo(f"group {group!r} exists: it reads on from its committed offset, not "
                   "--from (`zq stream group reset` moves it)", err=True)


def _meta(msg: Message) -> bytes:
    """The --headers line of MSG: id, attempt, headers (and a stream entry's offset)."""
    meta: dict[str, Any] = {"id": msg.id, "attempt": msg.attempt, "headers": msg.headers}
    if msg.offset is not None:
        meta["offset"] = msg.offset
    return json.dumps(meta, default=repr).encode() + b"\n"


@click.command()
@click.argument("queue")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None,
              help="Exit after this many messages. [default: run until Ctrl-C]")
@click.option("--prefetch", "-p", type=click.IntRange(min=1), default=100, show_default=True,
              help="Credit: most unacked messages held at once.")
@click.option("--timeout", "-t", type=click.FloatRange(0, 1e9), default=None,
              callback=lambda ctx, param, v: _finite(v, param),
              help="Exit when no message arrives for this many seconds; also how long to "
                   "wait for the broker to answer when connecting (without it: "
                   f"{DEFAULT_CONNECT_TIMEOUT:g}s).")
@click.option("--headers", "show_headers", is_flag=True,
              help="Print id, attempt and headers (and, with --group, the entry's offset) "
                   "as JSON before each body.")
@click.option("--no-create", is_flag=True,
              help="Refuse a queue that does not exist yet (exit 1) instead of waiting for "
                   "its first message.")
@click.option("--group", "-g", default=None, metavar="GROUP",
              help="Read stream QUEUE in consumer group GROUP (made at --from if new; one "
                   "that exists reads on from its committed offset). The stream must exist.")
@click.option("--from", "start", default=None, metavar="first|last|next|OFFSET|ISO-TIME",
              callback=_option(parse_start),
              help="Where a new --group starts: the oldest entry held (first), the newest "
                   "(last), what is appended from now on (next), an offset, or a time (ISO "
                   "8601; UTC without a zone). [default: next]")
@endpoint_option
def consume(queue: str, count: int | None, prefetch: int, timeout: float | None,
            show_headers: bool, no_create: bool, group: str | None, start: str | int | None,
            endpoint: str) -> None:
    """Print message bodies from QUEUE, one per line, acking each after printing.

    A queue that does not exist yet is waited on (with a note on stderr), as
    consuming creates it; --no-create refuses it instead. With --group, QUEUE
    is a stream (zq stream declare), read in that consumer group; --headers
    then shows each entry's offset too.

    \b
    Examples:
      zq consume jobs
      zq consume jobs --count 10 --prefetch 10
      zq consume jobs --timeout 2 > drained.txt
      zq consume jobs --no-create
      zq consume events --group audit --from first
      zq consume events --group audit --from 2024-05-01T00:00:00Z --headers
    """
    if start is not None and group is None:
        raise click.UsageError("--from needs --group: it is where a stream's consumer group "
                               "starts")
    out = sys.stdout.buffer

    async def drain(client: Client) -> int:
        if group is None:
            await _look_up(client, queue, no_create)
        else:
            await _look_up_stream(client, queue, group, start)
        n = 0
        async with client.consume(queue, prefetch=prefetch, group=group,
                                  start=start) as consumer:
            while count is None or n < count:
                try:
                    msg = await consumer.get(timeout)
                except TimeoutError:
                    break
                if show_headers:
                    out.write(_meta(msg))
                out.write(msg.body + b"\n")
                out.flush()
                await msg.ack()
                n += 1
        return n

    # --timeout 0 drains what is there now; connecting still takes a round trip.
    n = _with_client(endpoint, "zq-consume", drain, timeout=timeout or DEFAULT_CONNECT_TIMEOUT)
    click.echo(f"consumed {n} message(s) from {queue}", err=True)


def _print_peers(peers: dict[str, Any]) -> None:
    """One line per connected peer, then one per subscription with its credit window."""
    for ident, p in sorted(peers.items(), key=lambda kv: (str(kv[1].get("name")), kv[0])):
        subs = p.get("subs") or {}
        click.echo(f"peer {_clean(p.get('name') or '?')} ({ident}): holds {p.get('held', 0)}"
                   + ("" if subs else ", no subscriptions"))
        for qname, sub in sorted(subs.items()):
            click.echo(f"  queue {qname}: in-flight {sub.get('in_flight', 0)}, available "
                       f"{sub.get('available', 0)}, peak {sub.get('peak_in_flight', 0)}"
                       + ("" if sub.get("active", True) else " (cancelled)"))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw counters as JSON.")
@client_options
def stats(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """Show the broker's counters, queues and connected peers (consumers).

    Each peer's line names it and how many messages it holds; below it, one
    line per queue it consumes: messages in flight, credit still available
    and the most it had in flight at once (peak).

    \b
    Examples:
      zq stats
      zq stats --json | jq .queues
    """
    s = _with_client(endpoint, "zq-stats", Client.stats, timeout=connect_timeout)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
        return
    c = s["counters"]
    click.echo(f"broker {s['broker']}: published {c['published']}, delivered {c['delivered']} "
               f"(avg batch {c['avg_deliver_batch']:.1f}), acked {c['acked']}, "
               f"unroutable {c['unroutable']}")
    store = s.get("store", {})
    if store.get("kind") == "sqlite":
        click.echo(f"store sqlite (fsync {store['fsync']}): {store['commits']} commits, "
                   f"{store['messages_written']} messages written, "
                   f"{store['pages_read']} backlog pages read")
        if store.get("full"):
            click.echo("store FULL: publishes are refused (STORAGE_FULL) until acks free "
                       "space; consumers are served")
    elif store:
        click.echo(f"store {store.get('kind')}: not durable")
    _print_uplink(s.get("uplink"))
    t = s.get("topics")
    if t:
        click.echo(f"topics {t['total']} ({t['bindings']} bindings): published "
                   f"{t['published']}, copies {t['copies']}, unroutable refused "
                   f"{t['refused']}, dropped {t['dropped']} (zq topic ls)")
    for name, st in sorted((s.get("streams") or {}).items()):
        groups = ", ".join(f"{_clean(g['group'])} {'?' if g['pending'] is None else g['pending']}"
                           for g in st["groups"]) or "none"
        click.echo(f"stream {_clean(name)}: {st['entries']} entries, {st['bytes']} bytes; "
                   f"groups (pending): {groups} (zq stream ls)")
    click.echo(f"{'queue':<32} {'ready':>10} {'on disk':>10} {'in-flight':>10} "
               f"{'consumers':>9} {'acked':>12}")
    for name, q in sorted(s["queues"].items()):
        click.echo(f"{name:<32} {q['ready']:>10} {q.get('on_disk', 0):>10} "
                   f"{q['in_flight']:>10} {q['consumers']:>9} {q['acked']:>12}")
        if q.get("undeliverable"):
            click.echo(f"  {q['undeliverable']} stored message(s) of {name} are larger than "
                       f"max_frame: skipped until a restart with a larger --max-frame")
    _omitted(s, "queues", "zq queue ls lists them all")
    _print_peers(s.get("peers") or {})
    for name, n in sorted((s.get("nodes") or {}).items()):  # zq node: zq nodes has more
        click.echo(f"node {_clean(name)} ({n.get('state')}): {len(n.get('workers') or [])} "
                   f"worker(s), target {n.get('target')}; {_clean(str(n.get('decision')))}")
    _omitted(s, "peers", "zq stats --json shows the same")


def _omitted(s: dict[str, Any], key: str, hint: str) -> None:
    total = s.get(f"{key}_total", len(s.get(key) or {}))
    if total > len(s.get(key) or {}):
        click.echo(f"... {total - len(s.get(key) or {})} more {key} not shown ({hint})")


def _print_uplink(up: dict[str, Any] | None) -> None:
    """The uplink's line (an edge broker with --uplink): state, backlog, oldest age."""
    if not up:
        return
    where = up.get("endpoint") or ", ".join(up.get("endpoints", []))
    click.echo(f"uplink {up['state']} ({where}, {up['state_s']:.0f} s): backlog "
               f"{up['backlog']} ({up['in_flight']} in flight), oldest unforwarded "
               f"{up['oldest_age']:.1f} s; forwarded {up['confirmed']}, refused "
               f"{up['refused']}, sessions {up['sessions']}")
    if up.get("last_error") and up["state"] != "up":
        click.echo(f"  last error: {up['last_error']}")

