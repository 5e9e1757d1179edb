"""``zq stream``: declare retained streams, list them, delete them, move or delete their
consumer groups. Reading a stream is ``zq consume STREAM --group G``.

The parsing of the options (:func:`parse_duration`, :func:`parse_size`,
:func:`parse_start`) and their printing (:func:`format_duration`,
:func:`format_size`) are plain functions, tested on their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import click

from zq.cli.common import _clean, _echo_json, _with_client, client_options, json_option
from zq.client import Client

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# How sizes are printed: the largest unit that divides the size exactly.
_SIZE_NAMES = sorted(((v, k[0].upper() + "iB" if k.endswith("ib") else k.upper())
                      for k, v in SIZE_UNITS.items()), reverse=True)
MAX_SIZE = 2**63 - 1  # what the broker's wire format holds
MAX_DURATION = 1e12  # seconds (some 30,000 years): more is a typo
START_WORDS = ("first", "last", "next")
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_duration(text: str) -> float:
    """Seconds of a duration: plain seconds (``90``, ``1.5``) or a number with a unit,
    ``s`` (seconds), ``m`` (minutes), ``h`` (hours), ``d`` (days) or ``w`` (weeks):
    ``90s``, ``15m``, ``7d``. 0 means no limit. Raises ValueError (a negative number,
    an unknown unit, an upper-case unit: ``M`` is not minutes)."""
    m = _NUMBER.fullmatch(text)
    if m is None or m.group(2) not in ("", *DURATION_UNITS):
        raise ValueError(f"{text!r:.40} is not a duration: give seconds, or a number with "
                         f"a unit s, m, h, d or w (90s, 15m, 7d)")
    seconds = float(Decimal(m.group(1)) * DURATION_UNITS.get(m.group(2), 1))
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r:.40} is too long a duration")
    return seconds


def parse_size(text: str) -> int:
    """Bytes of a size: plain bytes (``1000000``) or a number with a unit, ``B``, ``KB``,
    ``MB``, ``GB``, ``TB`` (powers of 1000) or ``KiB``, ``MiB``, ``GiB``, ``TiB``
    (powers of 1024), any case: ``10GB``, ``512mib``, ``1.5GB``. 0 means no limit.
    Raises ValueError (a negative number, an unknown unit, a fraction of a byte)."""
    m = _NUMBER.fullmatch(text)
    unit = m.group(2).lower() if m is not None else ""
    if m is None or (unit and unit not in SIZE_UNITS):
        raise ValueError(f"{text!r:.40} is not a size: give bytes, or a number with a unit "
                         f"B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB "
                         f"(powers of 1024)")
    exact = Decimal(m.group(1)) * SIZE_UNITS.get(unit, 1)
    if exact != exact.to_integral_value():
        raise ValueError(f"{text!r:.40} is not a whole number of bytes")
    if exact > MAX_SIZE:
        raise ValueError(f"{text!r:.40} is too large a size (at most {MAX_SIZE} bytes)")
    return int(exact)


def parse_start(text: str) -> str | int:
    """Where a group starts, as ``Client.consume(start=...)`` and ``reset_group`` take
    it: ``first``, ``last`` or ``next`` as they are; digits are an offset (an int, at
    least 1); anything else must be an ISO 8601 time (``2024-05-01T12:00:00+02:00``;
    one without a zone is UTC) and is returned as given. Raises ValueError."""
    text = text.strip()
    if text in START_WORDS:
        return text
    if text.isascii() and text.isdigit():
        if int(text) < 1:
            raise ValueError(f"an offset is at least 1, got {text!r:.40}")
        return int(text)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r:.40} is not first, last, next, an offset or an ISO 8601 "
                         f"time (2024-05-01T12:00:00Z)") from None
    return text


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit up to days that divides it (``7d``, ``90m``,
    ``1.5s``)."""
    for unit in "dhms":
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """``size`` bytes in the largest unit that divides it (``10GB``, ``512MiB``)."""
    for factor, name in _SIZE_NAMES:
        if size >= factor and size % factor == 0:
            return f"{size // factor}{name}"
    return f"{size}B"


def _retention(s: dict[str, Any]) -> str:
    """``max-age 7d, max-bytes 10GB``, or ``no retention limit``."""
    parts = []
    if s.get("max_age"):
        parts.append(f"max-age {format_duration(float(s['max_age']))}")
    if s.get("max_bytes"):
        parts.append(f"max-bytes {format_size(int(s['max_bytes']))}")
    return ", ".join(parts) or "no retention limit"


def _option(parse: Callable[[str], object]
            ) -> Callable[[click.Context, click.Parameter, str | None], object]:
    """A click callback turning ``parse``'s ValueError into a usage error (exit 2)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return check


def _echo_stream(s: dict[str, Any]) -> None:
    """A stream's line, then one indented line per group."""
    where = f"offsets {s['first']}..{s['last']}" if s.get("entries") else \
        f"empty (last offset {s['last']})"
    click.echo(f"{_clean(s['stream'])}: {s['entries']} entries, {s['bytes']} bytes, {where}; "
               f"{_retention(s)}")
    for g in s.get("groups") or []:
        pending = "?" if g.get("pending") is None else g["pending"]
        committed = "?" if g.get("committed") is None else g["committed"]
        click.echo(f"  group {_clean(g['group'])}: committed {committed}, pending "
                   f"{pending}, consumers {g['consumers']}")


@click.group()
def stream() -> None:
    """Streams: retained, append-only logs. A publish to a stream is kept (until its
    retention removes it) and read by any number of consumer groups, each from its
    own place; the consumers of one group share its entries.

    \b
    Examples:
      zq stream declare events --max-age 7d --max-bytes 10GB
      zq publish events '{"id": 17}'
      zq consume events --group audit --from first
      zq stream ls
      zq stream group reset events audit --to 2024-05-01T00:00:00Z
      zq stream delete events
    """


@stream.command("declare")
@click.argument("name")
@click.option("--max-age", default=None, metavar="DURATION", callback=_option(parse_duration),
              help="Remove entries older than this: seconds, or 90s, 15m, 12h, 7d, 2w. "
                   "[default: no limit]")
@click.option("--max-bytes", default=None, metavar="SIZE", callback=_option(parse_size),
              help="Remove the oldest entries while the bodies exceed this: bytes, or 500MB, "
                   "10GB, 512MiB, 1TiB. [default: no limit]")
@client_options
def stream_declare(name: str, max_age: float | None, max_bytes: int | None, endpoint: str,
                   connect_timeout: float) -> None:
    """Declare stream NAME, or set its retention if it exists (a limit left out stays
    as it is: none for a new stream; 0 removes a limit)."""
    s = _with_client(endpoint, "zq-stream",
                     lambda c: c.declare_stream(name, max_age=max_age, max_bytes=max_bytes),
                     timeout=connect_timeout)
    click.echo(f"stream {_clean(s['stream'])} {'declared' if s.get('created') else 'updated'}"
               f" ({_retention(s)})")


@stream.command("ls")
@json_option
@client_options
def stream_ls(as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """List streams: entries, bytes, offsets, retention, and their groups (committed
    offset, entries pending, consumers)."""
    got: list[dict[str, Any]] = _with_client(endpoint, "zq-stream", Client.streams,
                                             timeout=connect_timeout)
    if as_json:
        _echo_json(got)
        return
    if not got:
        click.echo("no streams")
    for s in got:
        _echo_stream(s)


@stream.command("info")
@click.argument("name")
@json_option
@client_options
def stream_info(name: str, as_json: bool, endpoint: str, connect_timeout: float) -> None:
    """Show stream NAME and its groups."""
    s = _with_client(endpoint, "zq-stream", lambda c: c.stream(name), timeout=connect_timeout)
    if as_json:
        _echo_json(s)
    else:
        _echo_stream(s)


@stream.command("delete")
@click.argument("name")
@client_options
def stream_delete(name: str, endpoint: str, connect_timeout: float) -> None:
    """Delete stream NAME, its entries and its groups (none may be being read)."""
    n = _with_client(endpoint, "zq-stream", lambda c: c.delete_stream(name),
                     timeout=connect_timeout)
    click.echo(f"stream {_clean(name)} deleted ({n} entries)")


@stream.group("group")
def group() -> None:
    """A stream's consumer groups: move one to another place, or delete one.
    A group is made by its first consumer (zq consume STREAM --group G)."""


@group.command("reset")
@click.argument("name")
@click.argument("group_name", metavar="GROUP")
@click.option("--to", "start", required=True, metavar="first|last|next|OFFSET|ISO-TIME",
              callback=_option(parse_start),
              help="Where the group reads from: the oldest entry held (first), the newest "
                   "(last), what is appended from now on (next), an offset, or the first "
                   "entry appended at or after a time (ISO 8601; UTC without a zone).")
@client_options
def group_reset(name: str, group_name: str, start: str | int, endpoint: str,
                connect_timeout: float) -> None:
    """Move GROUP of stream NAME (nobody may be reading it) to --to."""
    g = _with_client(endpoint, "zq-stream", lambda c: c.reset_group(name, group_name, start),
                     timeout=connect_timeout)
    where = (f"committed {g.get('committed')}, pending {g['pending']}"
             if g.get("pending") is not None else
             f"its place is looked up in the store: zq stream info {_clean(name)}")
    click.echo(f"group {_clean(group_name)} of stream {_clean(name)} reset to {start} "
               f"({where})")


@group.command("delete")
@click.argument("name")
@click.argument("group_name", metavar="GROUP")
@client_options
def group_delete(name: str, group_name: str, endpoint: str, connect_timeout: float) -> None:
    """Delete GROUP of stream NAME (nobody may be reading it); the entries stay."""
    _with_client(endpoint, "zq-stream", lambda c: c.delete_group(name, group_name),
                 timeout=connect_timeout)
    click.echo(f"group {_clean(group_name)} of stream {_clean(name)} deleted")
