"""A client's side connections, one per broker endpoint, and its background tasks.

A :class:`zq.Client` in a cluster talks to its main node (a router or a broker)
and, beside it, straight to the brokers that hold queues: for consumers, and
for publishes to a queue that MOVED. :class:`Pool` opens those connections on
demand and keeps them until the client closes. :class:`Tasks` owns the work
that runs beside the application (opening a connection for a frame that
MOVED, failing over, moving a consumer): each task is kept until it ends, and
closing the client cancels and awaits what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from zq.errors import ClientClosed

if TYPE_CHECKING:
    from zq.client.connection import Connection

__all__ = ["Pool", "Tasks"]

log = logging.getLogger("zq.client")


class Tasks:
    """The background tasks of one client; :meth:`close` cancels and awaits them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("zq client task %r failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class Pool:
    """Open connections by endpoint. ``make(endpoint)`` builds one (not yet open)."""

    def __init__(self, make: Callable[[str], Connection]) -> None:
        self._make = make
        self.conns: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Future[Connection]] = {}
        self.closed = False

    def alive(self, endpoint: str) -> Connection | None:
        """The connection to ``endpoint`` if it is open and its node not given up."""
        conn = self.conns.get(endpoint)
        return conn if conn is not None and conn.broken is None and not conn.closed else None

    async def get(self, endpoint: str) -> Connection:
        """The connection to ``endpoint``, opened first if there is none (callers at
        the same time share one opening). It may have lost its node since: see
        ``broken``. Raises ConnectionLost if no node answers there."""
        if self.closed:
            raise ClientClosed("client closed")
        conn = self.conns.get(endpoint)
        if conn is not None:
            return conn
        fut = self._opening.get(endpoint)
        if fut is None:
            fut = self._opening[endpoint] = asyncio.ensure_future(self._open(endpoint))
            fut.add_done_callback(_retrieved)
        return await asyncio.shield(fut)

    async def _open(self, endpoint: str) -> Connection:
        try:
            conn = self._make(endpoint)
            await conn.open()
            self.conns[endpoint] = conn
            return conn
        finally:
            self._opening.pop(endpoint, None)

    async def close(self) -> None:
        """Close every connection (each says BYE); stop those being opened."""
        self.closed = True
        opening = list(self._opening.values())
        for fut in opening:
            fut.cancel()
        if opening:
            await asyncio.gather(*opening, return_exceptions=True)
        conns, self.conns = list(self.conns.values()), {}
        for conn in conns:
            await conn.close()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """An opening nobody waits for any more may fail: its error is not 'never retrieved'."""
    if not fut.cancelled():
        fut.exception()
