"""A router and queue moves (PROTOCOL.md 17.5): a broker that moved a queue away says
where it went in its CATALOG; the router sends the queue's frames there while its new
broker does not list it yet, follows several moves, and never loops."""

from __future__ import annotations

import pytest

from tests.unit.test_router_core import (
    C1,
    client_ready,
    enc,
    forwarded,
    make,
    publish,
    welcome,
)
from zq.errors import MalformedFrame
from zq.protocol import codec
from zq.protocol import frames as f


def test_frames_for_a_moved_queue_go_where_it_went() -> None:
    core = make("b1", "b2", catalogs={"b1": ["a.q"]})
    client_ready(core)
    core.from_broker("b1", enc(f.Catalog(2, "remove", ["a.q"], {"a.q": "b2"})), 0.0)
    core.from_client(C1, publish("a.q"), 0.0)  # pinned to b1, moved to b2
    assert [(b, type(fr)) for b, _, fr in forwarded(core)] == [("b2", f.Hello),
                                                               ("b2", f.Publish)]
    core.from_client(C1, enc(f.Locate(4, "a.q")), 0.0)
    [(_, parts)] = core.take()[0]
    loc = f.Location(4, {"queue": "a.q", "broker": "b2", "endpoint": "tcp://10.0.0.2:5601",
                         "version": 1, "exists": True})
    assert codec.decode(parts) == loc
    core.from_broker("b2", enc(f.Catalog(2, "add", ["a.q"])), 0.0)  # the move is done
    core.from_client(C1, publish("a.q", 2), 0.0)
    assert [b for b, _, _ in forwarded(core)] == ["b2"]


def test_a_snapshot_carries_the_moves_and_a_return_clears_them() -> None:
    core = make("b2")
    core.from_broker("b1", welcome("b1"), 0.0)
    core.from_broker("b1", enc(f.Catalog(1, "snapshot", [], {"a.q": "b2"})), 0.0)
    assert core.owner(b"a.q") == "b2"
    core.from_broker("b2", enc(f.Catalog(2, "remove", ["a.q"], {"a.q": "b1"})), 0.0)
    assert core.moved_to(b"a.q") is None  # b1 says b2, b2 says b1: a loop means none
    assert core.owner(b"a.q") == "b1"  # the cluster file's pin decides then
    core.from_broker("b1", enc(f.Catalog(2, "add", ["a.q"])), 0.0)  # back on b1
    assert core.links["b1"].moved == {}
    assert core.owner(b"a.q") == "b1"


def test_catalog_moved_map_is_checked() -> None:
    cat = f.Catalog(3, "remove", ["a.q"], {"a.q": "b2"})
    assert codec.decode(codec.encode(cat)) == cat
    bad = codec.encode(f.Catalog(3, "remove", ["a.q"]))
    import msgpack

    for moved in ({"a.q": 7}, ["a.q"], {"": "b2"}):
        bad[1] = msgpack.packb([3, "remove", ["a.q"], moved])
        with pytest.raises(MalformedFrame):
            codec.decode(bad)
