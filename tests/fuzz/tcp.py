"""Plain TCP connections that send random octets to a ZeroMQ endpoint: no ZMTP, no zq.

What a port scanner, a confused HTTP client or a hostile peer sends before any
handshake. Most payloads are wholly random; some start with the ZMTP signature, or
with a whole ZMTP 3.0 greeting for the NULL mechanism, so that the server's handshake
parser gets further before the garbage. Connections are opened in batches and kept
open until the end (at most ``max_open`` at once: the oldest are closed first), and
the report says how many the server closed by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
from collections import Counter
from dataclasses import dataclass, field

GREETING = (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
            + b"\x00" + bytes(31))  # ZMTP 3.0, NULL mechanism, as-server 0 (RFC 23)
KINDS = ("random", "zmtp-signature", "zmtp-greeting")


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (children started
    later inherit it); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def payload(rng: random.Random, lo: int = 200, hi: int = 4000) -> tuple[str, bytes]:
    """Random octets, ``lo`` to ``hi`` of them after an optional ZMTP prefix."""
    kind = rng.choices(KINDS, (0.7, 0.15, 0.15))[0]
    data = rng.randbytes(rng.randint(lo, hi))
    if kind == "zmtp-signature":
        return kind, b"\xff" + rng.randbytes(8) + b"\x7f" + data
    if kind == "zmtp-greeting":
        return kind, GREETING + data
    return kind, data


@dataclass
class FloodReport:
    connections: int = 0  # attempted
    refused: int = 0  # the connect failed
    sent: int = 0  # wrote all their octets
    reset: int = 0  # the server closed before all was written
    closed_by_server: int = 0  # the server had closed it by the end (or when evicted)
    held_open: int = 0  # the server still held it open when it was closed here
    octets: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    watcher: asyncio.Task[None]


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Return once the server closed the connection (it may first send its greeting)."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass


async def _open(host: str, port: int, data: bytes, report: FloodReport) -> _Conn | None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        report.refused += 1
        return None
    watcher = asyncio.create_task(_until_closed(reader))  # owned by flood(), awaited there
    try:
        writer.write(data)
        await writer.drain()
        report.sent += 1
        report.octets += len(data)
    except (ConnectionError, OSError):
        report.reset += 1
    return _Conn(writer, watcher)


async def _close(conns: list[_Conn], report: FloodReport) -> None:
    for c in conns:
        if c.watcher.done():
            report.closed_by_server += 1
        else:
            report.held_open += 1
            c.watcher.cancel()
        c.writer.close()
    # Cancelled watchers end as CancelledError results; a cancellation of this task
    # itself still propagates.
    await asyncio.gather(*(c.watcher for c in conns), return_exceptions=True)
    for c in conns:
        with contextlib.suppress(ConnectionError, OSError):
            await c.writer.wait_closed()


async def flood(host: str, port: int, n: int, rng: random.Random, *, batch: int = 100,
                max_open: int | None = None, settle: float = 5.0) -> FloodReport:
    """Open ``n`` connections to ``host:port``, ``batch`` at a time, each sending one
    random payload; keep them open (at most ``max_open``), then give the server up to
    ``settle`` seconds to close those it will close, and close them all."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    report = FloodReport()
    live: list[_Conn] = []
    limit = max_open if max_open is not None else n
    try:
        for first in range(0, n, batch):
            count = min(batch, n - first)
            datas = [payload(rng) for _ in range(count)]
            report.connections += count
            report.kinds.update(kind for kind, _ in datas)
            opened = await asyncio.gather(*(_open(host, port, d, report) for _, d in datas))
            live += [c for c in opened if c is not None]
            if len(live) > limit:
                evicted, live = live[:len(live) - limit], live[len(live) - limit:]
                await _close(evicted, report)
        pending = [c.watcher for c in live if not c.watcher.done()]
        if pending:
            await asyncio.wait(pending, timeout=settle)
    finally:
        await _close(live, report)
    report.seconds = loop.time() - start
    return report
