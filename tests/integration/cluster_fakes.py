"""Nodes for testing the SDK in a cluster, in the test's own process.

* :class:`FakeNode`: a pyzmq asyncio ROUTER socket that speaks ZQ/1 through
  ``zq.protocol.codec`` and answers as a test tells it to (MOVED, LOCATION,
  UNAVAILABLE, nothing at all); it can die abruptly (:meth:`FakeNode.kill`).
* :class:`Real`: a real broker in this process, in memory or on SQLite, whose
  commits can be held for ever and which can die without a word, then start
  again on the same endpoint and data folder.

The fixtures ``real`` and ``adopted`` are in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

import zq
from zq.broker import Broker
from zq.config import BrokerConfig
from zq.protocol import codec
from zq.protocol import frames as f

Answer = Callable[[f.Frame], list[f.Frame]]


class FakeNode:
    """A node that answers HELLO with a WELCOME naming its cluster ``role``,
    HEARTBEAT with HEARTBEAT, and every other frame but BYE with what ``answer``
    returns."""

    def __init__(self, name: str, role: str, answer: Answer, heartbeat_ms: int) -> None:
        self.name = name
        self.role = role
        self.answer = answer
        self.heartbeat_ms = heartbeat_ms
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.frames: list[f.Frame] = []  # every frame received, in order
        self.task: asyncio.Future[None] | None = None

    def count(self, kind: type[Any], queue: str | None = None) -> int:
        return sum(1 for fr in self.frames if isinstance(fr, kind)
                   and (queue is None or getattr(fr, "queue", None) == queue))

    async def serve(self) -> None:
        while True:
            rid, *parts = await self.sock.recv_multipart()
            frame = codec.decode(parts)
            self.frames.append(frame)
            match frame:
                case f.Hello():
                    replies: list[f.Frame] = [f.Welcome(
                        self.name, heartbeat_ms=self.heartbeat_ms, liveness=3, max_batch=1000,
                        max_credit=1000, max_frame=1 << 20, starts=True,
                        cluster={"id": "c1", "version": 1, "node": self.name,
                                 "role": self.role})]
                case f.Heartbeat():
                    replies = [f.Heartbeat()]
                case f.Bye():
                    replies = []
                case _:
                    replies = self.answer(frame)
            for reply in replies:
                await self.sock.send_multipart([rid, *codec.encode(reply)])

    async def kill(self) -> None:
        """Stop at once, without a word: the socket goes away (idempotent)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if not self.sock.closed:
            self.sock.close(linger=0)
            self.ctx.term()


@contextlib.asynccontextmanager
async def fake(name: str, role: str, answer: Answer,
               heartbeat_ms: int = 10_000) -> AsyncIterator[FakeNode]:
    node = FakeNode(name, role, answer, heartbeat_ms)
    node.task = asyncio.ensure_future(node.serve())
    try:
        yield node
    finally:
        await node.kill()


class Real:
    """A real broker in this process that can also die abruptly. In memory, or on
    SQLite in ``data``: a durable broker confirms only after its commit, which
    :meth:`hold` keeps from ever ending. ``bind``: an endpoint to bind (a broker
    started again where one died)."""

    def __init__(self, data: Path | None = None, bind: str = "tcp://127.0.0.1:*") -> None:
        self.data = data
        storage = {"storage": "memory"} if data is None else {"data": str(data)}
        self.broker = Broker(BrokerConfig(bind=bind, heartbeat=0.1,
                                          liveness=3, **storage))  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None
        self.holding = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return self.broker.endpoint

    async def start(self) -> Real:
        ready = asyncio.Event()
        self.task = asyncio.ensure_future(self.broker.run(lambda _ep: ready.set()))
        await asyncio.wait_for(ready.wait(), 10)
        return self

    def hold(self) -> None:
        """From now on PUBLISH frames are taken and never answered (the commit hangs)."""
        async def never(batch: Any) -> None:
            self.holding.set()
            await asyncio.Event().wait()

        self.broker.store.commit = never  # type: ignore[method-assign]
        self.broker.store.commit_now = lambda batch: False  # type: ignore[method-assign]

    async def kill(self) -> None:
        """Stop at once: no BYE, no frame at all; the socket just goes away."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.broker.request_stop()
            await asyncio.wait_for(self.task, 10)

    async def ready(self, queue: str) -> int:
        """Messages ready in ``queue``, as the broker tells any client."""
        async with zq.Client(self.endpoint) as c:
            return int((await c.queue_info(queue))["stats"]["ready"])


def moved_to(endpoint: str, queue: str = "q") -> dict[str, Any]:
    return {"queue": queue, "broker": "b", "endpoint": endpoint, "version": 1}


def location(req: int, queue: str, endpoint: str) -> f.Location:
    return f.Location(req, {"queue": queue, "broker": "b", "endpoint": endpoint,
                            "version": 1, "exists": True})


def error(code: int, name: str, op: int, ref: Any, info: dict[str, Any] | None) -> f.Error:
    return f.Error(code, name, f"{name.lower()} (fake)", op, ref, info)
