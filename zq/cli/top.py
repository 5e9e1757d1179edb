"""``zq top``: a live terminal view of the broker's queues and consumers.

What a frame shows (rows, rates, sorting, escaping) is :mod:`zq.cli.topview`, with no
I/O. This module asks the broker for STATS every interval, reads keys and draws.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from types import TracebackType
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from zq.broker import run_loop
from zq.cli.common import client_options
from zq.cli.topview import SORT_KEYS, Sort, TopView
from zq.client import Client
from zq.errors import ConnectionLost, OperationTimeout, ZqError


class Keys:
    """Keys typed on a terminal's stdin: in cbreak mode (each key arrives as it is
    pressed, unechoed; Ctrl-C still sends SIGINT), read by the event loop, and the
    terminal's mode restored on exit. When stdin is no terminal nothing is read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pressed: asyncio.Queue[str] = asyncio.Queue()
        self._saved: list[Any] | None = None

    def __enter__(self) -> Keys:
        if self.fd < 0 or not os.isatty(self.fd):
            return self  # nothing can be pressed: SIGINT or SIGTERM ends zq top
        self._saved = termios.tcgetattr(self.fd)
        try:
            tty.setcbreak(self.fd)
            asyncio.get_running_loop().add_reader(self.fd, self._read)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._saved is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
            self._restore()

    def _restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            with contextlib.suppress(termios.error):  # the terminal may be gone
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the terminal went away: stop watching it (a hangup ends us)
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        if b"\x1b" in data:
            return  # arrows and function keys send escape sequences: none is bound
        for ch in data.decode("utf-8", "ignore"):
            self.pressed.put_nowait(ch)


CLOSE_WAIT = 2.0  # seconds the client may take to close on the way out


class Source:
    """STATS from the broker through one client at a time: a client whose broker was
    lost (or said BYE) is closed, and the next refresh connects afresh."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.client: Client | None = None

    async def stats(self) -> dict[str, Any]:
        if self.client is None:
            client = Client(self.endpoint, name="zq-top", connect_timeout=self.timeout)
            try:
                await client.connect()
            except BaseException:
                await client.close()
                raise
            self.client = client
        try:
            async with asyncio.timeout(self.timeout):
                return await self.client.stats()
        except TimeoutError:
            await self.close()
            raise OperationTimeout(f"no STATS answer from {self.endpoint} within "
                                   f"{self.timeout:g}s", endpoint=self.endpoint) from None
        except ZqError:
            await self.close()
            raise

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()


class _Quit(Exception):
    """``q`` was pressed."""


def _ascii_only(console: Console) -> bool:
    return not console.encoding.lower().startswith("utf")  # arrows need UTF-8


class Screen:
    """The view drawn on a console through rich's Live, refreshed by the owner (no
    refresh thread)."""

    def __init__(self, view: TopView, console: Console, live: Live) -> None:
        self.view, self.console, self.live = view, console, live
        self.ascii_only = _ascii_only(console)

    def draw(self) -> None:
        now = asyncio.get_running_loop().time()
        self.live.update(self.view.render(now, self.console.height, self.ascii_only),
                         refresh=True)


async def _poll(source: Source, view: TopView) -> None:
    try:
        stats = await source.stats()
    except (ConnectionLost, OperationTimeout) as exc:
        view.failed(f"broker not answering: {exc}")
    except ZqError as exc:
        view.failed(f"STATS failed: {exc}")
    else:
        view.update(stats, asyncio.get_running_loop().time())


async def _watch(source: Source, screen: Screen, keys: Keys, interval: float) -> None:
    """Refresh every ``interval`` seconds and act on keys, until ``q``."""
    loop = asyncio.get_running_loop()

    async def refresh() -> None:
        while True:
            started = loop.time()
            await _poll(source, screen.view)
            screen.draw()
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    async def read_keys() -> None:
        while True:
            if screen.view.press(await keys.pressed.get()):
                raise _Quit
            screen.draw()  # a new sort shows at once

    loop.add_signal_handler(signal.SIGWINCH, screen.draw)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(refresh())
            tg.create_task(read_keys())
    except* _Quit:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # closed, or replaced by a test
        return -1


async def _top(source: Source, view: TopView, once: bool) -> None:
    loop = asyncio.get_running_loop()
    try:
        view.update(await source.stats(), loop.time())  # no answer: exit 1, no screen
        console = Console()
        if once:
            console.print(view.render(loop.time(), ascii_only=_ascii_only(console)))
            return
        live = Live(console=console, screen=sys.stdout.isatty(), auto_refresh=False,
                    redirect_stdout=False, redirect_stderr=False)
        with Keys(_stdin_fd()) as keys, live:
            screen = Screen(view, console, live)
            screen.draw()
            await _watch(source, screen, keys, view.interval)
    finally:
        # SIGTERM must end it: the client gets CLOSE_WAIT seconds to say BYE, no more
        # (a close cut short by the signal was seen to hang a loaded machine's run).
        closing = asyncio.ensure_future(source.close())
        await asyncio.wait({closing}, timeout=CLOSE_WAIT)


async def _run(source: Source, view: TopView, once: bool) -> None:
    """``_top`` until it returns or SIGINT/SIGTERM stops it (both a normal end)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(_top(source, view, once))
    stops = (signal.SIGINT, signal.SIGTERM)
    for sig in stops:
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in stops:
            loop.remove_signal_handler(sig)


@click.command()
@click.option("--interval", "-i", type=click.FloatRange(0.1, 86400), default=1.0,
              show_default=True, metavar="SECONDS", help="Seconds between refreshes.")
@click.option("--sort", "sort_by", type=click.Choice(SORT_KEYS), default="name",
              show_default=True,
              help="The column to sort queues by (numbers biggest first; the keys change it).")
@click.option("--once", is_flag=True,
              help="Print one frame and exit (no live screen): for scripts.")
@client_options
def top(interval: float, sort_by: str, once: bool, endpoint: str,
        connect_timeout: float) -> None:
    """A live view of the broker's queues and consumers, refreshed every second.

    Queues show their depth (ready, delayed, in flight, dead), consumers and
    rates per second, measured between refreshes; consumers show each peer's
    messages in flight and credit left. Keys: q quits, s/S move the sort to the
    next/previous column, 1-9 and 0 sort by that column (again: reverse), r
    reverses. Ctrl-C quits too. A broker lost meanwhile is shown and retried;
    --timeout bounds each refresh's wait for its answer as well.

    \b
    Examples:
      zq top
      zq top --sort ready --interval 2
      zq top --once --sort publish | head -20
    """
    view = TopView(Sort.by(sort_by), interval, keys=not once)
    try:
        run_loop(_run(Source(endpoint, connect_timeout), view, once))
    except ZqError as exc:
        raise click.ClickException(str(exc)) from None
