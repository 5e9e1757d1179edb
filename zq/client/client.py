"""``zq.Client``: publish, consume and inspect a zq broker from asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from zq.client.connection import Connection
from zq.client.consumer import Consumer
from zq.config import DEFAULT_ENDPOINT
from zq.errors import FrameTooLarge, InvalidQueueName
from zq.protocol import codec
from zq.protocol import frames as f


def default_endpoint() -> str:
    """``$ZQ_ENDPOINT``, else the broker's default endpoint."""
    return os.environ.get("ZQ_ENDPOINT") or DEFAULT_ENDPOINT


def _check_fits(queue: str, body: bytes, headers: dict[str, Any] | None,
                limits: codec.Limits) -> None:
    hsize = codec.header_size(headers)
    if not codec.fits_alone(len(queue.encode()), len(body), hsize, limits):
        raise FrameTooLarge(
            f"a message of {len(body)} body and {hsize} header bytes does not fit the "
            f"broker's frame limit of {limits.max_frame} bytes", limit=limits.max_frame)


def _check_queue(queue: str) -> None:
    if not isinstance(queue, str) or not queue or len(queue.encode()) > codec.MAX_QUEUE_NAME:
        raise InvalidQueueName(f"queue name must be a non-empty str of at most "
                               f"{codec.MAX_QUEUE_NAME} UTF-8 bytes, got {queue!r}", queue=queue)


def _check_body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"message body must be bytes, got {type(body).__name__}")


def _check_headers(headers: Any) -> f.Headers | None:
    if headers is None:
        return None
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise TypeError("headers must be a dict with str keys")
    return headers


class Client:
    """A connection to one zq broker.

    ``async with zq.Client("tcp://127.0.0.1:5555") as client:`` opens a session
    (raising ``zq.ConnectionLost`` if no broker answers within
    ``connect_timeout``) and closes it on exit.

    ``publish_window`` bounds how many published messages may await their
    confirm; a producer that outruns the broker waits instead of growing memory.
    """

    def __init__(self, endpoint: str | None = None, *, name: str = "",
                 publish_window: int = 10_000, connect_timeout: float = 5.0) -> None:
        if publish_window < 1:
            raise ValueError("publish_window must be >= 1")
        self.endpoint = endpoint or default_endpoint()
        self.name = name or f"client-{os.getpid()}"
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._conn is not None:
            return
        conn = Connection(self.endpoint, name=self.name, publish_window=self.publish_window,
                          connect_timeout=self.connect_timeout)
        await conn.open()
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        self._conn.check()
        if self._conn.broken is not None:
            raise self._conn.broken
        return self._conn

    @property
    def connected(self) -> bool:
        """Whether the broker currently knows this client's session."""
        return self._conn is not None and self._conn.session.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until a session is open again after the broker was lost.

        The client probes a lost broker every heartbeat interval; when a broker
        answers on the endpoint again, a new session opens by itself, unconfirmed
        publishes are sent again, and consumers get their credit back.
        """
        if self._conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        self._conn.check()
        async with asyncio.timeout(timeout):
            await self._conn.session.wait()

    @property
    def max_batch(self) -> int:
        w = self.conn.welcome
        return w.max_batch if w is not None else 1000

    async def publish(self, queue: str, body: bytes, *,
                      headers: dict[str, Any] | None = None) -> int:
        """Publish one message; return its id once the broker confirms it is stored.

        Calls made during the same event-loop turn travel as one frame, so many
        concurrent ``publish`` calls cost about as much as one ``publish_many``.
        """
        _check_queue(queue)
        body = _check_body(body)
        headers = _check_headers(headers)
        conn = self.conn
        _check_fits(queue, body, headers, conn.limits)
        if conn.unconfirmed >= conn.publish_window:
            await conn.wait_window(1)
        fut = self.conn.publish(queue, body, headers)
        result: int = await fut
        return result

    async def publish_many(self, queue: str, bodies: Iterable[bytes], *,
                           headers: Iterable[dict[str, Any] | None] | None = None) -> list[int]:
        """Publish many messages in as few frames as the broker allows; return their ids."""
        _check_queue(queue)
        items = [_check_body(b) for b in bodies]
        hdrs = [_check_headers(h) for h in headers] if headers is not None else []
        if hdrs and len(hdrs) != len(items):
            raise ValueError(f"{len(hdrs)} headers for {len(items)} bodies")
        if not any(h is not None for h in hdrs):
            hdrs = []
        conn = self.conn
        limits = conn.limits
        qlen = len(queue.encode())
        lens = list(map(len, items))
        hsizes = [codec.header_size(h) for h in hdrs] if hdrs else None
        if hsizes is not None or not codec.fits_together(qlen, lens, limits):
            for i, body in enumerate(items):  # some message may be too big on its own
                _check_fits(queue, body, hdrs[i] if hdrs else None, limits)
        ends = codec.split(qlen, lens, hsizes, self.max_batch, limits)
        futs: list[asyncio.Future[Any]] = []
        start = 0
        for end in ends:
            chunk = items[start:end]
            await conn.wait_window(len(chunk))
            futs.append(conn.publish_frame(queue, chunk, hdrs[start:end] if hdrs else []))
            start = end
        ids: list[int] = []
        for chunk_ids in await asyncio.gather(*futs):
            ids.extend(chunk_ids)
        return ids

    def consume(self, queue: str, *, prefetch: int = 100) -> Consumer:
        """Messages from ``queue``, at most ``prefetch`` unacked at a time."""
        _check_queue(queue)
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive int, got {prefetch!r}")
        return Consumer(self.conn, queue, prefetch)

    async def stats(self) -> dict[str, Any]:
        """The broker's counters: totals, per queue, per connected peer."""
        return await self.conn.stats()
