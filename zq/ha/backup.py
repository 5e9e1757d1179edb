"""A backup for a standby that must start over: an online copy of the primary's
database, sent in chunks on the replication socket (PROTOCOL.md section 18.1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from zq.ha import wire
from zq.persistence import replica as files

CHUNK = 1 << 20  # bytes of a backup per message
OUT = "replica-out.db"  # the copy being sent, in the data folder


async def send_backup(data: Path, identity: bytes,
                      send: Callable[[bytes, list[bytes]], Awaitable[None]]) -> tuple[int, int]:
    """Copy the database in ``data`` (SQLite's online backup, one read transaction, in
    a thread) and send it to ``identity`` in chunks, each with its offset, reading and
    waiting for room as it goes; return the copy's position. The copy is deleted
    after. OSError or StorageError if it could not be made or read."""
    tmp = data / OUT
    try:
        position = await asyncio.to_thread(files.backup, data, tmp)
        with tmp.open("rb") as f:
            last, at = False, 0
            while not last:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                last = len(chunk) < CHUNK
                await send(identity, wire.control("chunk", chunk, term=position[0],
                                                  seq=position[1], at=at, last=last))
                at += len(chunk)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return position
