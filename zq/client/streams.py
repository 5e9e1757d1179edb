"""Streams in the SDK (PROTOCOL.md section 21): the stream operations, and a consumer
that reads a stream in a group. ``StreamOps`` is a mixin of :class:`zq.Client`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from zq.client.consumer import Consumer
from zq.errors import ZqError

Start = str | int | datetime


def start_arg(start: Start | None) -> Any:
    """``start`` as MANAGE stream_join takes it: "first", "last", "next", an offset, or
    a time (a datetime, or an ISO 8601 string; naive ones are UTC)."""
    if start is None or start in ("first", "last", "next"):
        return start
    if isinstance(start, bool):
        raise ValueError(f"start must be 'first', 'last', 'next', an offset or a time, "
                         f"got {start!r}")
    if isinstance(start, int):
        if start < 1:
            raise ValueError(f"an offset is a positive int, got {start}")
        return start
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError:
            raise ValueError(f"start must be 'first', 'last', 'next', an offset or an ISO "
                             f"8601 time, got {start!r:.80}") from None
    if isinstance(start, datetime):
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        return {"time": start.timestamp()}
    raise ValueError(f"start must be 'first', 'last', 'next', an offset or a time, "
                     f"got {start!r:.80}")


class GroupConsumer(Consumer):
    """A consumer of a stream in a group: on each connection it joins the group (MANAGE
    stream_join) before its credit, so that a new session reads on where the group
    is. Each message's ``offset`` is its place in the stream."""

    def __init__(self, *args: Any, group: str, start: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.group = group
        self.start = start  # for a group that does not exist yet

    def _grant(self, n: int = 0) -> None:
        args: dict[str, Any] = {"stream": self.queue, "group": self.group}
        if self.start is not None:
            args["start"] = self.start
        try:
            fut = self._conn.request("stream_join", args)
        except ZqError as exc:
            self.fail(exc)
            return
        fut.add_done_callback(self._joined)
        super()._grant(n)

    def _joined(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, ZqError):
            self.fail(exc)  # (its CREDIT was refused too: this says why)


class StreamOps:
    """``declare_stream``, ``delete_stream``, ``streams``, ``stream``, ``reset_group``
    and ``delete_group`` (MANAGE operations)."""

    async def _manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # zq.Client's

    async def declare_stream(self, stream: str, *, max_age: float | None = None,
                             max_bytes: int | None = None) -> dict[str, Any]:
        """Declare a retained stream (or change its retention): entries older than
        ``max_age`` seconds go, and the oldest go while the bodies exceed ``max_bytes``
        (0: no limit; None: as it is, no limit for a new stream). Returns the stream's
        stats (``created``: it is new)."""
        args: dict[str, Any] = {"stream": stream}
        if max_age is not None:
            args["max_age"] = max_age
        if max_bytes is not None:
            args["max_bytes"] = max_bytes
        return await self._manage("stream_declare", args)

    async def delete_stream(self, stream: str) -> int:
        """Delete a stream, its entries and groups (none may be read); the entries held."""
        return int((await self._manage("stream_delete", {"stream": stream}))["deleted"])

    async def streams(self) -> list[dict[str, Any]]:
        """Every stream's stats and groups."""
        out: list[dict[str, Any]] = (await self._manage("streams", {}))["streams"]
        return out

    async def stream(self, stream: str) -> dict[str, Any]:
        """One stream's stats: entries, bytes, first and last offsets, its groups."""
        out: dict[str, Any] = (await self._manage("streams", {"stream": stream}))[
            "streams"][0]
        return out

    async def reset_group(self, stream: str, group: str, start: Start) -> dict[str, Any]:
        """Move a group nobody reads to ``start`` ("first", "last", "next", an offset or a
        time): it reads from there on."""
        return await self._manage("stream_group_reset", {"stream": stream, "group": group,
                                                         "start": start_arg(start)})

    async def delete_group(self, stream: str, group: str) -> None:
        await self._manage("stream_group_delete", {"stream": stream, "group": group})
