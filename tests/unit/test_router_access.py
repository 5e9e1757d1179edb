"""The router's access rules without I/O (zq.router.access and its use in
zq.router.clients): whose session a frame may use, the key the HELLO forwarded to
brokers names, rights checked before anything is forwarded, the bounds on sessions
and on malformed frames, and ending the sessions of keys whose rights changed.

Frames are handed in as the shell hands them, with the key the client's connection
proved (``user``) when the core is ``secure``; ``core.noted`` is cleared before each.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.unit.test_router_core import C1, C2, C3, CFG, CLUSTER, enc, publish, welcome
from zq.errors import (
    Forbidden,
    MalformedFrame,
    Moved,
    ProtocolViolation,
    SessionUnknown,
    TooManySessions,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.router.core import RouterCore
from zq.security import bounds as access
from zq.security.permissions import SERVER, Permissions

JUNK = [b"junk"]  # not a zq frame at all: MALFORMED_FRAME

PERMISSIONS = """
[keys.alice]
publish = ["a.*"]
manage = ["a.#"]

[keys.bob]
publish = ["b.*"]

[keys.ops]           # an operator: admin and every queue's settings, but no publish
admin = true
manage = ["#"]
"""


@pytest.fixture
def rights(tmp_path: Path) -> Permissions:
    path = tmp_path / "permissions.toml"
    path.write_text(PERMISSIONS)
    return Permissions.load(path)


def router(rights: Permissions | None = None, secure: bool = True, **cfg: Any) -> RouterCore:
    """A router with both links up (b1 has queues a.*, b2 b.*: the cluster file's pins)."""
    core = RouterCore(dataclasses.replace(CFG, **cfg), CLUSTER, 0.0)
    for bid in core.links:
        core.link_connected(bid, 0.0)
        core.from_broker(bid, welcome(bid), 0.0)
        core.from_broker(bid, enc(f.Catalog(1, "snapshot", [])), 0.0)
    core.take()
    core.secure = secure
    core.rights = rights
    return core


def send(core: RouterCore, key: bytes, user: str | None, frame: f.Frame | list[bytes]
         ) -> None:
    parts = frame if isinstance(frame, list) else enc(frame)
    core.noted.clear()
    core.from_client(key, parts, 0.0, user)


def replies(core: RouterCore) -> list[tuple[bytes, dict[str, Any]]]:
    """What went to clients since the last call, each as (key, {"frame": opcode, ...its
    fields}); an ERROR is read without the decoder, which refuses one whose op is not a
    number (see test_a_refused_manage_or_stats_is_an_error_a_client_can_decode)."""
    out, core.to_clients = core.to_clients, []
    found = []
    for key, parts in out:
        op = parts[0][3]
        fields = (msgpack.unpackb(parts[1]) if op == f.ERROR
                  else dataclasses.asdict(codec.decode(parts)))
        found.append((key, {"frame": op, **fields}))
    return found


def refused(core: RouterCore) -> dict[str, Any]:
    """The one frame sent to a client, which must be an ERROR FORBIDDEN."""
    [(_, err)] = replies(core)
    assert (err["frame"], err["name"], err["code"]) == (f.ERROR, Forbidden.name,
                                                        Forbidden.code), err
    return err


def error(core: RouterCore) -> dict[str, Any]:
    [(_, err)] = replies(core)
    assert err["frame"] == f.ERROR, err
    return err


def open_session(core: RouterCore, key: bytes, user: str | None, **hello: Any) -> None:
    send(core, key, user, f.Hello(f"client {key.decode()}", **hello))
    [(who, welcomed)] = replies(core)
    assert (who, welcomed["frame"]) == (key, f.WELCOME), welcomed


def forwarded(core: RouterCore) -> list[tuple[str, bytes, f.Frame]]:
    """The client frames sent to brokers since the last call: (broker, client, frame)."""
    out, core.to_brokers = core.to_brokers, []
    found = []
    for bid, parts in out:
        fw = codec.decode(parts)
        assert isinstance(fw, f.Forward), fw
        found.append((bid, fw.key, codec.decode(fw.parts)))
    return found


# ------------------------------------------------------------------ whose session


def test_a_session_belongs_to_the_key_that_opened_it() -> None:
    core = router()
    open_session(core, C1, "alice")
    assert core.clients[C1].user == "alice"
    assert core.noted == ["session"]
    assert core.per_key == {"alice": 1}

    send(core, C1, "bob", publish("a.x", 1))
    err = refused(core)
    assert (err["op"], err.get("ref")) == (0, None)
    send(core, C1, "bob", f.Heartbeat())
    send(core, C1, "bob", f.Hello("bob takes over"))
    send(core, C1, "bob", f.Bye("bob leaves"))
    assert [e["name"] for _, e in replies(core)] == [Forbidden.name] * 3
    assert core.to_brokers == []
    assert core.clients[C1].user == "alice"
    assert core.counters["frames_refused"] == 4
    assert core.noted == []

    send(core, C1, "alice", publish("a.x", 2))
    assert [(bid, type(fr)) for bid, _, fr in forwarded(core)] == [("b1", f.Hello),
                                                                   ("b1", f.Publish)]


def test_the_hello_forwarded_for_a_client_names_the_key_it_proved() -> None:
    core = router()
    hello = f.Hello("client 1", heartbeat_ms=500, starts=True, producer=b"p" * 16,
                    user="mallory")
    send(core, C1, "alice", hello)
    assert core.clients[C1].user == "alice"
    assert codec.decode(core.clients[C1].hello) == dataclasses.replace(hello, user="alice")
    send(core, C1, "alice", publish("a.x", 1))
    [(_, _, inner_hello), _] = forwarded(core)
    assert inner_hello == dataclasses.replace(hello, user="alice")


def test_without_curve_the_forwarded_hello_names_no_key() -> None:
    core = router(secure=False)
    send(core, C1, None, f.Hello("client 1", user="mallory"))
    assert core.clients[C1].user is None
    assert codec.decode(core.clients[C1].hello) == f.Hello("client 1")
    send(core, C1, None, publish("a.x", 1))
    [(_, _, inner_hello), _] = forwarded(core)
    assert inner_hello.user is None


# ------------------------------------------------------------------ rights


def test_a_publish_without_the_right_is_refused_before_anything_is_forwarded(
        rights: Permissions) -> None:
    core = router(rights)
    open_session(core, C1, "alice")
    for seq, queue in enumerate(["b.x", "a.x.y", "a"], 1):
        send(core, C1, "alice", publish(queue, seq))
        err = refused(core)
        assert (err["op"], err["ref"]) == (f.PUBLISH, seq)
    assert core.to_brokers == []
    assert core.clients[C1].inner == {}  # not even its HELLO went to a broker
    assert core.counters["forwarded"] == 0
    send(core, C1, "alice", publish("a.x", 9))
    assert [type(fr) for _, _, fr in forwarded(core)] == [f.Hello, f.Publish]


def test_manage_needs_its_right_and_is_refused_before_forwarding(rights: Permissions) -> None:
    core = router(rights)
    open_session(core, C1, "alice")
    open_session(core, C2, "bob")
    send(core, C2, "bob", f.Manage(7, "pause", {"queue": "a.x"}))
    err = refused(core)
    assert err["ref"] == 7
    send(core, C1, "alice", f.Manage(8, "list", {"queue": "a.x"}))  # admin, queue or not
    assert refused(core)["ref"] == 8
    assert core.to_brokers == []
    send(core, C1, "alice", f.Manage(9, "pause", {"queue": "a.x"}))
    [(bid, key, fr)] = [x for x in forwarded(core) if isinstance(x[2], f.Manage)]
    assert (bid, key, fr) == ("b1", C1, f.Manage(9, "pause", {"queue": "a.x"}))


def test_stats_and_the_routers_own_operations_need_admin(rights: Permissions) -> None:
    core = router(rights)
    core.reload_hook = lambda: {"reloaded": True}
    open_session(core, C1, "alice")
    open_session(core, C2, "ops")
    send(core, C1, "alice", f.Stats(5))
    assert refused(core)["ref"] == 5
    send(core, C1, "alice", f.Manage(6, "reload", {}))
    assert refused(core)["ref"] == 6
    send(core, C1, "alice", f.Manage(7, "cluster_config", {"config": {}}))
    assert refused(core)["ref"] == 7
    send(core, C2, "ops", f.Stats(8))
    send(core, C2, "ops", f.Manage(9, "reload", {}))
    assert [(e["frame"], e["req"]) for _, e in replies(core)] == [(f.STATS_REPLY, 8),
                                                                  (f.MANAGE_REPLY, 9)]


def test_a_refused_manage_or_stats_is_an_error_a_client_can_decode(
        rights: Permissions) -> None:
    core = router(rights)
    open_session(core, C1, "bob")
    send(core, C1, "bob", f.Manage(7, "pause", {"queue": "a.x"}))
    send(core, C1, "bob", f.Stats(8))
    out, core.to_clients = core.to_clients, []
    errors = [codec.decode(parts) for _, parts in out]
    assert [(e.name, e.op, e.ref) for e in errors] == [(Forbidden.name, f.MANAGE, 7),
                                                        (Forbidden.name, f.STATS, 8)]


def test_the_servers_own_key_may_do_everything(rights: Permissions) -> None:
    core = router(rights)
    open_session(core, C1, SERVER)
    send(core, C1, SERVER, publish("b.x", 1))
    send(core, C1, SERVER, f.Manage(2, "pause", {"queue": "b.x"}))
    send(core, C1, SERVER, f.Stats(3))
    assert [e["frame"] for _, e in replies(core)] == [f.STATS_REPLY]
    assert [type(fr) for _, _, fr in forwarded(core)] == [f.Hello, f.Publish, f.Manage]


def test_without_a_permissions_file_every_key_may_do_everything() -> None:
    core = router(None)
    open_session(core, C1, "nobody-in-particular")
    send(core, C1, "nobody-in-particular", publish("b.x", 1))
    send(core, C1, "nobody-in-particular", f.Manage(2, "pause", {"queue": "a.x"}))
    send(core, C1, "nobody-in-particular", f.Stats(3))
    assert [e["frame"] for _, e in replies(core)] == [f.STATS_REPLY]
    assert [(bid, type(fr)) for bid, _, fr in forwarded(core)] == [
        ("b2", f.Hello), ("b2", f.Publish), ("b1", f.Hello), ("b1", f.Manage)]


# ------------------------------------------------------------------ session bounds


def test_max_sessions_refuses_the_next_hello_until_one_ends() -> None:
    core = router(max_sessions=2)
    open_session(core, C1, "alice")
    open_session(core, C2, "bob")
    send(core, C3, "carol", f.Hello("c3"))
    err = error(core)
    assert (err["code"], err["op"]) == (TooManySessions.code, f.HELLO)
    assert C3 not in core.clients
    assert core.noted == []
    assert core.per_key == {"alice": 1, "bob": 1}
    open_session(core, C1, "alice")  # a HELLO again replaces its own session: admitted
    assert core.per_key == {"alice": 1, "bob": 1}
    send(core, C1, "alice", f.Bye("leaving"))
    assert core.per_key == {"bob": 1}
    open_session(core, C3, "carol")
    assert core.per_key == {"bob": 1, "carol": 1}


def test_max_sessions_per_key_counts_each_key_apart() -> None:
    core = router(max_sessions_per_key=1)
    open_session(core, C1, "alice")
    send(core, C2, "alice", f.Hello("c2"))
    assert error(core)["code"] == TooManySessions.code
    assert C2 not in core.clients
    open_session(core, C2, "bob")
    assert core.per_key == {"alice": 1, "bob": 1}
    send(core, C1, "alice", JUNK)  # fatal: ended, its place given back
    assert error(core)["code"] == MalformedFrame.code
    assert core.per_key == {"bob": 1}
    open_session(core, C3, "alice")


def test_the_servers_key_and_sessions_without_curve_have_no_per_key_bound() -> None:
    core = router(max_sessions_per_key=1)
    open_session(core, C1, SERVER)
    open_session(core, C2, SERVER)
    plain = router(secure=False, max_sessions_per_key=1)
    open_session(plain, C1, None)
    open_session(plain, C2, None)
    assert plain.per_key == {None: 2}


# ------------------------------------------------------------------ malformed frames


def test_a_stranger_past_its_malformed_budget_gets_no_more_errors_and_is_cut() -> None:
    core = router(malformed_budget=3)
    for _ in range(3):
        send(core, C3, "carol", JUNK)
        assert error(core)["code"] == MalformedFrame.code
        assert core.noted == []
    for _ in range(3):
        send(core, C3, "carol", JUNK)
        assert replies(core) == []
        assert core.noted == ["cut"]
    assert core.counters["peers_cut"] == 1
    assert core.strikes[C3] == 6


def test_a_sessions_malformed_frames_end_it_and_count_as_strikes() -> None:
    core = router(malformed_budget=2)
    open_session(core, C1, "alice")
    send(core, C1, "alice", publish("a.x", 1))
    forwarded(core)
    send(core, C1, "alice", JUNK)
    assert error(core)["code"] == MalformedFrame.code
    assert C1 not in core.clients
    [(bid, key, bye)] = forwarded(core)  # its inner session at b1 ends too
    assert (bid, key, type(bye)) == ("b1", C1, f.Bye)
    open_session(core, C1, "alice")
    send(core, C1, "alice", f.Hello("link", link={"cluster": "demo", "version": 1,
                                                  "router": "r9"}))
    assert error(core)["code"] == ProtocolViolation.code
    open_session(core, C1, "alice")
    send(core, C1, "alice", JUNK)  # the third: past the budget
    assert replies(core) == []
    assert core.noted == ["cut"]
    assert C1 not in core.clients
    assert core.per_key == {}
    assert core.counters["peers_cut"] == 1


def test_refusals_that_are_not_fatal_use_no_budget(rights: Permissions) -> None:
    core = router(rights, malformed_budget=1)
    open_session(core, C1, "alice")
    for seq in range(1, 5):
        send(core, C1, "alice", publish("b.x", seq))  # FORBIDDEN
        send(core, C1, "bob", f.Stats(seq))  # another key's frame
        send(core, C2, "bob", publish("b.x", seq))  # SESSION_UNKNOWN
        send(core, C1, "alice", f.Credit("a.x", 1))  # MOVED: consume from the broker
        send(core, C1, "ops", f.Manage(seq, "pause", {}))  # another key's, allowed to it
    names = [e["name"] for _, e in replies(core)]
    assert names == [Forbidden.name, Forbidden.name, SessionUnknown.name, Moved.name,
                     Forbidden.name] * 4
    assert core.strikes == {}
    assert C1 in core.clients


def test_the_strike_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "STRIKES_KEPT", 3)
    core = router(malformed_budget=5)
    for i in range(3):
        send(core, b"stranger-%d" % i, "carol", JUNK)
    send(core, b"stranger-0", "carol", JUNK)
    assert core.strikes == {b"stranger-0": 2, b"stranger-1": 1, b"stranger-2": 1}
    send(core, b"stranger-3", "carol", JUNK)
    assert core.strikes == {b"stranger-3": 1}
    for i in range(100):
        send(core, b"more-%d" % i, "carol", JUNK)
        assert len(core.strikes) <= 3


# ------------------------------------------------------------------ ending a key's sessions


def test_ending_a_keys_sessions_returns_their_connections_and_says_bye_for_them() -> None:
    core = router()
    open_session(core, C1, "alice")
    open_session(core, C2, "alice")
    open_session(core, C3, "bob")
    send(core, C1, "alice", publish("a.x", 1))
    forwarded(core)
    core.clients[C1].conn, core.clients[C2].conn, core.clients[C3].conn = 21, 22, 23
    assert sorted(core.end_sessions_of({"alice", "nobody"}, "its rights changed")) == [21, 22]
    assert set(core.clients) == {C3}
    assert core.per_key == {"bob": 1}
    [(bid, key, bye)] = forwarded(core)
    assert (bid, key, type(bye)) == ("b1", C1, f.Bye)
    send(core, C1, "alice", publish("a.x", 2))  # its session is gone
    assert error(core)["code"] == SessionUnknown.code
    assert core.end_sessions_of({"alice"}, "again") == []
