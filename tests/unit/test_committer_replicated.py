"""Committer.stored() on a replicated broker (what a queue move waits for before the
target lists the queue): it returns only once the standby has every batch so far,
and raises what the replicator answers instead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from zq.committer import Committer
from zq.errors import Unavailable, ZqError


class FakeStore:
    durable = True


class FakeReplicator:
    """Holds what waits; the test releases it as the standby's ack would."""

    def __init__(self) -> None:
        self.held: list[Callable[[ZqError | None], None]] = []

    def hold(self, confirm: Callable[[ZqError | None], None], send: Callable[[], None]
             ) -> None:
        self.held.append(confirm)


def committer(repl: FakeReplicator) -> Committer:
    c = Committer(core=Any, store=FakeStore(), wake=lambda: None,  # type: ignore[arg-type]
                  replicator=repl)  # type: ignore[arg-type]
    return c


async def commit_returns(c: Committer) -> None:
    """A commit completes (what the broker's commit cycle does)."""
    await asyncio.sleep(0)
    c.count += 1
    c._done.set()


async def test_stored_waits_for_the_standby_as_well_as_the_commit() -> None:
    repl = FakeReplicator()
    c = committer(repl)
    waiting = asyncio.ensure_future(c.stored())
    await commit_returns(c)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()  # stored here, not yet on the standby
    assert len(repl.held) == 1
    repl.held[0](None)  # the standby's ack
    await asyncio.wait_for(waiting, 1)


async def test_stored_raises_what_the_replicator_answers() -> None:
    repl = FakeReplicator()
    c = committer(repl)
    waiting = asyncio.ensure_future(c.stored())
    await commit_returns(c)
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(repl.held) == 1
    repl.held[0](Unavailable("fenced"))
    with pytest.raises(Unavailable, match="fenced"):
        await asyncio.wait_for(waiting, 1)
