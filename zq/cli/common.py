"""Helpers shared by the ``zq`` commands: common options, the client runner, output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from zq.broker import run_loop
from zq.client import Client
from zq.config import DEFAULT_ENDPOINT
from zq.errors import UnknownQueue, ZqError
from zq.security.curve import ENV_SECRET, ENV_SERVER_KEY
from zq.tasks import TASK_HEADER, decode_body

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds a client command waits for the broker's WELCOME

_endpoint_option = click.option(
    "--endpoint", "-e", envvar="ZQ_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True,
    show_envvar=True, help="Broker endpoint to connect to.")


def _to_env(name: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def set_env(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:  # every client this process makes reads it (zq.security.curve)
            os.environ[name] = value

    return set_env


def curve_options(fn: F) -> F:
    """``--curve-secret`` and ``--server-key``: CURVE for every client of the command.
    They set ZQ_CURVE_SECRET and ZQ_SERVER_KEY, which zq.Client reads."""
    fn = click.option(
        "--server-key", metavar="FILE", expose_value=False, callback=_to_env(ENV_SERVER_KEY),
        help=f"The server's public key file, for CURVE. [env var: {ENV_SERVER_KEY}]")(fn)
    return click.option(
        "--curve-secret", metavar="FILE", expose_value=False, callback=_to_env(ENV_SECRET),
        help=f"This client's secret key file (zq keys generate), for CURVE. "
             f"[env var: {ENV_SECRET}]")(fn)


def endpoint_option(fn: F) -> F:
    """``--endpoint``, and the CURVE options that go with connecting to it."""
    return _endpoint_option(curve_options(fn))

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print the broker's raw reply as JSON. Bytes (bodies, binary headers) are shown "
         "as UTF-8 text, invalid bytes replaced with U+FFFD.")


def _finite(v: float | None, param: click.Parameter) -> float | None:
    if v is not None and not math.isfinite(v):
        raise click.BadParameter(f"{v} is not a number of seconds", param=param)
    return v


connect_timeout_option = click.option(
    "--timeout", "connect_timeout", envvar="ZQ_TIMEOUT", show_envvar=True,
    default=DEFAULT_CONNECT_TIMEOUT, show_default=True, metavar="SECONDS",
    type=click.FloatRange(0, 1e9, min_open=True), callback=lambda ctx, param, v: _finite(v, param),
    help="How long to wait for the broker to answer when connecting.")


def client_options(fn: F) -> F:
    """``--endpoint`` and ``--timeout``: where the broker is, how long to wait for it."""
    return endpoint_option(connect_timeout_option(fn))


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


def _with_client(endpoint: str, name: str, call: Callable[[Client], Awaitable[T]], *,
                 timeout: float) -> T:
    """Connect to ENDPOINT as NAME (waiting up to TIMEOUT seconds for the broker's answer)
    and run CALL with the client, through ``_run_client``."""

    async def run() -> T:
        async with Client(endpoint, name=name, connect_timeout=timeout) as client:
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


def _clean(text: object) -> str:
    """``text`` for one line of a terminal: control characters (a newline in a client's
    name or a nack reason) shown escaped, not acted on."""
    t = str(text)
    if t.isprintable():
        return t
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode()
                   for ch in t)


def _cut(text: str, size: int, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({size} bytes)"


def _text(body: bytes, limit: int = 200) -> str:
    return _cut(body.decode("utf-8", "replace"), len(body), limit)


def _body(msg: dict[str, Any]) -> str:
    """A peeked message's body for people: a task call decoded, else UTF-8 text."""
    body = bytes(msg.get("body", b""))
    task = (msg.get("headers") or {}).get(TASK_HEADER)
    if isinstance(task, str):
        try:
            args, kwargs = decode_body(body)
        except ValueError:
            pass  # a zq-task header on a body that is no task call: show it as text
        else:
            return _cut(f"task {task}(args={args!r}, kwargs={kwargs!r})", len(body))
    return _text(body)


def _peek(name: str, limit: int, endpoint: str, timeout: float, missing_ok: bool = False
          ) -> list[dict[str, Any]]:
    async def peek(client: Client) -> list[dict[str, Any]]:
        try:
            return await client.peek(name, limit)
        except UnknownQueue:
            if missing_ok:  # a dead-letter queue exists once something has died
                return []
            raise

    return _with_client(endpoint, "zq-queue", peek, timeout=timeout)


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
