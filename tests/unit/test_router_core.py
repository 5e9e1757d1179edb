"""The router's core (PROTOCOL.md section 17), driven with encoded frames and ``now``.

No sockets and no sleeps: each test feeds frames from clients and brokers and reads
what the core would send, decoded again (or compared by identity, to show that a
forwarded frame is the very frame that came in).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zq.cluster.config import ClusterConfig
from zq.errors import (
    InvalidArgument,
    MalformedFrame,
    Moved,
    ProtocolViolation,
    QueueConflict,
    SessionUnknown,
    StaleConfig,
    Unavailable,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.router.config import RouterConfig, default_id
from zq.router.core import RouterCore
from zq.router.state import DOWN, HELLO_SENT, UP

ROOT = Path(__file__).resolve().parents[2]
CFG = RouterConfig(bind="tcp://127.0.0.1:*", cluster="cluster.toml", id="r1",
                   heartbeat=1.0, liveness=3)
CLUSTER_MAP: dict[str, Any] = {
    "cluster_id": "demo", "version": 1,
    "brokers": [{"id": "b1", "endpoint": "tcp://10.0.0.1:5601"},
                {"id": "b2", "endpoint": "tcp://10.0.0.2:5601"}],
    "pins": {"a.": "b1", "b.": "b2"},
}
CLUSTER = ClusterConfig.from_dict(CLUSTER_MAP)
C1, C2, C3 = b"zq-client-1", b"zq-client-2", b"zq-client-3"


def enc(frame: f.Frame) -> list[bytes]:
    return codec.encode(frame)


def welcome(bid: str, process: str = "", cluster_id: str = "demo") -> list[bytes]:
    return enc(f.Welcome(process or f"proc-{bid}", 1000, 3, 1000, 100_000, 1 << 26, True,
                         cluster={"id": cluster_id, "version": 1, "node": bid,
                                  "role": "broker"}))


def make(*up: str, now: float = 0.0, catalogs: dict[str, list[str]] | None = None
         ) -> RouterCore:
    """A core whose shell opened every link, with links ``up`` welcomed and catalogued."""
    core = RouterCore(CFG, CLUSTER, now)
    for bid in core.links:
        core.link_connected(bid, now)
    for bid in up:
        core.from_broker(bid, welcome(bid), now)
        core.from_broker(bid, enc(f.Catalog(1, "snapshot", (catalogs or {}).get(bid, []))),
                         now)
    core.take()
    core.link_actions.clear()
    return core


def hello(core: RouterCore, key: bytes = C1, now: float = 0.0) -> list[bytes]:
    parts = enc(f.Hello(f"client {key.decode()}", producer=b"p" * 16))
    core.from_client(key, parts, now)
    return parts


def publish(queue: str, seq: int = 1, body: bytes = b"body") -> list[bytes]:
    return codec.encode_publish(queue, seq, [body], [])


def to_clients(core: RouterCore) -> list[tuple[bytes, f.Frame]]:
    """The frames for clients so far, decoded (those for brokers stay)."""
    clients, core.to_clients = core.to_clients, []
    return [(key, codec.decode(parts)) for key, parts in clients]


def to_brokers(core: RouterCore) -> list[tuple[str, list[bytes]]]:
    """The frames for brokers so far (those for clients stay)."""
    brokers, core.to_brokers = core.to_brokers, []
    return brokers


def forwarded(core: RouterCore) -> list[tuple[str, bytes, f.Frame]]:
    """FORWARD frames sent to brokers, as (broker, client key, inner frame); the
    link's own frames (HELLO, HEARTBEAT, BYE) are left out."""
    out = []
    for bid, parts in to_brokers(core):
        fw = codec.decode(parts)
        if isinstance(fw, f.Forward):
            out.append((bid, fw.key, codec.decode(fw.parts)))
    return out


def errors(core: RouterCore) -> list[tuple[bytes, f.Error]]:
    return [(k, fr) for k, fr in to_clients(core) if isinstance(fr, f.Error)]


def client_ready(core: RouterCore, key: bytes = C1, now: float = 0.0) -> list[bytes]:
    parts = hello(core, key, now)
    core.take()
    return parts


# ------------------------------------------------------------------ links


def test_each_link_says_hello_with_its_link_map() -> None:
    core = RouterCore(CFG, CLUSTER, 0.0)
    assert core.link_actions == [("open", "b1", "tcp://10.0.0.1:5601"),
                                 ("open", "b2", "tcp://10.0.0.2:5601")]
    assert to_brokers(core) == []  # nothing before the shell has a socket
    core.link_connected("b1", 0.0)
    [(bid, parts)] = to_brokers(core)
    h = codec.decode(parts)
    assert bid == "b1"
    assert isinstance(h, f.Hello)
    assert h.link == {"cluster": "demo", "version": 1, "router": "r1"}
    assert h.heartbeat_ms == 1000
    assert h.name == "router r1"
    assert core.links["b1"].state == HELLO_SENT


def test_unanswered_hello_is_said_again_each_heartbeat_after_a_bye() -> None:
    core = RouterCore(CFG, CLUSTER, 0.0)
    core.link_connected("b1", 0.0)
    core.take()
    core.tick(0.99)
    assert to_brokers(core) == []
    core.tick(1.0)
    sent = [codec.decode(p) for b, p in to_brokers(core) if b == "b1"]
    # A second HELLO in one session would be a protocol violation: BYE the first.
    assert [type(fr) for fr in sent] == [f.Bye, f.Hello]


def test_welcome_brings_the_link_up_and_catalog_routes() -> None:
    core = make("b1", "b2", catalogs={"b2": ["a.special"]})
    assert core.links["b1"].state == UP
    assert core.links["b1"].process == "proc-b1"
    assert core.links["b2"].catalog == {b"a.special"}


def test_welcome_of_another_cluster_keeps_the_link_down() -> None:
    core = make()
    core.from_broker("b1", welcome("b1", cluster_id="other"), 0.0)
    assert core.links["b1"].state == DOWN
    assert [type(codec.decode(p)) for _, p in to_brokers(core)] == [f.Bye]
    core.tick(1.0)  # not retried at once: at heartbeat x liveness
    assert not any(b == "b1" for b, _ in to_brokers(core))


def test_cluster_mismatch_keeps_the_link_down_and_retries_later() -> None:
    core = make()
    core.from_broker("b1", enc(f.Error(25, "CLUSTER_MISMATCH", "not in a cluster", f.HELLO)),
                     0.0)
    link = core.links["b1"]
    assert link.state == DOWN
    assert link.errors == 1
    core.tick(1.0)
    assert not any(b == "b1" for b, _ in to_brokers(core))
    core.tick(3.0)  # heartbeat x liveness later
    assert [type(codec.decode(p)) for b, p in to_brokers(core) if b == "b1"] == [f.Hello]


def test_heartbeats_go_on_links_that_are_up() -> None:
    core = make("b1")
    core.tick(1.0)
    beats = [(b, codec.decode(p)) for b, p in to_brokers(core)]
    assert ("b1", f.Heartbeat()) in beats
    assert not any(b == "b2" and isinstance(fr, f.Heartbeat) for b, fr in beats)


# ------------------------------------------------------------------ clients


def test_hello_is_answered_by_the_router_itself() -> None:
    core = make("b1")
    hello(core)
    [(key, w)] = to_clients(core)
    assert key == C1
    assert isinstance(w, f.Welcome)
    assert w.broker == "router:r1"
    assert w.heartbeat_ms == 1000
    assert w.liveness == 3
    assert (w.max_batch, w.max_credit, w.max_frame) == (1000, 100_000, CFG.max_frame)
    assert w.cluster == {"id": "demo", "version": 1, "node": "r1", "role": "router"}
    assert to_brokers(core) == []  # inner sessions open on the first frame for a broker


def test_frames_before_hello_get_session_unknown() -> None:
    core = make("b1")
    core.from_client(C1, publish("a.x", 7), 0.0)
    core.from_client(C1, enc(f.Heartbeat()), 0.0)
    got = errors(core)
    assert [(e.code, e.op, e.ref) for _, e in got] == [
        (SessionUnknown.code, f.PUBLISH, None), (SessionUnknown.code, f.HEARTBEAT, None)]
    assert to_brokers(core) == []


def test_publish_opens_the_inner_session_once_and_forwards_the_frame_as_it_came() -> None:
    core = make("b1", "b2")
    hello_parts = client_ready(core)
    first, second = publish("a.x", 1), publish("a.x", 2, b"\x00" * 10_000)
    core.from_client(C1, first, 0.0)
    out = to_brokers(core)
    assert [b for b, _ in out] == ["b1", "b1"]
    (_, inner_hello), (_, fwd) = out
    assert inner_hello[0] == codec.command(f.FORWARD)
    assert inner_hello[1] == C1
    assert inner_hello[2:] == hello_parts  # the client's own HELLO, verbatim
    assert all(a is b for a, b in zip(fwd[2:], first, strict=True))  # the same objects
    core.from_client(C1, second, 0.0)
    [(bid, fwd2)] = to_brokers(core)  # no second inner HELLO
    assert bid == "b1"
    assert all(a is b for a, b in zip(fwd2[2:], second, strict=True))
    assert to_clients(core) == []


def test_publish_is_routed_without_decoding_its_header_or_bodies() -> None:
    core = make("b1")
    client_ready(core)
    parts = [codec.command(f.PUBLISH), b"a.x", b"\xc1 not msgpack", b"body"]
    core.from_client(C1, parts, 0.0)
    assert [p[2:] for _, p in to_brokers(core)][-1] == parts  # the broker will judge it


def test_catalog_wins_over_placement_and_placement_covers_new_names() -> None:
    core = make("b1", "b2", catalogs={"b2": ["a.special"]})
    client_ready(core)
    core.from_client(C1, publish("a.special"), 0.0)  # pinned to b1, but b2 has it
    core.from_client(C1, publish("a.new"), 0.0)  # pinned to b1
    core.from_client(C1, publish("b.new"), 0.0)  # pinned to b2
    got = [(bid, fr.queue) for bid, _, fr in forwarded(core) if isinstance(fr, f.Publish)]
    assert got == [("b2", "a.special"), ("b1", "a.new"), ("b2", "b.new")]


def test_unpinned_names_go_where_the_cluster_file_places_them() -> None:
    core = make("b1", "b2")
    client_ready(core)
    names = [f"q{i}" for i in range(40)]
    for i, name in enumerate(names):
        core.from_client(C1, publish(name, i), 0.0)
    got = {fr.queue: bid for bid, _, fr in forwarded(core) if isinstance(fr, f.Publish)}
    assert got == {n: CLUSTER.placement(n) for n in names}
    assert set(got.values()) == {"b1", "b2"}


def test_broker_welcome_is_swallowed_and_confirm_relayed_unchanged() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x", 5), 0.0)
    core.take()
    inner_welcome = codec.forward(C1, welcome("b1"))
    core.from_broker("b1", inner_welcome, 0.0)
    assert to_clients(core) == []
    assert core.clients[C1].inner == {"b1": True}
    confirm = codec.encode_confirm([[5, 100, 1]])
    core.from_broker("b1", codec.forward(C1, confirm), 0.0)
    [(key, parts)] = core.take()[0]
    assert key == C1
    assert parts == confirm
    assert all(a is b for a, b in zip(parts, confirm, strict=True))
    assert core.links["b1"].forwarded_in == 2  # every FORWARD read, the WELCOME too
    assert core.counters["relayed"] == 1


def test_link_down_answers_unavailable_with_the_publish_seq() -> None:
    core = make("b2")
    core.tick(3.5)  # b1 gave no WELCOME within the silence limit (3 s): it is down
    core.take()
    client_ready(core, now=3.5)
    core.from_client(C1, publish("a.x", 42), 3.5)
    [(key, e)] = errors(core)
    assert key == C1
    assert (e.code, e.op, e.ref) == (Unavailable.code, f.PUBLISH, 42)
    assert e.info == {"broker": "b1"}
    assert to_brokers(core) == []
    assert C1 in core.clients  # not fatal


def test_broken_publish_gets_the_decoders_error() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, [codec.command(f.PUBLISH), b"", codec.packb([9, []]), b"x"], 0.0)
    [(_, e)] = errors(core)
    assert (e.name, e.op, e.ref) == ("INVALID_QUEUE_NAME", f.PUBLISH, 9)
    core.from_client(C1, [codec.command(f.PUBLISH), b"\xff\xfe", codec.packb([10, []]), b"x"],
                     0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op) == (MalformedFrame.code, f.PUBLISH)
    assert C1 not in core.clients  # fatal: the session ended


def test_queue_in_two_catalogs_is_a_conflict() -> None:
    core = make("b1", "b2", catalogs={"b1": ["dup"], "b2": ["dup"]})
    client_ready(core)
    core.from_client(C1, publish("dup", 3), 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op, e.ref) == (QueueConflict.code, f.PUBLISH, 3)
    assert e.info == {"queue": "dup", "brokers": ["b1", "b2"]}
    assert to_brokers(core) == []


def test_credit_is_moved_to_the_broker() -> None:
    core = make("b1", "b2", catalogs={"b2": ["jobs"]})
    client_ready(core)
    core.from_client(C1, enc(f.Credit("jobs", 10)), 0.0)
    core.from_client(C1, enc(f.Credit("a.new", 10)), 0.0)
    (_, e1), (_, e2) = errors(core)
    assert (e1.code, e1.op, e1.ref) == (Moved.code, f.CREDIT, "jobs")
    assert e1.info == {"queue": "jobs", "broker": "b2", "endpoint": "tcp://10.0.0.2:5601",
                       "version": 1}
    assert e2.info is not None
    assert e2.info["broker"] == "b1"


def test_locate_answers_location() -> None:
    core = make("b1", "b2", catalogs={"b2": ["a.special"]})
    client_ready(core)
    core.from_client(C1, enc(f.Locate(1, "a.special")), 0.0)
    core.from_client(C1, enc(f.Locate(2, "a.new")), 0.0)
    (_, l1), (_, l2) = to_clients(core)
    assert l1 == f.Location(1, {"queue": "a.special", "broker": "b2",
                                "endpoint": "tcp://10.0.0.2:5601", "version": 1,
                                "exists": True})
    assert l2 == f.Location(2, {"queue": "a.new", "broker": "b1",
                                "endpoint": "tcp://10.0.0.1:5601", "version": 1,
                                "exists": False})


def test_manage_is_routed_by_its_queue_argument() -> None:
    core = make("b1", "b2")
    client_ready(core)
    manage = enc(f.Manage(8, "declare", {"queue": "b.jobs", "settings": {}}))
    core.from_client(C1, manage, 0.0)
    out = to_brokers(core)
    assert [b for b, _ in out] == ["b2", "b2"]
    assert out[1][1][2:] == manage
    core.from_client(C1, enc(f.Manage(9, "list", {})), 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op, e.ref) == (InvalidArgument.code, f.MANAGE, 9)


def test_manage_for_a_down_broker_is_unavailable_with_its_req() -> None:
    core = make("b2")
    core.tick(3.5)  # b1 gave no WELCOME within the silence limit: it is down
    core.take()
    client_ready(core, now=3.5)
    core.from_client(C1, enc(f.Manage(4, "purge", {"queue": "a.jobs"})), 3.5)
    [(_, e)] = errors(core)
    assert (e.code, e.op, e.ref, e.info) == (Unavailable.code, f.MANAGE, 4, {"broker": "b1"})


@pytest.mark.parametrize(("frame", "ref"), [
    (f.Ack([1, 2], [1, 1]), [1, 2]),
    (f.Nack([3], [1], True, 0, "no"), [3]),
    (f.Release([4]), [4]),
    (f.Extend([5], [1], 1000), [5]),
    (f.Start([6], [1]), None),
    (f.Cancel("jobs"), None),
])
def test_settling_and_cancelling_are_invalid_at_a_router(frame: f.Frame, ref: Any) -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, enc(frame), 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op, e.ref) == (InvalidArgument.code, f.OPCODES[type(frame)], ref)
    assert C1 in core.clients


def test_stats_reply_shape() -> None:
    core = make("b1", now=10.0, catalogs={"b1": ["a.x", "a.y"]})
    client_ready(core, now=10.0)
    core.from_client(C1, enc(f.Stats(77)), 12.5)
    [(_, reply)] = to_clients(core)
    assert isinstance(reply, f.StatsReply)
    assert reply.req == 77
    s = reply.stats
    assert s["router"] == "r1"
    assert s["cluster"] == {"id": "demo", "version": 1}
    assert s["clients"] == 1
    assert s["counters"]["frames_in"] == 2
    b1, b2 = s["links"]["b1"], s["links"]["b2"]
    assert b1 == {"state": "up", "endpoint": "tcp://10.0.0.1:5601", "process": "proc-b1",
                  "up_since_s": 2.5, "last_heard_s": 2.5, "forwarded_in": 0,
                  "forwarded_out": 0, "errors": 0, "queues": 2}
    assert b2["state"] == "hello-sent"
    assert b2["up_since_s"] is None


def test_forward_and_broker_frames_from_a_client_are_fatal() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, codec.forward(b"x", enc(f.Heartbeat())), 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op) == (ProtocolViolation.code, f.FORWARD)
    assert C1 not in core.clients
    client_ready(core, C2)
    core.from_client(C2, [b"ZQ\x01"], 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op) == (MalformedFrame.code, 0)
    assert C2 not in core.clients


def test_bye_is_forwarded_to_each_inner_session_verbatim() -> None:
    core = make("b1", "b2")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 0.0)
    core.from_client(C1, publish("b.x"), 0.0)
    core.take()
    bye = enc(f.Bye("done"))
    core.from_client(C1, bye, 0.0)
    out = to_brokers(core)
    assert sorted(b for b, _ in out) == ["b1", "b2"]
    assert all(p[2:] == bye and p[1] == C1 for _, p in out)
    assert C1 not in core.clients


def test_hello_twice_starts_a_new_session() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x", 1), 0.0)
    core.take()
    again = enc(f.Hello("second", producer=b"p" * 16))
    core.from_client(C1, again, 0.0)
    [(_, w)] = to_clients(core)
    assert isinstance(w, f.Welcome)
    assert [type(fr) for _, _, fr in forwarded(core)] == [f.Bye]  # the old inner session
    core.from_client(C1, publish("a.x", 2), 0.0)
    out = to_brokers(core)
    assert out[0][1][2:] == again  # the new session's own HELLO opens the new inner one
    assert len(out) == 2


# ------------------------------------------------------------------ liveness


def test_silent_client_is_forgotten_and_its_bye_forwarded() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 0.0)
    core.take()
    for t in (1.0, 2.0, 3.0):
        core.from_broker("b1", enc(f.Heartbeat()), t)  # the link stays alive
        core.tick(t)
    assert C1 in core.clients  # silent for exactly 3 s: not yet
    beats = [fr for k, fr in to_clients(core) if k == C1]
    assert beats == [f.Heartbeat()] * 3  # one per interval
    core.from_broker("b1", enc(f.Heartbeat()), 3.5)
    core.tick(4.0)
    assert C1 not in core.clients
    assert core.counters["clients_expired"] == 1
    byes = [(b, k) for b, k, fr in forwarded(core) if isinstance(fr, f.Bye)]
    assert byes == [("b1", C1)]


def test_any_frame_keeps_a_client_alive() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 2.9)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        core.from_broker("b1", enc(f.Heartbeat()), t)
        core.tick(t)
    assert C1 in core.clients


def test_silent_broker_loses_only_its_clients() -> None:
    core = make("b1", "b2")
    for key in (C1, C2, C3):
        client_ready(core, key)
    core.from_client(C1, publish("a.x"), 0.0)  # C1: inner sessions at b1 and b2
    core.from_client(C1, publish("b.x"), 0.0)
    core.from_client(C2, publish("a.y"), 0.0)  # C2: b1 only
    core.from_client(C3, publish("b.y"), 0.0)  # C3: b2 only
    core.take()
    for t in (1.0, 2.0, 3.0, 4.0):
        for key in (C1, C2, C3):
            core.from_client(key, enc(f.Heartbeat()), t)
        core.from_broker("b2", enc(f.Heartbeat()), t)
        core.tick(t)
        if t == 3.0:
            assert core.links["b1"].state == UP  # silent for exactly 3 s: not yet
    clients, brokers = core.take()
    lost = [(k, codec.decode(p)) for k, p in clients if codec.decode(p) != f.Heartbeat()]
    assert [(k, e.code, e.op, e.ref) for k, e in lost] == [
        (C1, SessionUnknown.code, 0, None), (C2, SessionUnknown.code, 0, None)]
    assert set(core.clients) == {C3}
    sent = [(b, codec.decode(p)) for b, p in brokers]
    c1_bye = [(b, fr) for b, fr in sent if isinstance(fr, f.Forward) and fr.key == C1]
    assert [(b, type(codec.decode(fr.parts))) for b, fr in c1_bye] == [("b2", f.Bye)]
    assert [type(fr) for b, fr in sent if b == "b1" and fr != f.Heartbeat()] == [f.Bye, f.Hello]
    assert core.links["b1"].state == HELLO_SENT
    assert core.counters["links_lost"] == 1


def test_session_unknown_on_the_link_means_the_broker_restarted() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 0.0)
    core.take()
    unknown = enc(f.Error(SessionUnknown.code, "SESSION_UNKNOWN", "who?", f.HEARTBEAT))
    core.from_broker("b1", unknown, 1.0)
    core.from_broker("b1", unknown, 1.0)  # the answer to an older heartbeat: no effect
    [(key, e)] = errors(core)
    assert key == C1
    assert e.code == SessionUnknown.code
    # It lost the link session: a new HELLO goes without a BYE first.
    assert [type(codec.decode(p)) for _, p in to_brokers(core)] == [f.Hello]
    # It answers: the client's resend is taken, and waits for the link's WELCOME.
    client_ready(core, now=1.0)
    core.from_client(C1, publish("a.x"), 1.0)
    assert errors(core) == []
    assert forwarded(core) == []
    core.from_broker("b1", welcome("b1", "restarted"), 1.1)
    assert errors(core) == []  # a new process, but nothing was forwarded to the old one
    assert [type(fr) for _, _, fr in forwarded(core)] == [f.Hello, f.Publish]
    assert core.links["b1"].state == UP
    assert core.links["b1"].process == "restarted"


def test_welcome_from_a_new_broker_process_loses_its_clients() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 0.0)
    core.take()
    core.from_broker("b1", welcome("b1", "proc-b1"), 0.5)  # the same process: nothing lost
    assert errors(core) == []
    core.from_broker("b1", welcome("b1", "another"), 1.0)
    [(_, e)] = errors(core)
    assert e.code == SessionUnknown.code
    assert C1 not in core.clients


def test_inner_session_unknown_ends_the_client_session() -> None:
    core = make("b1", "b2")
    client_ready(core)
    core.from_client(C1, publish("a.x"), 0.0)
    core.from_client(C1, publish("b.x"), 0.0)
    core.take()
    err = enc(f.Error(SessionUnknown.code, "SESSION_UNKNOWN", "HELLO first", f.PUBLISH))
    core.from_broker("b1", codec.forward(C1, err), 1.0)
    clients, brokers = core.take()
    assert clients == [(C1, err)]  # relayed as it came
    assert C1 not in core.clients
    byes = [(b, codec.decode(p)) for b, p in brokers]
    assert [(b, fw.key, codec.decode(fw.parts)) for b, fw in byes] == [
        ("b2", C1, f.Bye("session unknown at broker b1"))]


def test_catalog_changes_and_a_gap_reopens_the_link() -> None:
    core = make("b1", catalogs={"b1": ["a.x"]})
    core.from_broker("b1", enc(f.Catalog(2, "add", ["a.y", "a.z"])), 0.0)
    core.from_broker("b1", enc(f.Catalog(3, "remove", ["a.x"])), 0.0)
    assert core.links["b1"].catalog == {b"a.y", b"a.z"}
    client_ready(core)
    core.from_client(C1, publish("a.y"), 0.0)
    core.take()
    core.from_broker("b1", enc(f.Catalog(5, "add", ["a.w"])), 1.0)  # 4 is missing
    assert core.counters["catalog_resets"] == 1
    assert [e.code for _, e in errors(core)] == [SessionUnknown.code]
    assert [type(codec.decode(p)) for _, p in to_brokers(core)] == [f.Bye, f.Hello]
    assert core.links["b1"].state == HELLO_SENT
    core.from_broker("b1", welcome("b1"), 1.1)
    core.from_broker("b1", enc(f.Catalog(1, "snapshot", ["a.w"])), 1.1)
    assert core.links["b1"].catalog == {b"a.w"}
    assert core.links["b1"].state == UP


# ------------------------------------------------------------------ the cluster file


def newer(version: int = 2, **changes: Any) -> dict[str, Any]:
    m = {**CLUSTER_MAP, "version": version, **changes}
    return ClusterConfig.from_dict(m).to_dict()


def stale(config: dict[str, Any]) -> list[bytes]:
    return enc(f.Error(StaleConfig.code, "STALE_CONFIG", "newer file", f.PUBLISH, 1,
                       {"version": config["version"], "config": config}))


def test_stale_config_in_a_forward_is_adopted_and_the_publish_tried_once_more() -> None:
    core = make("b1", "b2")
    client_ready(core)
    core.from_client(C1, publish("a.x", 1), 0.0)
    core.take()
    brokers = [*CLUSTER_MAP["brokers"], {"id": "b3", "endpoint": "tcp://10.0.0.3:5601"}]
    cfg2 = newer(2, brokers=brokers)
    core.from_broker("b1", codec.forward(C1, stale(cfg2)), 1.0)
    assert core.cluster.version == 2
    assert core.counters["configs_adopted"] == 1
    assert core.link_actions == [("open", "b3", "tcp://10.0.0.3:5601")]
    # Not relayed: the client's session ends instead, so that it sends the PUBLISH
    # once more (same seq), to be placed with version 2.
    [(key, e)] = errors(core)
    assert key == C1
    assert e.code == SessionUnknown.code
    # Links that announced version 1 open again, saying version 2.
    sent = [(b, codec.decode(p)) for b, p in to_brokers(core)]
    assert [(b, type(fr)) for b, fr in sent] == [("b1", f.Bye), ("b1", f.Hello),
                                                 ("b2", f.Bye), ("b2", f.Hello)]
    assert all(fr.link == {"cluster": "demo", "version": 2, "router": "r1"}
               for _, fr in sent if isinstance(fr, f.Hello))
    # The resend is taken and goes once the link's new session is welcomed.
    client_ready(core, now=1.0)
    again = publish("a.x", 1)
    core.from_client(C1, again, 1.0)
    assert errors(core) == []
    assert to_brokers(core) == []
    core.from_broker("b1", welcome("b1"), 1.05)
    out = [(b, p) for b, p in to_brokers(core) if p[0] == codec.command(f.FORWARD)]
    assert [b for b, _ in out] == ["b1", "b1"]
    assert out[1][1][2:] == again
    for other in (newer(1), newer(3, cluster_id="elsewhere")):  # not newer, not ours
        core.from_broker("b1", codec.forward(C1, stale(other)), 1.0)
        [(_, e)] = errors(core)  # relayed: the client hears of it
        assert e.code == StaleConfig.code
    assert core.cluster.version == 2


def test_reopened_link_without_welcome_loses_what_went_behind_its_hello() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x", 1), 0.0)
    core.take()
    core.from_broker("b1", enc(f.Catalog(3, "add", ["a.y"])), 0.5)  # a gap: reopened
    assert [e.code for _, e in errors(core)] == [SessionUnknown.code]
    client_ready(core, now=0.5)
    core.from_client(C1, publish("a.x", 2), 0.5)
    assert errors(core) == []  # forwarded behind the HELLO, not UNAVAILABLE
    for t in (1.0, 2.0, 3.0):
        core.from_client(C1, enc(f.Heartbeat()), t)
        core.tick(t)
    assert errors(core) == []  # 2.5 s without WELCOME: within the link's 3 s
    core.from_client(C1, enc(f.Heartbeat()), 4.0)
    core.tick(4.0)
    assert [e.code for _, e in errors(core)] == [SessionUnknown.code]
    client_ready(core, now=4.0)
    core.from_client(C1, publish("a.x", 2), 4.0)
    [(_, e)] = errors(core)
    assert e.code == Unavailable.code


def test_a_silent_broker_gets_nothing_until_it_answers() -> None:
    core = make("b1")
    client_ready(core)
    for t in (1.0, 2.0, 3.0, 4.0):
        core.from_client(C1, enc(f.Heartbeat()), t)
        core.tick(t)
    core.take()
    assert core.links["b1"].state == HELLO_SENT
    core.from_client(C1, publish("a.x", 5), 4.0)
    [(_, e)] = errors(core)
    assert (e.code, e.ref) == (Unavailable.code, 5)
    core.from_broker("b1", welcome("b1"), 4.5)
    core.from_client(C1, publish("a.x", 6), 4.5)
    assert errors(core) == []
    assert len(forwarded(core)) == 2  # the inner HELLO and the PUBLISH


def test_stale_config_on_the_link_is_adopted() -> None:
    core = make()
    core.from_broker("b1", stale(newer(3)), 0.0)
    assert core.cluster.version == 3


def test_offer_takes_only_a_newer_file_of_this_cluster() -> None:
    core = make("b1", "b2")
    other = ClusterConfig.from_dict({**CLUSTER_MAP, "cluster_id": "x", "version": 9})
    assert core.offer(other, 0.0)[0] is False
    assert core.offer(CLUSTER, 0.0)[0] is False
    client_ready(core)
    core.from_client(C1, publish("b.x"), 0.0)
    core.take()
    one = ClusterConfig.from_dict({**CLUSTER_MAP, "version": 2, "pins": {"a.": "b1"},
                                   "brokers": CLUSTER_MAP["brokers"][:1]})
    taken, what = core.offer(one, 1.0)
    assert taken
    assert "version 2" in what
    assert core.link_actions == [("close", "b2", "")]
    assert "b2" not in core.links
    assert [e.code for _, e in errors(core)] == [SessionUnknown.code]  # C1 was on b2


def test_a_failed_forward_answers_unavailable() -> None:
    core = make("b1")
    client_ready(core)
    core.from_client(C1, publish("a.x", 11), 0.0)
    for bid, parts in to_brokers(core):
        core.link_send_failed(bid, parts, 0.0)
    [(_, e)] = errors(core)
    assert (e.code, e.op, e.ref) == (Unavailable.code, f.PUBLISH, 11)
    assert "b1" not in core.clients[C1].inner  # the inner HELLO did not go either


def test_forwards_are_counted_once_each_as_the_broker_counts_them() -> None:
    """A link's forwarded_out counts FORWARD frames handed to its socket (what the broker
    counts as forwards_in): not while held for a WELCOME, and not one whose send failed;
    forwarded_in counts every FORWARD read from it, relayed or not; forwarded_publishes
    the PUBLISH frames routed, once each."""
    core = make("b2")
    client_ready(core)
    core.from_client(C1, publish("a.x", 1), 0.0)  # b1 is not up yet: held
    assert core.links["b1"].forwarded_out == 0
    core.from_broker("b1", welcome("b1"), 0.1)  # HELLO and PUBLISH go
    assert core.links["b1"].forwarded_out == 2
    core.from_client(C1, publish("a.x", 2), 0.2)
    core.from_client(C1, publish("b.x", 3), 0.2)  # to b2: its inner HELLO, then it
    sent = to_brokers(core)
    assert [b for b, _ in sent] == ["b1", "b1", "b1", "b2", "b2"]
    core.link_send_failed(*sent[-1], 0.3)  # the PUBLISH for b2 never left
    assert (core.links["b1"].forwarded_out, core.links["b2"].forwarded_out) == (3, 1)
    assert core.counters["forwarded_publishes"] == 3
    core.from_broker("b1", codec.forward(C1, welcome("b1")), 0.4)
    core.from_broker("b1", codec.forward(C1, codec.encode_confirm([[1, 7, 1]])), 0.4)
    core.from_broker("b1", codec.forward(C3, codec.encode_confirm([[9, 8, 1]])), 0.4)
    assert core.links["b1"].forwarded_in == 3  # the WELCOME, a CONFIRM, one for nobody
    assert (core.counters["relayed"], core.counters["dropped"]) == (1, 1)


def test_close_says_bye_to_clients_and_links() -> None:
    core = make("b1")
    client_ready(core)
    core.close("stopping")
    clients, brokers = core.take()
    assert [(k, codec.decode(p)) for k, p in clients] == [(C1, f.Bye("stopping"))]
    assert [(b, codec.decode(p)) for b, p in brokers] == [
        ("b1", f.Bye("stopping")), ("b2", f.Bye("stopping"))]


# ------------------------------------------------------------------ config, layering


def test_router_config_is_validated() -> None:
    assert RouterConfig(bind="tcp://127.0.0.1:*", cluster="c.toml").id == default_id()
    assert default_id().startswith("router-")
    for bad in ({"bind": "nowhere"}, {"id": "has space"}, {"heartbeat": 0.0},
                {"liveness": 0}, {"max_frame": 10}, {"cluster": ""}):
        kw: dict[str, Any] = {"bind": "tcp://127.0.0.1:*", "cluster": "c.toml", **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            RouterConfig(**kw)


def test_router_core_loads_no_io_module() -> None:
    """'No I/O' at import time too: a fresh interpreter imports the core and finds none of
    asyncio, zmq, aiosqlite and sqlite3 loaded."""
    io = ("asyncio", "zmq", "aiosqlite", "sqlite3")
    code = ("import sys, zq.router.core, zq.router.config; "
            f"print(','.join(m for m in {io!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"zq.router.core loads {out.stdout.strip()}"


def test_a_new_links_frames_wait_for_its_welcome_until_the_silence_limit() -> None:
    """A router that has just started (or restarted: its clients reconnect at once)
    holds frames for a link that has not been welcomed yet, instead of answering
    UNAVAILABLE, and sends them once it is; with no WELCOME in time the clients are
    told their session is lost (they resend, and get UNAVAILABLE then)."""
    core = make("b2")
    client_ready(core)
    client_ready(core, C2)
    hello_parts = core.clients[C1].hello
    core.from_client(C1, publish("a.x", 42), 0.5)
    assert errors(core) == []
    assert to_brokers(core) == []  # a FORWARD before the link's HELLO would be refused
    core.from_broker("b1", welcome("b1"), 0.6)
    assert to_brokers(core) == [("b1", codec.forward(C1, hello_parts)),
                                ("b1", codec.forward(C1, publish("a.x", 42)))]
    late = make("b2")
    client_ready(late)
    late.from_client(C1, publish("a.x", 43), 0.5)
    late.tick(3.5)
    [(key, e)] = errors(late)
    assert (key, e.code) == (C1, SessionUnknown.code)
    assert late.links["b1"].held == []


def test_session_unknown_for_frames_before_the_links_hello_loses_their_clients() -> None:
    """Should a frame reach the broker before the link's HELLO, the broker refuses it
    with SESSION_UNKNOWN on the link: its clients are told, so nothing waits for ever."""
    core = make("b2")
    client_ready(core)
    core.from_client(C1, publish("a.x", 44), 0.5)
    unknown = enc(f.Error(SessionUnknown.code, "SESSION_UNKNOWN", "who?", f.FORWARD))
    core.from_broker("b1", unknown, 0.6)
    [(key, e)] = errors(core)
    assert (key, e.code) == (C1, SessionUnknown.code)


def test_a_stale_config_for_the_file_already_taken_makes_its_client_resend() -> None:
    """Two clients' frames were placed with version 1; the first STALE_CONFIG makes the
    router take version 2. The second, on its way meanwhile, names version 2 too: its
    client is not failed with it but told to resend (to be placed with version 2)."""
    core = make("b1", "b2")
    client_ready(core, C1)
    client_ready(core, C2)
    core.from_client(C1, publish("a.x", 1), 0.0)
    core.from_client(C2, publish("a.x", 1), 0.0)
    core.take()
    cfg2 = newer(2)
    core.from_broker("b1", codec.forward(C1, stale(cfg2)), 1.0)
    assert core.cluster.version == 2
    core.take()
    client_ready(core, C2, now=1.0)  # C2 happened to say HELLO again already
    core.from_broker("b1", codec.forward(C2, stale(cfg2)), 1.0)
    [(key, e)] = errors(core)
    assert (key, e.code) == (C2, SessionUnknown.code)  # not STALE_CONFIG
    assert C2 not in core.clients
