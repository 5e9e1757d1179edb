"""Helpers shared by the ``zq`` commands: common options, the client runner, output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from zq.broker import run_loop
from zq.client import Client
from zq.config import DEFAULT_ENDPOINT
from zq.errors import ZqError

T = TypeVar("T")

endpoint_option = click.option(
    "--endpoint", "-e", envvar="ZQ_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True,
    show_envvar=True, help="Broker endpoint to connect to.")

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print the broker's raw reply as JSON. Bytes (bodies, binary headers) are shown "
         "as UTF-8 text, invalid bytes replaced with U+FFFD.")


def _finite(v: float | None, param: click.Parameter) -> float | None:
    if v is not None and not math.isfinite(v):
        raise click.BadParameter(f"{v} is not a number of seconds", param=param)
    return v


def _run_client(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a client coroutine; turn zq errors into a one-line message and exit 1."""
    result: list[T] = []

    async def main() -> None:
        task = asyncio.ensure_future(fn())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            result.append(await task)

    try:
        run_loop(main())
    except ZqError as exc:
        raise click.ClickException(str(exc)) from None
    if not result:
        sys.exit(130)
    return result[0]


def _with_client(endpoint: str, name: str, call: Callable[[Client], Awaitable[T]]) -> T:
    """Connect to ENDPOINT as NAME and run CALL with the client, through ``_run_client``."""

    async def run() -> T:
        async with Client(endpoint, name=name) as client:
            return await call(client)

    return _run_client(run)


def _headers(items: tuple[str, ...]) -> dict[str, str]:
    """The headers of repeated ``--header KEY=VALUE`` options."""
    hdr: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--header")
        hdr[key] = value
    return hdr


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return repr(v)


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable))


def _text(body: bytes, limit: int = 200) -> str:
    t = body.decode("utf-8", "replace")
    return t if len(t) <= limit else t[:limit] + f"... ({len(body)} bytes)"


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
