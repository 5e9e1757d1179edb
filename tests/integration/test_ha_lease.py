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
from zq.ha.lease import LeaderLease, broker_prefix, leader_key

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


def test_keys_and_arguments_are_checked() -> None:
    assert leader_key("c1", "b1") == b"/zq/c1/brokers/b1/leader"
    for cluster, bid in (("", "b1"), ("c1", "a/b")):
        with pytest.raises(ValueError, match="without '/'"):
            broker_prefix(cluster, bid)
    with pytest.raises(ValueError, match="ttl"):
        LeaderLease(None, b"k", "n", "e", ttl=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        LeaderLease(None, b"k", "n", "e", ttl=5, margin=5)  # type: ignore[arg-type]
