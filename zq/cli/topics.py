"""``zq topic``: bind queues to topics, list them, set them, publish to them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click

from zq.cli.common import _echo_json, _with_client, client_options, json_option
from zq.client import Client


@click.group()
def topic() -> None:
    """Topics: a publish to a topic is stored in every queue bound to it whose
    pattern matches the publish's key, one copy each, in one commit.

    \b
    Examples:
      zq topic bind orders billing                   # every key
      zq topic bind orders eu-audit --pattern 'orders.eu.#'
      zq topic bind orders paid --pattern orders.eu.paid
      zq topic publish orders --key orders.eu.paid '{"id": 17}'
      zq topic ls
      zq topic set orders --unroutable drop
    """


@topic.command("bind")
@click.argument("name")
@click.argument("queue")
@click.option("--pattern", "-p", default=None, metavar="PATTERN",
              help="Keys this queue takes: an exact key (orders.eu), or * for one "
                   "dot-separated word and # for any number (orders.*, orders.#). "
                   "[default: every key]")
@client_options
def topic_bind(name: str, queue: str, pattern: str | None, endpoint: str,
               connect_timeout: float) -> None:
    """Bind QUEUE to topic NAME (both are made if they do not exist)."""
    new = _with_client(endpoint, "zq-topic", lambda c: c.bind(name, queue, pattern),
                       timeout=connect_timeout)
    what = f"pattern {pattern}" if pattern is not None else "every key"
    click.echo(f"{'bound' if new else 'already bound'}: {queue} <- {name} ({what})")


@topic.command("unbind")
@click.argument("name")
@click.argument("queue")
@click.option("--pattern", "-p", default=None, metavar="PATTERN",
              help="The binding's pattern, as given to bind. [default: every key]")
@client_options
def topic_unbind(name: str, queue: str, pattern: str | None, endpoint: str,
                 connect_timeout: float) -> None:
    """Remove the binding of QUEUE to topic NAME (the queue and its messages stay)."""
    gone = _with_client(endpoint, "zq-topic", lambda c: c.unbind(name, queue, pattern),
                        timeout=connect_timeout)
    click.echo("unbound" if gone else "no such binding")


@topic.command("ls")
@json_option
@client_options
def topic_ls(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """List topics, their bindings and counters."""
    got: list[dict[str, Any]] = _with_client(endpoint, "zq-topic", Client.topics,
                                             timeout=connect_timeout)
    if as_json:
        _echo_json(got)
        return
    if not got:
        click.echo("no topics")
    for t in got:
        click.echo(f"{t['topic']}: published {t['published']}, copies {t['copies']}, "
                   f"unroutable {t['unroutable']} (refused {t['refused']}, dropped "
                   f"{t['dropped']})")
        for b in t["bindings"]:
            click.echo(f"  -> {b['queue']:<32} {b['pattern'] or '(every key)'}")


@topic.command("set")
@click.argument("name")
@click.option("--unroutable", type=click.Choice(["refuse", "drop"]), required=True,
              help="What a publish that matches no binding gets: refused with UNROUTABLE, "
                   "or counted and dropped (confirmed with id 0).")
@client_options
def topic_set(name: str, unroutable: str, endpoint: str, connect_timeout: float) -> None:
    """Set topic NAME's rule for publishes that match no binding."""
    _with_client(endpoint, "zq-topic", lambda c: c.set_topic(name, unroutable=unroutable),
                 timeout=connect_timeout)
    click.echo(f"{name}: unroutable {unroutable}")


def _lines() -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in sys.stdin.buffer:
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


@topic.command("publish")
@click.argument("name")
@click.argument("bodies", nargs=-1)
@click.option("--key", "-k", default="", help="The routing key. [default: empty]")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the message ids.")
@client_options
def topic_publish(name: str, bodies: tuple[str, ...], key: str, quiet: bool, endpoint: str,
                  connect_timeout: float) -> None:
    """Publish BODIES (or one message per line of stdin) to topic NAME with KEY.

    Prints each message's id in the first matching queue (0: dropped, no binding
    matched and the topic drops such publishes)."""

    async def send(client: Client) -> int:
        chunks = iter([[b.encode() for b in bodies]]) if bodies else _lines()
        total = 0
        for chunk in chunks:
            ids = await client.publish_many(None, chunk, topic=name, key=key)
            total += len(ids)
            if not quiet:
                sys.stdout.write("".join(f"{i}\n" for i in ids))
        return total

    _with_client(endpoint, "zq-topic", send, timeout=connect_timeout)
