"""The leader lease of a broker id (zq.ha.lease) against a real etcd: one holder at a
time, a higher term for each new holder, the holder stopping on its own deadline when
etcd cannot be reached, and a clean hand-over on resign."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import pytest

from tests.etcd import Etcd
from tests.helpers import eventually
from zq.ha.keeper import LeaseKeeper
from zq.ha.lease import LeaderLease, broker_prefix, leader_key, sync_key

TTL = 2  # etcd's shortest lease


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[Etcd]:
    server = await Etcd(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        await server.stop()


def contender(etcd: Etcd, node: str, margin: float = 0.5) -> LeaderLease:
    return LeaderLease(etcd.client(), leader_key("c1", "b1"), node,
                       f"tcp://127.0.0.1:{5000 + int(node[-1])}", ttl=TTL, margin=margin)


async def test_one_holder_at_a_time_and_everyone_sees_it(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    won = await a.campaign()
    assert won is not None
    assert (won.node, won.endpoint) == ("n1", "tcp://127.0.0.1:5001")
    assert won.term > 0
    assert a.holds()
    assert await b.campaign() is None  # taken
    assert not b.holds()
    assert await b.current() == won  # node, endpoint and term, as etcd has them
    assert await a.renew()
    assert a.holds()


async def test_a_holder_that_stops_renewing_is_replaced_at_a_higher_term(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    first = await a.campaign()
    assert first is not None
    # a never renews: its own deadline passes first, then etcd lets b in.
    await eventually(lambda: not a.holds(), "a to stop counting itself leader", timeout=TTL)
    assert time.monotonic() >= a.valid_until or a.valid_until == 0.0

    async def b_wins() -> bool:
        return await b.campaign() is not None

    took = await eventually(b_wins, "b to take the expired key", timeout=TTL + 5, step=0.1)
    assert b.term is not None
    assert b.term > first.term
    assert not await a.renew()  # its lease is gone: it knows it lost
    assert not a.holds()
    assert took <= TTL + 2


async def test_a_holder_cut_off_from_etcd_stops_before_its_lease_ends(etcd: Etcd) -> None:
    a = contender(etcd, "n1", margin=0.5)
    assert await a.campaign() is not None
    assert await a.renew()
    renewed_until = a.valid_until
    etcd.pause()  # etcd answers nothing: renewals cannot succeed
    try:
        with pytest.raises(aetcd.exceptions.ConnectionTimeoutError):
            await asyncio.wait_for(a.renew(), 2 * TTL)
        # No renewal succeeded, so it stops at the deadline it had: TTL - margin after
        # the start of the last good renewal, before etcd could give the key away.
        assert a.valid_until == renewed_until
        await eventually(lambda: not a.holds(), "a to stop at its deadline", timeout=TTL)
        assert time.monotonic() >= renewed_until
    finally:
        etcd.resume()


async def test_resign_hands_over_at_once(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    first = await a.campaign()
    assert first is not None
    await a.resign()
    assert not a.holds()
    second = await b.campaign()  # no wait for the TTL
    assert second is not None
    assert second.term > first.term
    await a.resign()  # holding nothing: nothing happens
    assert await b.current() == second


async def test_resign_of_an_old_term_leaves_the_new_holder_alone(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    assert await a.campaign() is not None
    await etcd.client().delete(leader_key("c1", "b1"))  # an operator removes the key
    assert not await a.renew()  # a notices on its next renewal
    second = await b.campaign()
    assert second is not None
    await a.resign()
    assert await b.current() == second


async def test_only_the_primary_names_the_standby(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    assert not await a.set_sync("n2")  # holds nothing: writes nothing
    assert await a.sync() is None
    first = await a.campaign()
    assert first is not None
    assert await a.set_sync("n2")
    sync = await b.sync()
    assert sync is not None
    assert (sync.standby, sync.term) == ("n2", first.term)
    assert not await b.set_sync("n1")  # not the primary
    assert await a.set_sync(None)  # alone
    sync = await b.sync()
    assert sync is not None
    assert sync.standby is None
    await etcd.client().delete(a.key)  # a's claim removed behind its back
    assert await b.campaign() is not None
    assert a.holds()  # by its own clock a still does, for now
    assert not await a.set_sync("n1")  # etcd's compare refuses its old term
    sync = await b.sync()
    assert sync is not None
    assert sync.standby is None


async def test_a_sync_write_decided_on_an_older_revision_never_lands(etcd: Etcd) -> None:
    """The link writes sync only if it is as it read it: a join that etcd applies
    late (sent before a drop, answered after) cannot name the dropped standby again."""
    a = contender(etcd, "n1")
    assert await a.campaign() is not None
    assert await a.set_sync(None, revision=0)  # never written: revision 0
    first = await a.sync()
    assert first is not None
    assert await a.set_sync("n2", first.revision)  # the join, on what it read
    joined = await a.sync()
    assert joined is not None
    assert joined.standby == "n2"
    assert await a.set_sync(None, joined.revision)  # the drop
    assert not await a.set_sync("n2", first.revision)  # the join again, late: refused
    now = await a.sync()
    assert now is not None
    assert now.standby is None
    await etcd.client().put(a.sync_key, b"not zq's")
    odd = await a.sync()  # a value not zq's: nobody may be promoted, and it can be replaced
    assert odd is not None
    assert (odd.standby, odd.primary) == (None, None)
    assert await a.set_sync(None, odd.revision)


async def test_only_the_standby_in_sync_takes_over(etcd: Etcd) -> None:
    a, b, c = contender(etcd, "n1"), contender(etcd, "n2"), contender(etcd, "n3")
    first = await a.campaign()
    assert first is not None
    assert await a.set_sync("n2")
    await a.resign()  # the primary is gone (as if it had died: the key is free)
    assert await c.campaign(in_sync=True) is None  # n3 is not in sync
    second = await b.campaign(in_sync=True)
    assert second is not None
    assert second.term > first.term
    assert await b.set_sync("n1")  # the new primary names its standby, at its term
    sync = await c.sync()
    assert sync is not None
    assert (sync.standby, sync.term) == ("n1", second.term)
    assert not await a.set_sync("n3")  # the old primary cannot, whatever it thinks


async def test_a_takeover_compares_the_sync_entry_it_read(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    assert await a.campaign() is not None
    assert await a.set_sync("n2")
    read = await b.sync()
    assert read is not None
    assert await a.set_sync(None)  # the primary drops n2 from sync
    await a.resign()
    tx = b.client.transactions
    ok, _ = await b.client.transaction(  # what campaign(in_sync=True) would send
        compare=[tx.create(b.key) == 0, tx.mod(b.sync_key) == read.revision],
        success=[tx.put(b.key, b"{}")], failure=[])
    assert not ok  # the entry it read is stale: no takeover
    assert await b.campaign(in_sync=True) is None  # and read afresh, it is not named


async def test_the_keeper_holds_the_lease_as_long_as_etcd_answers(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1"), contender(etcd, "n2")
    assert await a.campaign() is not None
    lost: list[str] = []
    keeper = LeaseKeeper(a, lost.append)
    task = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: keeper.renewals >= 7, "seven renewals", timeout=4 * TTL)
        assert a.holds()  # more than twice the TTL later
        assert await b.campaign() is None
        assert lost == []
    finally:
        task.cancel()


async def test_the_keeper_gives_up_at_the_deadline_when_etcd_is_silent(etcd: Etcd) -> None:
    a, b = contender(etcd, "n1", margin=0.5), contender(etcd, "n2")
    first = await a.campaign()
    assert first is not None
    lost: list[str] = []
    keeper = LeaseKeeper(a, lost.append)
    task = asyncio.create_task(keeper.run())
    await eventually(lambda: keeper.renewals >= 1, "a renewal")
    etcd.pause()
    paused_at = time.monotonic()
    try:
        why = await asyncio.wait_for(task, 2 * TTL)
        gave_up = time.monotonic()
        assert lost == [why]
        assert "deadline" in why
        assert keeper.failures >= 1
        assert not a.holds()
        # It stopped within TTL - margin of its last good renewal, so before etcd can
        # have let anyone else in (at least TTL after that renewal).
        assert gave_up - paused_at <= TTL - 0.5 + 0.3
    finally:
        etcd.resume()
    second = await eventually_campaign(b)
    assert second > first.term


async def test_the_keeper_reports_a_claim_taken_away(etcd: Etcd) -> None:
    a = contender(etcd, "n1")
    assert await a.campaign() is not None
    lost: list[str] = []
    task = asyncio.create_task(LeaseKeeper(a, lost.append).run())
    await etcd.client().delete(a.key)  # an operator removes it
    why = await asyncio.wait_for(task, TTL)
    assert lost == [why]
    assert "ended" in why
    assert not a.holds()


async def eventually_campaign(node: LeaderLease) -> int:
    async def won() -> bool:
        return await node.campaign() is not None

    await eventually(won, f"{node.node} to take the key", timeout=TTL + 5, step=0.1)
    assert node.term is not None
    return node.term


def test_keys_and_arguments_are_checked() -> None:
    assert leader_key("c1", "b1") == b"/zq/c1/brokers/b1/leader"
    for cluster, bid in (("", "b1"), ("c1", "a/b")):
        with pytest.raises(ValueError, match="without '/'"):
            broker_prefix(cluster, bid)
    assert sync_key(b"/zq/c1/brokers/b1/leader") == b"/zq/c1/brokers/b1/sync"
    with pytest.raises(ValueError, match="not a leader key"):
        sync_key(b"/zq/c1/brokers/b1/other")
    with pytest.raises(ValueError, match="ttl"):
        LeaderLease(None, b"k", "n", "e", ttl=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        LeaderLease(None, b"k", "n", "e", ttl=5, margin=5)  # type: ignore[arg-type]
