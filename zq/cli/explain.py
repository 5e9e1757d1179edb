"""``zq explain MESSAGE_ID``: why a message is where it is, in words."""

from __future__ import annotations

from typing import Any

import click

from zq.cli.common import _clean, _echo_json, _when, _with_client, client_options, json_option

# Fields that are wall-clock epoch seconds: shown as local time too.
_TIMES = frozenset({"due", "deadline", "since", "published_at", "dead_at", "expires"})


def _value(key: str, v: Any) -> str:
    if key in _TIMES and isinstance(v, int | float):
        return f"{_when(v)} ({v})"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ", ".join(_item(x) for x in v) or "-"
    return _clean(v)


def _item(x: Any) -> str:
    if isinstance(x, dict) and "consumer" in x:
        extra = ", holds a probe" if x.get("probe") else ""
        return (f"{_clean(x['consumer'])} ({x.get('in_flight', 0)} in flight, "
                f"{x.get('available', 0)} credit left{extra})")
    return _clean(x)


@click.command()
@click.argument("message_id", metavar="MESSAGE_ID", type=click.IntRange(0, (1 << 63) - 1))
@json_option
@client_options
def explain(message_id: int, as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """Say why message MESSAGE_ID (an id `zq publish` printed) is where it is.

    Delayed until when; ready and what it waits for (a paused queue, consumers at
    their credit limit, a tenant at its cap, the disk); in flight at which
    consumer, attempt, lease and time limit; waiting for the commit; dead-lettered
    and why; or not found (acked, expired, or never published to this broker).
    Prints the reason, then the details. Exits 0 whenever the broker answered.

    \b
    Examples:
      zq explain 42
      zq explain 42 --json | jq .state
    """
    reply = _with_client(endpoint, "zq-explain", lambda c: c.explain(message_id),
                         timeout=connect_timeout)
    if as_json:
        _echo_json(reply)
        return
    click.echo(_clean(reply.get("reason", "")))
    for key, v in reply.items():
        if key != "reason":
            click.echo(f"  {key}: {_value(key, v)}")
