"""The client's session table without I/O: a fake clock, no sockets, no sleeps.

What PROTOCOL.md sections 7 and 9 promise a client does: HELLO then WELCOME,
HEARTBEAT when idle, the broker given up after ``heartbeat * liveness`` of
silence, a new session after SESSION_UNKNOWN with unconfirmed publishes resent
and credit granted again, BYE from the broker, and close.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from zq.client.consumer import Consumer
from zq.client.dispatch import Dispatch
from zq.client.outbox import Outbox
from zq.client.requests import Requests
from zq.client.session import (
    TRANSITIONS,
    Action,
    Event,
    Fail,
    Opened,
    Restore,
    Send,
    Session,
    SessionError,
    State,
    Void,
    Warn,
)
from zq.errors import (
    ClientClosed,
    ConnectionLost,
    ProtocolViolation,
    SessionUnknown,
    StaleDelivery,
)
from zq.protocol import codec
from zq.protocol import frames as f

W = f.Welcome("broker-1", heartbeat_ms=1000, liveness=3, max_batch=100, max_credit=1000,
              max_frame=1 << 20, starts=True)
HELLO = Send(f.Hello("me", starts=True))
UNKNOWN = SessionUnknown("no session")


def ready(at: float = 10.0) -> Session:
    """A session opened at ``at`` whose last frame each way was at ``at``."""
    s = Session("me", "tcp://broker:1")
    assert s.open(at - 0.1) == [HELLO]
    assert s.state is State.CONNECTING
    assert s.on_welcome(W, at) == [Opened(W)]
    s.received(at)
    s.sent(at)
    return s


def sends(actions: Sequence[Action]) -> list[f.Frame]:
    return [a.frame for a in actions if isinstance(a, Send)]


def test_hello_then_welcome() -> None:
    s = Session("me", "tcp://broker:1")
    assert (s.state, s.epoch, s.welcome) == (State.NEW, 0, None)
    assert s.open(0.0) == [HELLO]
    assert (s.state, s.epoch) == (State.CONNECTING, 1)
    assert s.received(0.05) == []  # frames before the WELCOME change nothing
    assert s.on_welcome(W, 0.1) == [Opened(W)]
    assert (s.state, s.welcome, s.broken) == (State.READY, W, None)
    assert (s.interval, s.patience) == (1.0, 3.0)


def test_open_twice_is_a_bug_of_the_caller() -> None:
    s = ready()
    with pytest.raises(SessionError):
        s.open(11.0)


def test_heartbeat_when_idle_half_an_interval() -> None:
    s = ready(at=10.0)
    assert s.tick(10.49) == []  # sent something 0.49 s ago: no need
    assert s.tick(10.5) == [Send(f.Heartbeat())]
    s.sent(10.5)
    s.received(10.6)
    assert s.tick(10.9) == []
    assert s.state is State.READY


def test_silent_for_exactly_liveness_intervals_is_not_yet_lost() -> None:
    s = ready(at=10.0)
    s.sent(13.0)
    assert s.tick(13.0) == []  # 3 s of silence, liveness 3 * 1 s: not yet
    assert s.state is State.READY


def test_silent_past_liveness_is_lost_and_pending_requests_fail() -> None:
    s = ready(at=10.0)
    outbox, requests, consumer = Outbox(), Requests(), FakeConsumer("q")
    dispatch = Dispatch(s, outbox, requests, {"q": consumer}, errors=_Errors())
    stats: Future[Any] = Future()
    published: Future[Any] = Future()
    requests.add(outbox.next_seq(), None, {}, stats, s.epoch)
    outbox.publish("q", b"x", None, published)
    outbox.take()

    actions = s.tick(13.01)
    fail = actions[0]
    assert isinstance(fail, Fail)
    assert fail.lost
    assert isinstance(fail.error, ConnectionLost)
    assert "silent for 3.0s" in fail.error.message
    assert actions[1:] == [Send(f.Heartbeat())]  # a restarted broker would answer it
    assert (s.state, s.broken) == (State.LOST, fail.error)

    dispatch.fail(fail.error)  # what the connection does with Fail
    assert stats.exception() is fail.error
    assert published.exception() is fail.error
    assert consumer.errors == [fail.error]
    assert (outbox.unconfirmed, requests.pending, outbox.sent) == (0, {}, {})


def test_while_lost_heartbeats_go_out_every_interval() -> None:
    s = ready(at=10.0)
    s.give_up(ConnectionLost("gone"), 11.0)
    s.sent(11.0)
    assert s.tick(11.1) == [Send(f.Heartbeat())]  # even right after sending
    assert s.state is State.LOST  # silence is not watched twice


def test_a_frame_after_giving_up_ends_that_session_and_opens_a_new_one() -> None:
    s = ready(at=10.0)
    [fail] = s.give_up(ConnectionLost("silent for too long"), 14.0)
    assert isinstance(fail, Fail)
    assert fail.lost
    assert s.received(14.5) == [Send(f.Bye("client lost the broker")), HELLO]
    assert (s.state, s.epoch) == (State.REOPENING, 2)
    assert s.received(14.6) == []  # one HELLO is enough
    assert s.on_welcome(W, 14.7) == [Opened(W), Restore(2)]
    assert (s.state, s.broken) == (State.READY, None)


def test_session_unknown_says_hello_again_once_per_patience() -> None:
    s = ready(at=10.0)
    assert s.on_session_unknown(UNKNOWN, 11.0) == [HELLO, Void(2, UNKNOWN)]
    assert (s.state, s.broken) == (State.RESUMING, None)  # nothing failed
    # More refusals of frames sent before the new HELLO: no second HELLO yet.
    assert s.on_session_unknown(UNKNOWN, 13.9) == [Void(2, UNKNOWN)]
    # That HELLO got no WELCOME within the broker's patience: it goes again.
    assert s.on_session_unknown(UNKNOWN, 14.0) == [HELLO, Void(3, UNKNOWN)]
    assert s.on_welcome(W, 14.1) == [Opened(W), Restore(3)]
    assert s.state is State.READY


def test_resume_resends_unconfirmed_publishes_and_requests_and_grants_credit() -> None:
    s = ready(at=10.0)
    outbox, requests = Outbox(), Requests()
    outbox.welcome(W)
    consumer = FakeConsumer("jobs", outbox=outbox, prefetch=7)
    dispatch = Dispatch(s, outbox, requests, {"jobs": consumer}, errors=_Errors())
    confirmed: Future[Any] = Future()
    unconfirmed: Future[Any] = Future()
    outbox.publish("a", b"1", None, confirmed)
    outbox.publish("b", b"2", None, unconfirmed)
    first = outbox.take()  # PUBLISH seq 1 and 2
    info: Future[Any] = Future()
    purge: Future[Any] = Future()
    outbox.control(requests.add(outbox.next_seq(), "info", {"queue": "a"}, info, s.epoch))
    outbox.control(requests.add(outbox.next_seq(), "purge", {"queue": "a"}, purge, s.epoch))
    outbox.take()
    assert dispatch.frame(f.Confirm([(1, 100, 1)]), 10.5) == ()
    assert confirmed.result() == 100

    actions = dispatch.frame(f.Error(7, "SESSION_UNKNOWN", "who?", f.HEARTBEAT, None), 11.0)
    assert sends(actions) == [f.Hello("me", starts=True)]
    [void] = [a for a in actions if isinstance(a, Void)]
    requests.void(void.epoch, void.error)
    assert isinstance(purge.exception(), SessionUnknown)  # may have happened: not resent
    assert not info.done()

    actions = dispatch.frame(W, 11.2)
    assert actions == [Opened(W), Restore(2)]
    dispatch.restore(2)
    frames = [codec.decode(p) for p in outbox.take()]
    assert frames == [
        f.Publish("b", 2, [b"2"]),  # the same seq: its CONFIRM resolves the same future
        f.Manage(3, "info", {"queue": "a"}),
        f.Credit("jobs", 7),
    ]
    assert codec.encode(frames[0]) == first[1]  # byte for byte what went out first
    assert consumer.new_sessions == 1
    dispatch.frame(f.Confirm([(2, 200, 1)]), 11.3)
    assert unconfirmed.result() == 200


def test_a_consumer_grants_its_window_again_on_a_new_session() -> None:
    conn = FakeConnection()
    consumer = Consumer(conn, "jobs", prefetch=5)  # type: ignore[arg-type]
    consumer.on_deliver(f.Deliver("jobs", [1, 2], [1, 1], [b"a", b"b"]))
    consumer.on_error(ConnectionLost("gone"))
    assert (consumer.held, consumer.buffered) == (2, 0)
    consumer.on_new_session()
    assert conn.granted == [("jobs", 5)]
    assert (consumer.held, consumer.buffered) == (0, 0)


def test_bye_from_the_broker() -> None:
    s = ready(at=10.0)
    [fail] = s.on_bye("broker shutting down", 11.0)
    assert isinstance(fail, Fail)
    assert fail.lost
    assert fail.error.message == "broker said BYE: broker shutting down"
    assert s.state is State.DEPARTED
    assert s.received(11.5) == []  # it is going away: no BYE, no HELLO of ours
    assert s.tick(12.0) == [Send(f.Heartbeat())]
    # A restarted broker on the same endpoint does not know us.
    assert s.on_session_unknown(UNKNOWN, 12.1) == [HELLO, Void(2, UNKNOWN)]
    assert s.on_welcome(W, 12.2) == [Opened(W), Restore(2)]


def test_given_up_then_bye_waits_for_a_restarted_broker() -> None:
    s = ready(at=10.0)
    s.give_up(ConnectionLost("gone"), 11.0)
    assert s.on_bye("stopping", 11.1) == []  # already failed
    assert s.state is State.DEPARTED
    assert s.received(11.2) == []


def test_a_fatal_error_gives_the_broker_up() -> None:
    s = ready(at=10.0)
    errors = _Errors()
    dispatch = Dispatch(s, Outbox(), Requests(), {}, errors=errors)
    [fail] = dispatch.frame(f.Error(5, "PROTOCOL_VIOLATION", "no", f.ACK, None), 11.0)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, ProtocolViolation)
    assert s.state is State.LOST
    assert list(errors) == [fail.error]
    # A non-fatal error nobody waits for is only kept.
    assert dispatch.frame(f.Error(12, "STALE_DELIVERY", "old", f.ACK, [5]), 11.1) == ()
    assert isinstance(errors[-1], StaleDelivery)


def test_close_says_bye_unless_the_broker_is_gone() -> None:
    s = ready(at=10.0)
    [fail, bye] = s.close(11.0)
    assert isinstance(fail, Fail)
    assert not fail.lost
    assert isinstance(fail.error, ClientClosed)
    assert bye == Send(f.Bye("client closed"))
    assert (s.state, s.broken) == (State.CLOSED, None)
    assert s.received(11.1) == s.tick(12.0) == s.close(12.0) == []

    lost = ready(at=10.0)
    lost.give_up(ConnectionLost("gone"), 11.0)
    [fail] = lost.close(11.5)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, ClientClosed)


def test_an_unexpected_welcome_is_only_logged() -> None:
    s = ready(at=10.0)
    assert s.on_welcome(W, 11.0) == [Warn("unexpected WELCOME from broker")]
    assert (s.state, s.epoch) == (State.READY, 1)


def test_every_pair_is_in_the_table_but_those_that_cannot_happen() -> None:
    missing = {(st, ev) for st in State for ev in Event} - set(TRANSITIONS)
    assert missing == {(st, Event.OPEN) for st in State if st not in (State.NEW, State.CLOSED)} \
        | {(st, Event.SILENT) for st in (State.CONNECTING, State.LOST, State.DEPARTED,
                                         State.REOPENING)}


def test_the_sans_io_modules_load_neither_asyncio_nor_zmq() -> None:
    code = ("import sys, zq.client.session, zq.client.outbox, zq.client.requests, "
            "zq.client.dispatch, zq.client.args, zq.client.routing; "
            "print(sorted(m for m in ('asyncio', 'zmq', 'aiosqlite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_cycle_between_client_modules() -> None:
    root = Path(__file__).resolve().parents[2] / "zq" / "client"
    graph = {path.stem: _client_imports(path) for path in root.glob("*.py")}
    graph["__init__"] = set()  # it loads its names lazily

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import cycle: {' -> '.join((*path, mod))}"
        for dep in graph.get(mod, ()):
            visit(dep, (*path, mod))

    for mod in graph:
        visit(mod, ())


def _client_imports(path: Path) -> set[str]:
    """The zq.client modules ``path`` imports at run time (not for type checking)."""
    deps: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.startswith("zq.client."):
                deps.add(node.module.split(".")[2])
            elif node.module == "zq.client":
                deps.update(a.name for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return deps


# ------------------------------------------------------------ fakes


class _Errors(list[Any]):
    """Stands for the connection's ``errors`` deque."""


class FakeConsumer:
    """What the dispatcher needs of a consumer, recording what it was told."""

    def __init__(self, queue: str, outbox: Outbox | None = None, prefetch: int = 1) -> None:
        self.queue = queue
        self.outbox = outbox
        self.prefetch = prefetch
        self.errors: list[Exception] = []
        self.delivered: list[f.Deliver] = []
        self.new_sessions = 0

    def on_deliver(self, frame: f.Deliver) -> None:
        self.delivered.append(frame)

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)

    def on_undecodable(self, n: int) -> None:
        pass

    def on_new_session(self) -> None:
        self.new_sessions += 1
        if self.outbox is not None:
            self.outbox.grant(self.queue, self.prefetch)


class FakeConnection:
    """What a Consumer calls on its connection when the session changes."""

    def __init__(self) -> None:
        self.granted: list[tuple[str, int]] = []
        self.consumers: dict[str, Any] = {}

    def credit(self, queue: str, n: int) -> None:
        self.granted.append((queue, n))
