"""A clustered broker's core: placement at the store, links, FORWARD, CATALOG, LOCATE.

PROTOCOL.md section 17: a broker creates only the queues placed on it (else MOVED,
or STALE_CONFIG for a router on another version of the cluster file), welcomes
routers' links with its catalog, and serves the clients behind a link as inner
sessions whose frames go back as FORWARD.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_core import A, Harness, errors_of, only
from zq.cluster.config import ClusterConfig
from zq.cluster.placement import place
from zq.core.membership import Membership
from zq.errors import ClusterMismatch, Moved, ProtocolViolation, StaleConfig
from zq.protocol import codec
from zq.protocol import frames as f

L = b"zqr-r1-link"
CFG = ClusterConfig.from_dict({
    "cluster_id": "demo", "version": 3,
    "brokers": [{"id": "b1", "endpoint": "tcp://127.0.0.1:5601"},
                {"id": "b2", "endpoint": "tcp://127.0.0.1:5602"},
                {"id": "b3", "endpoint": "tcp://127.0.0.1:5603"}]})


def names_on(broker: str, n: int = 3) -> list[str]:
    return [name for name in (f"q{i}" for i in range(200)) if place(name, CFG) == broker][:n]


def clustered() -> Harness:
    h = Harness()
    h.core.membership = Membership(CFG, "b1")
    return h


def link(h: Harness, version: int = 3, cluster: str = "demo") -> list[tuple[bytes, f.Frame]]:
    h.send(L, f.Hello("router r1", link={"cluster": cluster, "version": version,
                                         "router": "r1"}))
    return h.take()


def forward(h: Harness, key: bytes, frame: f.Frame) -> None:
    h.send(L, f.Forward(key, codec.encode(frame)))


def inner(out: list[tuple[bytes, f.Frame]], key: bytes) -> list[Any]:
    """The frames sent to the client ``key`` behind the link (by its inner identity)."""
    return [fr for ident, fr in out if ident == L + b"\x00" + key]


def test_a_new_queue_placed_elsewhere_is_moved_with_where_it_goes() -> None:
    h = clustered()
    h.hello(A)
    mine, theirs = names_on("b1")[0], names_on("b2")[0]
    h.send(A, f.Publish(theirs, 1, [b"x"]))
    [(_, err)] = errors_of(h.take())
    assert (err.code, err.ref, err.op) == (Moved.code, 1, f.PUBLISH)
    assert err.info == {"queue": theirs, "broker": "b2", "endpoint": "tcp://127.0.0.1:5602",
                        "version": 3}
    assert theirs not in h.core.queues
    h.send(A, f.Publish(mine, 2, [b"x"]))
    h.core.committed()
    assert only(h.take(), f.Confirm).entries == [(2, 1, 1)]
    h.send(A, f.Credit(theirs, 5))
    [(_, err)] = errors_of(h.take())
    assert (err.code, err.ref) == (Moved.code, theirs)


def test_a_queue_it_has_is_served_whatever_the_file_says() -> None:
    h = clustered()
    h.hello(A)
    theirs = names_on("b2")[0]
    h.core.queue(theirs)  # it has it (made before the cluster, or moved here)
    h.send(A, f.Publish(theirs, 1, [b"x"]))
    h.core.committed()
    assert only(h.take(), f.Confirm).entries == [(1, 1, 1)]


def test_a_link_is_welcomed_with_the_cluster_and_a_catalog_then_its_changes() -> None:
    h = clustered()
    h.core.queue("old")
    out = link(h)
    welcome = only(out, f.Welcome)
    assert welcome.cluster == {"id": "demo", "version": 3, "node": "b1", "role": "broker"}
    assert only(out, f.Catalog) == f.Catalog(1, "snapshot", ["old"])
    h.hello(A)
    for seq, name in enumerate(names_on("b1", 2), 1):
        h.send(A, f.Publish(name, seq, [b"x"]))
    h.core.committed()
    h.core.dispatch()
    cats = [fr for ident, fr in h.take() if isinstance(fr, f.Catalog)]
    assert cats == [f.Catalog(2, "add", names_on("b1", 2))]
    h.core.announce()
    assert h.take() == []


def test_a_link_from_another_cluster_or_to_a_lone_broker_is_refused() -> None:
    h = clustered()
    [(_, err)] = errors_of(link(h, cluster="other"))
    assert (err.code, err.op) == (ClusterMismatch.code, f.HELLO)
    assert L not in h.core.peers
    lone = Harness()
    [(_, err)] = errors_of(link(lone))
    assert err.code == ClusterMismatch.code


def test_clients_behind_a_link_are_inner_sessions_answered_by_forward() -> None:
    h = clustered()
    link(h)
    mine = names_on("b1")[0]
    forward(h, b"c1", f.Hello("client-1", producer=b"p" * 16))
    assert isinstance(inner(h.take(), b"c1")[0], f.Welcome)
    forward(h, b"c1", f.Publish(mine, 9, [b"body"]))
    h.core.committed()
    assert inner(h.take(), b"c1") == [f.Confirm([(9, 1, 1)])]
    assert h.core.routes[L + b"\x00c1"] == (L, b"c1")
    # STATS counts the FORWARD frames received, on the link and in all (those sent back
    # are counted by the shell, which wraps them: tests/system/test_federation.py).
    assert h.core.counters["forwards_in"] == 2
    [shown] = h.core.stats()["cluster"]["by_link"].values()
    assert (shown["name"], shown["forwards_in"], shown["inner_sessions"]) == ("router r1", 2, 1)
    # The inner session needs no heartbeats of its own: it lives with its link.
    h.send(L, f.Heartbeat(), at=h.now + 2.5)
    h.core.tick(h.now + 4.0)  # the client was silent for 4 s, past a session's 3 s
    assert L + b"\x00c1" in h.core.peers
    h.core.tick(h.now + 6.0)  # the link too, for 3.5 s: both end
    assert L not in h.core.peers
    assert L + b"\x00c1" not in h.core.peers


def test_a_router_on_another_file_version_gets_stale_config_with_the_newer_file() -> None:
    h = clustered()
    link(h, version=2)
    forward(h, b"c1", f.Hello("client-1"))
    h.take()
    forward(h, b"c1", f.Publish(names_on("b1")[0], 4, [b"x"]))
    [err] = [fr for fr in inner(h.take(), b"c1") if isinstance(fr, f.Error)]
    assert (err.code, err.ref) == (StaleConfig.code, 4)
    assert err.info is not None
    assert err.info["version"] == 3
    assert ClusterConfig.from_dict(err.info["config"]) == CFG


def test_forward_from_a_plain_client_or_nested_is_a_violation() -> None:
    h = clustered()
    h.hello(A)
    h.send(A, f.Forward(b"c1", codec.encode(f.Heartbeat())))
    [(_, err)] = errors_of(h.take())
    assert err.code == ProtocolViolation.code
    assert h.core.counters["forwards_in"] == 0  # not over a link: not counted
    link(h)
    forward(h, b"c2", f.Forward(b"c3", codec.encode(f.Heartbeat())))
    [err] = [fr for fr in inner(h.take(), b"c2") if isinstance(fr, f.Error)]
    assert err.code == ProtocolViolation.code


def test_when_a_link_ends_its_clients_sessions_end_with_it() -> None:
    h = clustered()
    link(h)
    forward(h, b"c1", f.Hello("client-1"))
    forward(h, b"c2", f.Hello("client-2"))
    h.take()
    assert {L + b"\x00c1", L + b"\x00c2"} <= set(h.core.peers)
    h.send(L, f.Bye("router stopping"))
    assert not any(p.startswith(L) for p in h.core.peers)
    assert h.core.routes == {}
    assert h.core.links == {}


@pytest.mark.parametrize("exists", [True, False])
def test_locate_answers_where_a_queue_is_or_would_go(exists: bool) -> None:
    h = clustered()
    h.hello(A)
    name = names_on("b3")[0]
    if exists:
        h.core.queue(name)
    h.send(A, f.Locate(5, name))
    loc = only(h.take(), f.Location)
    assert loc.req == 5
    assert loc.loc == ({"queue": name, "broker": "b1", "endpoint": "tcp://127.0.0.1:5601",
                        "version": 3, "exists": True} if exists else
                       {"queue": name, "broker": "b3", "endpoint": "tcp://127.0.0.1:5603",
                        "version": 3, "exists": False})


def test_reload_takes_a_newer_file_of_the_same_cluster_only() -> None:
    m = Membership(CFG, "b1")
    newer = ClusterConfig.from_dict({**CFG.to_dict(), "version": 4})
    other = ClusterConfig.from_dict({**CFG.to_dict(), "cluster_id": "x", "version": 9})
    assert "ignored" in m.reload(other)
    assert m.reload(newer) == "now on version 4"
    assert "older" in m.reload(CFG)
    assert m.cfg.version == 4
