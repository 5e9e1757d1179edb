"""The broker core's access rules without I/O (zq.core.access): whose session a frame
may use, what a key may do (the permissions file), the bounds on sessions and on
malformed frames, and ending the sessions of keys whose rights changed.

Every frame is handed in as the shell hands it: with the key its connection proved
(``user``) when the core is ``secure``. ``core.noted`` is cleared before each frame,
as the shell clears it after looking at it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.test_core import A, B, Harness, P, delivers, errors_of, only
from tests.unit.test_core_cluster import CFG as CLUSTER
from tests.unit.test_core_cluster import L, inner
from zq.cluster.placement import place
from zq.config import BrokerConfig
from zq.core.membership import Membership
from zq.errors import (
    ClusterMismatch,
    Forbidden,
    InvalidArgument,
    MalformedFrame,
    ProtocolViolation,
    TooManySessions,
    UnknownQueue,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security import bounds as access
from zq.security.permissions import SERVER, Permissions

C = b"consumer-c"
JUNK = [b"junk"]  # not a zq frame at all: MALFORMED_FRAME
LINK_HELLO = f.Hello("router r1", link={"cluster": "demo", "version": 3, "router": "r1"})

PERMISSIONS = """
[keys.alice]
publish = ["orders.*", "shared"]
consume = ["orders.*"]
manage = ["orders.#"]

[keys.bob]
publish = ["shared"]
consume = ["shared"]

[keys.ops]            # an operator: admin and every queue's settings, but no publish
admin = true
manage = ["#"]

[keys.rtr]            # a router's key
relay = true

[keys.plain]          # a key that may publish anywhere, but is no router's
publish = ["#"]
"""

Out = list[tuple[bytes, f.Frame]]



class Keyed(Harness):
    """A Harness whose frames carry the key their connection proved."""

    def __init__(self, rights: Permissions | None = None, secure: bool = True,
                 **cfg: Any) -> None:
        super().__init__(**cfg)
        self.core.secure = secure
        self.core.rights = rights

    def as_(self, identity: bytes, user: str | None, frame: f.Frame | list[bytes]) -> None:
        """``frame`` from ``identity`` on a connection that proved ``user``."""
        parts = frame if isinstance(frame, list) else codec.encode(frame)
        self.core.noted.clear()
        self.core.receive(identity, parts, self.now, user)

    def open(self, identity: bytes, user: str | None, **hello: Any) -> None:
        self.as_(identity, user, f.Hello(identity.decode(), **hello))
        only(self.take(), f.Welcome)

    def ready(self, queue: str) -> int:
        q = self.core.queues.get(queue)
        return 0 if q is None else q.ready_count()


def refusal(out: Out) -> f.Error:
    """The one ERROR in ``out``, which must be FORBIDDEN."""
    [(_, err)] = errors_of(out)
    assert err.name == Forbidden.name, err
    assert err.code == Forbidden.code
    return err


@pytest.fixture
def rights(tmp_path: Path) -> Permissions:
    path = tmp_path / "permissions.toml"
    path.write_text(PERMISSIONS)
    return Permissions.load(path)


def on_b1(prefix: str, n: int = 2) -> list[str]:
    """Queue names ``prefix``N that the cluster file places on broker b1."""
    names = (f"{prefix}{i}" for i in range(500))
    return [name for name in names if place(name, CLUSTER) == "b1"][:n]


def clustered(rights: Permissions | None) -> Keyed:
    h = Keyed(rights)
    h.core.membership = Membership(CLUSTER, "b1")
    return h


def link(h: Keyed, key: str) -> Out:
    h.as_(L, key, LINK_HELLO)
    return h.take()


def forward(h: Keyed, key: bytes, frame: f.Frame | list[bytes], link_key: str = "rtr"
            ) -> None:
    parts = frame if isinstance(frame, list) else codec.encode(frame)
    h.as_(L, link_key, f.Forward(key, parts))


# ------------------------------------------------------------------ whose session


def test_the_broker_counts_refused_frames_and_cut_peers() -> None:
    assert {"frames_refused", "peers_cut"} <= set(Keyed().core.counters)


def test_a_session_belongs_to_the_key_that_opened_it() -> None:
    h = Keyed()
    h.as_(A, "alice", f.Hello("a"))
    only(h.take(), f.Welcome)
    assert h.core.peers[A].user == "alice"
    assert h.core.noted == ["session"]
    assert h.core.per_key == {"alice": 1}

    h.as_(A, "bob", f.Publish("q", 1, [b"x"]))
    err = refusal(h.run())
    assert (err.op, err.ref) == (0, None)
    assert h.ready("q") == 0
    assert h.core.counters["published"] == 0
    assert h.core.noted == []
    h.as_(A, "bob", f.Bye("bob leaves"))
    refusal(h.take())
    h.as_(A, "bob", f.Hello("bob takes over"))
    refusal(h.take())
    assert h.core.peers[A].user == "alice"
    assert h.core.counters["frames_refused"] == 3

    h.as_(A, "alice", f.Publish("q", 2, [b"y"]))
    assert only(h.run(), f.Confirm).entries == [(2, 1, 1)]
    assert h.ready("q") == 1


def test_a_hello_naming_a_user_from_a_direct_client_gets_the_proven_key() -> None:
    h = Keyed()
    h.as_(A, "bob", f.Hello("a", user="alice"))
    only(h.take(), f.Welcome)
    assert h.core.peers[A].user == "bob"
    assert h.core.per_key == {"bob": 1}


def test_without_curve_sessions_have_no_key_and_any_frame_may_use_them() -> None:
    h = Keyed(secure=False)
    h.as_(A, None, f.Hello("a", user="alice"))
    only(h.take(), f.Welcome)
    assert h.core.peers[A].user is None
    h.as_(A, None, f.Publish("q", 1, [b"x"]))
    assert only(h.run(), f.Confirm).entries == [(1, 1, 1)]


# ------------------------------------------------------------------ rights


def test_publish_is_allowed_per_pattern_and_refused_with_the_seq(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.as_(A, "alice", f.Publish("orders.eu", 1, [b"x"]))
    h.as_(A, "alice", f.Publish("shared", 2, [b"y"]))
    assert only(h.run(), f.Confirm).entries == [(1, 1, 1), (2, 2, 1)]
    for seq, queue in enumerate(["orders.eu.x", "orders", "invoices"], 3):
        h.as_(A, "alice", f.Publish(queue, seq, [b"z"]))
        err = refusal(h.run())
        assert (err.op, err.ref) == (f.PUBLISH, seq)
        assert queue not in h.core.queues
    assert h.core.counters["published"] == 2
    assert A in h.core.peers  # a refusal is not fatal


def test_a_key_without_a_table_may_do_nothing_but_open_a_session(
        rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(C, "carol")
    h.as_(C, "carol", f.Publish("shared", 1, [b"x"]))
    assert refusal(h.run()).ref == 1
    h.as_(C, "carol", f.Manage(2, "sync", {}))  # a barrier: any session may
    assert only(h.run(), f.ManageReply).req == 2


def test_credit_without_consume_is_refused_and_delivers_nothing(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.open(B, "bob")
    h.as_(A, "alice", f.Publish("orders.eu", 1, [b"x"]))
    h.run()
    h.as_(B, "bob", f.Credit("orders.eu", 5))
    out = h.run()
    err = refusal(out)
    assert (err.op, err.ref) == (f.CREDIT, "orders.eu")
    assert delivers(out) == []
    assert h.core.peers[B].subs == {}
    assert h.ready("orders.eu") == 1
    h.as_(A, "alice", f.Credit("orders.eu", 5))
    [(who, d)] = delivers(h.run())
    assert (who, d.bodies) == (A, [b"x"])


def test_manage_needs_manage_on_its_queue(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.open(B, "bob")
    h.core.queue("orders.eu")
    h.as_(B, "bob", f.Manage(7, "pause", {"queue": "orders.eu"}))
    err = refusal(h.run())
    assert (err.op, err.ref) == (f.MANAGE, 7)
    assert h.core.queues["orders.eu"].paused is False
    h.as_(A, "alice", f.Manage(8, "pause", {"queue": "orders.eu"}))
    assert only(h.run(), f.ManageReply).result == {"queue": "orders.eu", "paused": True}
    assert h.core.queues["orders.eu"].paused is True


def test_manage_without_a_queue_checks_the_empty_name(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.as_(A, "alice", f.Manage(3, "pause", {"queue": 42}))  # no string: checked as ""
    assert refusal(h.run()).ref == 3


def test_admin_operations_need_admin(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.open(B, "ops")
    for req, op in enumerate(["list", "schedule_ls", "move_status", "frobnicate"], 1):
        h.as_(A, "alice", f.Manage(req, op, {}))
        err = refusal(h.run())
        assert (err.op, err.ref) == (f.MANAGE, req)
    h.as_(B, "ops", f.Manage(10, "list", {}))
    assert only(h.run(), f.ManageReply).req == 10
    h.as_(B, "ops", f.Manage(11, "frobnicate", {}))  # allowed: then unknown
    [(_, err)] = errors_of(h.run())
    assert (err.code, err.ref) == (InvalidArgument.code, 11)


def test_redrive_also_needs_publish_on_its_target(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.open(B, "ops")
    h.core.queue("orders.eu.dlq")
    h.as_(A, "alice", f.Manage(1, "redrive", {"queue": "orders.eu.dlq", "to": "invoices"}))
    assert refusal(h.run()).ref == 1
    assert "invoices" not in h.core.queues
    h.as_(B, "ops", f.Manage(2, "redrive", {"queue": "orders.eu.dlq", "to": "orders.us"}))
    assert refusal(h.run()).ref == 2  # admin and manage ["#"] grant no publish
    h.as_(A, "alice", f.Manage(3, "redrive", {"queue": "orders.eu.dlq", "to": "orders.us"}))
    assert only(h.run(), f.ManageReply).result["moved"] == 0


def test_stats_needs_admin(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, "alice")
    h.open(B, "ops")
    h.as_(A, "alice", f.Stats(5))
    err = refusal(h.take())
    assert (err.op, err.ref) == (f.STATS, 5)
    h.as_(B, "ops", f.Stats(6))
    assert only(h.take(), f.StatsReply).req == 6


def test_the_servers_own_key_may_do_everything(rights: Permissions) -> None:
    h = Keyed(rights)
    h.open(A, SERVER)
    h.open(B, SERVER)
    h.as_(A, SERVER, f.Publish("invoices", 1, [b"x"]))
    h.as_(B, SERVER, f.Credit("invoices", 1))
    h.as_(A, SERVER, f.Manage(2, "pause", {"queue": "elsewhere"}))  # unknown, not refused
    h.as_(A, SERVER, f.Manage(3, "list", {}))
    h.as_(A, SERVER, f.Stats(4))
    out = h.run()
    assert [(e.code, e.ref) for _, e in errors_of(out)] == [(UnknownQueue.code, 2)]
    assert [d.bodies for _, d in delivers(out)] == [[b"x"]]
    assert only(out, f.ManageReply).req == 3
    assert only(out, f.StatsReply).req == 4


def test_without_a_permissions_file_every_key_may_do_everything() -> None:
    h = Keyed(None)
    h.open(A, "nobody-in-particular")
    h.open(B, "someone")
    h.core.queue("other")
    h.as_(A, "nobody-in-particular", f.Publish("anything", 1, [b"x"]))
    h.as_(B, "someone", f.Credit("anything", 1))
    h.as_(A, "nobody-in-particular", f.Manage(2, "pause", {"queue": "other"}))
    h.as_(A, "nobody-in-particular", f.Manage(3, "list", {}))
    h.as_(A, "nobody-in-particular", f.Stats(4))
    out = h.run()
    assert errors_of(out) == []
    assert len(delivers(out)) == 1
    assert [r.req for _, r in out if isinstance(r, f.ManageReply)] == [2, 3]


# ------------------------------------------------------------------ routers' links


def test_a_relaying_links_clients_have_the_keys_it_vouches_for(rights: Permissions) -> None:
    h = clustered(rights)
    only(link(h, "rtr"), f.Welcome)
    assert h.core.peers[L].user == "rtr"
    mine, = on_b1("orders.", 1)
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    assert isinstance(inner(h.take(), b"c1")[0], f.Welcome)
    assert h.core.noted == []  # the link's connection has its session already
    assert h.core.peers[L + b"\x00c1"].user == "alice"
    assert h.core.per_key == {"rtr": 1, "alice": 1}
    forward(h, b"c1", f.Publish(mine, 1, [b"x"]))  # alice's right, not the router's
    h.core.committed()
    assert inner(h.take(), b"c1") == [f.Confirm([(1, 1, 1)])]
    forward(h, b"c1", f.Publish("invoices", 2, [b"y"]))
    [err] = inner(h.run(), b"c1")
    assert (err.name, err.ref) == (Forbidden.name, 2)


def test_a_client_behind_a_link_naming_no_key_has_the_links() -> None:
    h = clustered(None)
    link(h, "rtr")
    forward(h, b"c1", f.Hello("client-1"))
    assert h.core.peers[L + b"\x00c1"].user == "rtr"


def test_behind_a_link_that_may_not_relay_clients_have_the_links_key(
        rights: Permissions) -> None:
    h = clustered(rights)  # the link opened while its key could relay...
    only(link(h, "rtr"), f.Welcome)
    # ... then lost the right (a reload, before the shell ends the link's session)
    h.core.rights = Permissions({"keys": {"rtr": {"publish": ["#"]}}})
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    assert h.core.peers[L + b"\x00c1"].user == "rtr"
    assert h.core.per_key == {"rtr": 2}


def test_a_link_from_a_key_that_may_not_relay_opens_and_its_clients_have_its_key(
        rights: Permissions) -> None:
    """A router whose key may not relay still links; the key it names for its clients
    is not believed: they have the router's key, and its rights."""
    h = clustered(rights)
    only(link(h, "plain"), f.Welcome)
    assert L in h.core.links
    h.core.noted.clear()
    forward(h, b"c1", f.Hello("client-1", user="alice"), link_key="plain")
    assert h.core.peers[L + b"\x00c1"].user == "plain"
    assert h.core.per_key == {"plain": 2}
    assert h.core.noted == []  # a client behind a link has no connection of its own


def test_a_link_from_another_cluster_notes_no_session() -> None:
    h = clustered(None)
    h.as_(L, "rtr", f.Hello("router r1", link={"cluster": "other", "version": 3,
                                               "router": "r1"}))
    [(_, err)] = errors_of(h.take())
    assert err.code == ClusterMismatch.code
    assert L not in h.core.peers
    assert "session" not in h.core.noted


def test_a_direct_client_cannot_pose_as_a_client_behind_a_link(rights: Permissions) -> None:
    h = clustered(rights)
    link(h, "rtr")
    mine, = on_b1("orders.", 1)
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    h.take()
    posed = L + b"\x00c1"
    h.as_(posed, "plain", f.Publish(mine, 1, [b"forged"]))  # on alice's session
    h.core.committed()
    refusal(h.take())
    assert h.ready(mine) == 0
    forward(h, b"c1", f.Bye("done"))
    h.as_(posed, "plain", f.Hello("evil", user="ops"))
    h.take()
    assert h.core.peers.get(posed) is None or h.core.peers[posed].user == "plain"


# ------------------------------------------------------------------ session bounds


def test_max_sessions_refuses_the_next_hello_until_one_ends() -> None:
    h = Keyed(max_sessions=2)
    h.open(A, "alice")
    h.open(B, "bob")
    h.as_(C, "carol", f.Hello("c"))
    [(who, err)] = errors_of(h.take())
    assert (who, err.code, err.op) == (C, TooManySessions.code, f.HELLO)
    assert C not in h.core.peers
    assert h.core.noted == []
    assert h.core.per_key == {"alice": 1, "bob": 1}
    h.as_(A, "alice", f.Bye("leaving"))
    assert h.core.per_key == {"bob": 1}
    h.open(C, "carol")
    assert h.core.per_key == {"bob": 1, "carol": 1}


def test_max_sessions_per_key_counts_each_key_apart() -> None:
    h = Keyed(max_sessions_per_key=2)
    h.open(A, "alice")
    h.open(B, "alice")
    h.as_(C, "alice", f.Hello("c"))
    [(_, err)] = errors_of(h.take())
    assert (err.code, err.op) == (TooManySessions.code, f.HELLO)
    assert C not in h.core.peers
    assert h.core.per_key == {"alice": 2}
    h.open(P, "bob")  # another key is not held back
    h.as_(B, "alice", f.Bye())
    assert h.core.per_key == {"alice": 1, "bob": 1}
    h.open(C, "alice")
    assert h.core.per_key == {"alice": 2, "bob": 1}


def test_a_session_ended_any_way_gives_its_place_back() -> None:
    h = Keyed(max_sessions_per_key=1, malformed_budget=5)
    h.open(A, "alice")
    h.as_(A, "alice", JUNK)  # fatal: the session ends
    assert A not in h.core.peers
    assert h.core.per_key == {}
    h.open(B, "alice")
    h.as_(B, "alice", f.Hello("again"))  # out of order: fatal too
    assert B not in h.core.peers
    assert h.core.per_key == {}
    h.open(C, "alice")


def test_the_servers_key_and_sessions_without_curve_have_no_per_key_bound() -> None:
    h = Keyed(max_sessions_per_key=1)
    h.open(A, SERVER)
    h.open(B, SERVER)
    assert h.core.per_key == {SERVER: 2}
    plain = Keyed(secure=False, max_sessions_per_key=1)
    plain.open(A, None)
    plain.open(B, None)
    assert plain.core.per_key == {None: 2}


def test_clients_behind_a_link_count_towards_max_sessions() -> None:
    h = clustered(None)
    h.core.cfg = BrokerConfig(max_sessions=2)
    link(h, "rtr")
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    forward(h, b"c2", f.Hello("client-2", user="bob"))
    out = h.take()
    assert isinstance(inner(out, b"c1")[0], f.Welcome)
    [err] = inner(out, b"c2")
    assert (err.code, err.op) == (TooManySessions.code, f.HELLO)
    assert L + b"\x00c2" not in h.core.peers
    assert h.core.per_key == {"rtr": 1, "alice": 1}


# ------------------------------------------------------------------ malformed frames


def test_a_stranger_past_its_malformed_budget_gets_no_more_errors_and_is_cut() -> None:
    h = Keyed(malformed_budget=3)
    for _ in range(3):
        h.as_(C, "carol", JUNK)
        [(who, err)] = errors_of(h.take())
        assert (who, err.code) == (C, MalformedFrame.code)
        assert h.core.noted == []
    for _ in range(3):
        h.as_(C, "carol", JUNK)
        assert h.take() == []
        assert h.core.noted == ["cut"]
    assert h.core.counters["peers_cut"] == 1
    assert h.core.strikes[C] == 6
    h.as_(C, "carol", f.Hello("c"))  # a well-formed frame is still served
    only(h.take(), f.Welcome)


def test_a_sessions_malformed_frames_end_it_and_count_as_strikes() -> None:
    h = Keyed(malformed_budget=2)
    h.open(A, "alice")
    h.as_(A, "alice", JUNK)
    [(_, err)] = errors_of(h.take())
    assert err.code == MalformedFrame.code
    assert A not in h.core.peers
    h.open(A, "alice")
    h.as_(A, "alice", f.Hello("twice"))  # out of order
    [(_, err)] = errors_of(h.take())
    assert err.code == ProtocolViolation.code
    h.open(A, "alice")
    h.as_(A, "alice", JUNK)  # the third: past the budget
    assert h.take() == []
    assert h.core.noted == ["cut"]
    assert A not in h.core.peers
    assert h.core.per_key == {}
    assert h.core.counters["peers_cut"] == 1


def test_refusals_that_are_not_fatal_use_no_budget(rights: Permissions) -> None:
    h = Keyed(rights, malformed_budget=1)
    h.open(A, "alice")
    for seq in range(1, 5):
        h.as_(A, "alice", f.Publish("invoices", seq, [b"x"]))  # FORBIDDEN
        h.as_(A, "bob", f.Stats(seq))  # another key's frame
        h.as_(B, "bob", f.Publish("shared", seq, [b"x"]))  # SESSION_UNKNOWN
    out = h.run()
    assert len(errors_of(out)) == 12
    assert h.core.strikes == {}
    assert h.core.counters["peers_cut"] == 0
    assert A in h.core.peers


def test_clients_behind_a_link_are_answered_by_their_router_not_cut() -> None:
    h = Keyed(malformed_budget=1)
    h.core.membership = Membership(CLUSTER, "b1")
    link(h, "rtr")
    for _ in range(3):
        forward(h, b"c1", JUNK)
        [err] = inner(h.take(), b"c1")
        assert err.code == MalformedFrame.code
    assert h.core.strikes == {}
    assert h.core.noted == []
    assert L in h.core.peers


def test_the_strike_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "STRIKES_KEPT", 3)
    h = Keyed(malformed_budget=5)
    for i in range(3):
        h.as_(b"stranger-%d" % i, "carol", JUNK)
    assert len(h.core.strikes) == 3
    h.as_(b"stranger-0", "carol", JUNK)  # one it knows: counted on, nothing forgotten
    assert h.core.strikes == {b"stranger-0": 2, b"stranger-1": 1, b"stranger-2": 1}
    h.as_(b"stranger-3", "carol", JUNK)  # one more it would have to keep: it starts over
    assert h.core.strikes == {b"stranger-3": 1}
    for i in range(100):
        h.as_(b"more-%d" % i, "carol", JUNK)
        assert len(h.core.strikes) <= 3


# ------------------------------------------------------------------ ending a key's sessions


def test_ending_a_keys_sessions_puts_back_what_they_held() -> None:
    h = Keyed()
    h.open(P, "bob")
    h.open(A, "alice", starts=True)
    h.open(B, "alice")
    h.as_(P, "bob", f.Publish("q", 1, [b"x", b"y", b"z"]))
    h.as_(A, "alice", f.Credit("q", 2))
    [(_, d)] = delivers(h.run())
    assert d.ids == [1, 2]
    h.as_(A, "alice", f.Start([1], [1]))
    h.core.peers[A].conn, h.core.peers[B].conn = 11, 12

    conns = h.core.end_sessions_of({"alice"}, "its rights changed")
    assert sorted(conns) == [11, 12]
    assert set(h.core.peers) == {P}
    assert h.core.per_key == {"bob": 1}
    msgs = {m.id: m for m in h.core.queues["q"].ready_msgs()}
    assert set(msgs) == {1, 2, 3}
    assert msgs[2].attempts == 0  # held, not started: back as if never delivered
    assert msgs[2].headers is None
    # Started, too: the broker ended the session, not a failure of the consumer, so
    # nothing is charged (as when the broker stops); no retry budget is used up.
    assert msgs[1].attempts == 0
    h.as_(A, "alice", f.Ack([2], [1]))  # its old session is gone
    assert errors_of(h.take())


def test_ending_the_sessions_of_keys_that_have_none_does_nothing() -> None:
    h = Keyed()
    h.open(A, "alice")
    assert h.core.end_sessions_of({"bob", "carol"}, "gone") == []
    assert A in h.core.peers


def test_ending_a_client_behind_a_link_closes_no_connection() -> None:
    h = clustered(None)
    link(h, "rtr")
    h.core.peers[L].conn = 7
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    forward(h, b"c2", f.Hello("client-2", user="bob"))
    h.take()
    assert h.core.end_sessions_of({"alice"}, "revoked") == []  # its router's connection
    assert L + b"\x00c1" not in h.core.peers
    assert set(h.core.peers) == {L, L + b"\x00c2"}
    assert h.core.per_key == {"rtr": 1, "bob": 1}


def test_ending_a_links_key_takes_the_sessions_behind_it_along() -> None:
    h = clustered(None)
    link(h, "rtr")
    h.core.peers[L].conn = 7
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    h.take()
    assert 7 in h.core.end_sessions_of({"rtr"}, "revoked")
    assert h.core.peers == {}
    assert h.core.links == {}
    assert h.core.routes == {}
    assert h.core.per_key == {}


def test_ending_a_link_and_its_clients_returns_only_the_links_connection() -> None:
    h = clustered(None)
    link(h, "rtr")
    h.core.peers[L].conn = 7
    forward(h, b"c1", f.Hello("client-1", user="alice"))
    forward(h, b"c2", f.Hello("client-2", user="alice"))
    h.take()
    assert h.core.end_sessions_of({"rtr", "alice"}, "revoked") == [7]


# ------------------------------------------------------------------ a property

OWNERS = {A: "alice", B: "bob", C: "carol", P: SERVER}  # whose connection each mostly is
USERS = tuple(OWNERS.values())
QUEUES = ("orders.eu", "shared", "invoices")
SMALL = """
[keys.alice]
publish = ["orders.*"]
consume = ["orders.*", "shared"]
manage = ["orders.#"]

[keys.bob]
publish = ["shared", "orders.eu"]
consume = ["shared"]
admin = true
"""

hellos = st.builds(lambda: f.Hello("h"))
frames = st.one_of(
    hellos, hellos, hellos,  # sessions come and go, so that most frames have one
    st.builds(lambda q, n: f.Publish(q, 0, [b"m"] * n), st.sampled_from(QUEUES),
              st.integers(1, 3)),
    st.builds(f.Credit, st.sampled_from(QUEUES), st.integers(1, 3)),
    st.builds(lambda op, q: f.Manage(0, op, {"queue": q}),
              st.sampled_from(["pause", "resume", "purge", "info"]), st.sampled_from(QUEUES)),
    st.builds(lambda: f.Manage(0, "list", {})),
    st.builds(lambda: f.Stats(0)),
    st.builds(lambda: f.Bye("bye")),
    st.builds(lambda: f.Heartbeat()),
)


def snapshot(h: Keyed) -> Any:
    """What any frame could change: every queue, every session and what it holds."""
    core = h.core
    queues = {name: (q.ready_count(), q.staged, q.paused, len(q.subs))
              for name, q in core.queues.items()}
    peers = {i: (p.user, p.state, sorted(p.held), sorted(p.subs)) for i, p in core.peers.items()}
    return queues, peers, core.staged


def expected_right(frame: f.Frame) -> tuple[str, str | None] | None:
    """The right ``frame`` needs in a READY session, on which queue; None: none."""
    match frame:
        case f.Publish():
            return "publish", frame.queue
        case f.Credit():
            return "consume", frame.queue
        case f.Manage(op="list") | f.Stats():
            return "admin", None
        case f.Manage():
            return "manage", frame.args["queue"]
    return None


def allowed(rights: Permissions, user: str, right: tuple[str, str | None] | None) -> bool:
    if right is None or user == SERVER:
        return True
    op, queue = right
    return rights.admin(user) if queue is None else rights.may(user, op, queue)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(list(OWNERS)),
                          st.one_of(st.none(), st.none(), st.sampled_from(USERS)), frames),
                min_size=10, max_size=60))
def test_every_frame_succeeds_or_gets_one_error_and_only_owners_change_anything(
        steps: list[tuple[bytes, str | None, f.Frame]]) -> None:
    """Random frames on a few connections, each mostly with its own key (None), now and
    then with another's: a frame on a session of another key is refused and changes
    nothing; one of the owner is refused exactly when its rights say so."""
    rights = Permissions(tomllib.loads(SMALL))
    h = Keyed(rights, max_sessions_per_key=2, heartbeat=3600.0)
    for n, (identity, other, frame) in enumerate(steps, 1):
        user = OWNERS[identity] if other is None else other
        if isinstance(frame, f.Publish):
            frame = dataclasses.replace(frame, seq=n)
        elif isinstance(frame, f.Manage | f.Stats):
            frame = dataclasses.replace(frame, req=n)
        peer = h.core.peers.get(identity)
        before = snapshot(h)
        h.as_(identity, user, frame)
        out = h.take()  # what this frame caused at once: its ERROR, if any
        assert all(i == identity for i, _ in out), out
        errs = [e for _, e in errors_of(out)]
        assert len(errs) <= 1, (frame, errs)
        if peer is not None and peer.user != user:
            event("another key's frame")
            assert [e.name for e in errs] == [Forbidden.name]
            assert snapshot(h) == before
        elif peer is not None and type(frame) is not f.Hello:
            needs = expected_right(frame)
            assert (errs == [] or errs[0].name != Forbidden.name) == allowed(
                rights, user, needs), (user, frame, errs)
            if errs and errs[0].name == Forbidden.name:
                event("refused for its rights")
                assert snapshot(h) == before
        h.run()
        assert h.core.per_key == {u: sum(1 for p in h.core.peers.values() if p.user == u)
                                  for u in {p.user for p in h.core.peers.values()}}
