"""The client's side of a zq session, as a state table (PROTOCOL.md sections 7 and 9).

No I/O and no clock: the connection feeds events with the time ``now`` and
carries out the actions each returns, in order. A (state, event) pair that is
not in :data:`TRANSITIONS` is a bug in the caller and raises
:class:`SessionError`.

States:

* NEW: nothing sent yet.
* CONNECTING: the first HELLO is out; :meth:`Connection.open` waits for WELCOME.
* READY: the broker knows our session.
* RESUMING: the broker said SESSION_UNKNOWN (it restarted, or dropped us); a new
  HELLO is out. Nothing waiting has failed: refused requests go out again.
* LOST: we gave the broker up (silent past its liveness, or a fatal ERROR) and
  failed what waited on it with ConnectionLost. A broker that talks again kept
  our session, which we have already failed: we end it with BYE and say HELLO.
* DEPARTED: the broker said BYE (it is stopping). Only a restarted broker's
  SESSION_UNKNOWN (to our heartbeats) opens a new session.
* REOPENING: like RESUMING, after what waited has failed (LOST or DEPARTED).
* CLOSED: the application closed the client.

While not READY the connection keeps sending HEARTBEAT once per interval, so
that a restarted broker answers SESSION_UNKNOWN.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from zq.errors import ClientClosed, ConnectionLost, ZqError
from zq.protocol import frames as f
from zq.protocol import limits

log = logging.getLogger("zq.client")

# MALFORMED_FRAME, UNSUPPORTED_VERSION, UNKNOWN_OPCODE, PROTOCOL_VIOLATION end a session
FATAL_CODES = limits.FATAL_CODES


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    READY = "ready"
    RESUMING = "resuming"
    LOST = "lost"
    DEPARTED = "departed"
    REOPENING = "reopening"
    CLOSED = "closed"


class Event(enum.Enum):
    OPEN = "hello sent"
    WELCOME = "welcome received"
    FRAME = "frame received"
    SILENT = "broker silent past liveness"
    FATAL = "fatal error"  # a fatal ERROR from the broker, or the client gives it up
    BYE = "bye from broker"
    SESSION_UNKNOWN = "session unknown"
    CLOSE = "close"


class Step(enum.Enum):
    """What a transition does; :class:`Session` turns steps into actions."""

    HELLO = "send HELLO"
    HELLO_IF_DUE = "send HELLO again if the last one got no WELCOME in time"
    BYE = "end the session the broker kept (BYE)"
    SAY_BYE = "say BYE before closing"
    GIVE_UP = "fail what waits with ConnectionLost"
    FAIL = "fail what waits with ClientClosed"
    VOID = "void requests sent before the latest HELLO"
    OPENED = "take the broker's terms"
    RESTORE = "resend unconfirmed publishes and requests, grant credit again"
    WARN = "log an unexpected WELCOME"


S, E, P = State, Event, Step
_LIVE = (S.READY, S.RESUMING)  # nothing failed yet: silence is watched
_FAILED = (S.LOST, S.DEPARTED, S.REOPENING)
_SENDING = frozenset({P.HELLO, P.HELLO_IF_DUE, P.BYE, P.SAY_BYE})

TRANSITIONS: dict[tuple[State, Event], tuple[State, tuple[Step, ...]]] = {
    **{(S.NEW, e): (S.NEW, ()) for e in Event},  # nothing to do before the first HELLO
    (S.NEW, E.OPEN): (S.CONNECTING, (P.HELLO,)),
    (S.NEW, E.CLOSE): (S.CLOSED, (P.FAIL,)),
    (S.CONNECTING, E.WELCOME): (S.READY, (P.OPENED,)),
    (S.CONNECTING, E.FRAME): (S.CONNECTING, ()),
    # As before the table: what waits fails, and open() still waits for WELCOME.
    (S.CONNECTING, E.BYE): (S.CONNECTING, (P.GIVE_UP,)),
    (S.CONNECTING, E.FATAL): (S.CONNECTING, (P.GIVE_UP,)),
    (S.CONNECTING, E.SESSION_UNKNOWN): (S.CONNECTING, (P.VOID,)),  # a HELLO is on its way
    (S.CONNECTING, E.CLOSE): (S.CLOSED, (P.FAIL, P.SAY_BYE)),
    (S.READY, E.WELCOME): (S.READY, (P.WARN,)),
    (S.READY, E.FRAME): (S.READY, ()),
    (S.READY, E.SILENT): (S.LOST, (P.GIVE_UP,)),
    (S.READY, E.FATAL): (S.LOST, (P.GIVE_UP,)),
    (S.READY, E.BYE): (S.DEPARTED, (P.GIVE_UP,)),
    (S.READY, E.SESSION_UNKNOWN): (S.RESUMING, (P.HELLO, P.VOID)),
    (S.READY, E.CLOSE): (S.CLOSED, (P.FAIL, P.SAY_BYE)),
    (S.RESUMING, E.WELCOME): (S.READY, (P.OPENED, P.RESTORE)),
    (S.RESUMING, E.FRAME): (S.RESUMING, ()),
    (S.RESUMING, E.SILENT): (S.REOPENING, (P.GIVE_UP,)),
    (S.RESUMING, E.FATAL): (S.REOPENING, (P.GIVE_UP,)),
    (S.RESUMING, E.BYE): (S.REOPENING, (P.GIVE_UP,)),
    (S.RESUMING, E.SESSION_UNKNOWN): (S.RESUMING, (P.HELLO_IF_DUE, P.VOID)),
    (S.RESUMING, E.CLOSE): (S.CLOSED, (P.FAIL, P.SAY_BYE)),
    (S.LOST, E.WELCOME): (S.LOST, (P.WARN,)),
    (S.LOST, E.FRAME): (S.REOPENING, (P.BYE, P.HELLO)),
    (S.LOST, E.FATAL): (S.LOST, ()),
    (S.LOST, E.BYE): (S.DEPARTED, ()),
    (S.LOST, E.SESSION_UNKNOWN): (S.REOPENING, (P.HELLO, P.VOID)),
    (S.LOST, E.CLOSE): (S.CLOSED, (P.FAIL,)),
    (S.DEPARTED, E.WELCOME): (S.DEPARTED, (P.WARN,)),
    (S.DEPARTED, E.FRAME): (S.DEPARTED, ()),
    (S.DEPARTED, E.FATAL): (S.DEPARTED, ()),
    (S.DEPARTED, E.BYE): (S.DEPARTED, ()),
    (S.DEPARTED, E.SESSION_UNKNOWN): (S.REOPENING, (P.HELLO, P.VOID)),
    (S.DEPARTED, E.CLOSE): (S.CLOSED, (P.FAIL,)),
    (S.REOPENING, E.WELCOME): (S.READY, (P.OPENED, P.RESTORE)),
    (S.REOPENING, E.FRAME): (S.REOPENING, ()),
    (S.REOPENING, E.FATAL): (S.REOPENING, ()),
    (S.REOPENING, E.BYE): (S.REOPENING, ()),
    (S.REOPENING, E.SESSION_UNKNOWN): (S.REOPENING, (P.HELLO_IF_DUE, P.VOID)),
    (S.REOPENING, E.CLOSE): (S.CLOSED, (P.FAIL,)),
    **{(S.CLOSED, e): (S.CLOSED, ()) for e in Event},
}


class SessionError(Exception):
    """An event the session's state does not allow: a bug in the caller."""


# ------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` now, after everything requested before it."""

    frame: f.Frame


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail every pending publish, request and consumer with ``error``.

    ``lost``: the broker was given up (the connection is then ``broken``);
    otherwise the client was closed.
    """

    error: ZqError
    lost: bool


@dataclass(frozen=True, slots=True)
class Void:
    """SESSION_UNKNOWN: requests sent before HELLO ``epoch`` go again or fail."""

    epoch: int
    error: ZqError


@dataclass(frozen=True, slots=True)
class Opened:
    """A WELCOME: the session is open on the broker's terms."""

    welcome: f.Welcome


@dataclass(frozen=True, slots=True)
class Restore:
    """The session ``epoch`` replaces a lost one: resend every unconfirmed PUBLISH
    and the requests voided for it, and grant every consumer its window again."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Warn:
    text: str


Action = Send | Fail | Void | Opened | Restore | Warn


class Session:
    """One client's session with one broker: state, epoch and liveness clocks."""

    def __init__(self, name: str, endpoint: str, producer: bytes = b"") -> None:
        self.name = name
        self.endpoint = endpoint
        self.producer = producer  # idempotent producer id, in every HELLO
        self.state = State.NEW
        self.epoch = 0  # HELLOs sent so far
        self.welcome: f.Welcome | None = None
        self.broken: ZqError | None = None  # why the broker was given up
        self.hello_at = 0.0  # when the latest HELLO went out
        self.last_recv = 0.0
        self.last_send = 0.0

    # ------------------------------------------------------------ the broker's terms

    @property
    def interval(self) -> float:
        """Seconds between heartbeats (the broker's, or 1 s before its WELCOME)."""
        w = self.welcome
        return w.heartbeat_ms / 1000.0 if w is not None else 1.0

    @property
    def patience(self) -> float:
        """How long a broker may be silent before it counts as gone."""
        w = self.welcome
        return w.heartbeat_ms / 1000.0 * w.liveness if w is not None else 3.0

    @property
    def patience_beat(self) -> float:
        """:attr:`patience` and one interval more (the broker checks once an interval)."""
        w = self.welcome
        return w.heartbeat_ms / 1000.0 * (w.liveness + 1) if w is not None else 5.0

    # ------------------------------------------------------------ events

    def open(self, now: float) -> list[Action]:
        """The first HELLO (the connection then waits for WELCOME)."""
        return self._fire(E.OPEN, now)

    def on_welcome(self, w: f.Welcome, now: float) -> list[Action]:
        return self._fire(E.WELCOME, now, welcome=w)

    def received(self, now: float) -> list[Action]:
        """Frames arrived (after they were handled): a sign of life. A broker given
        up that still talks kept our session, which we have failed: it is ended."""
        self.last_recv = now
        return self._fire(E.FRAME, now)

    def sent(self, now: float) -> None:
        """Frames went out."""
        self.last_send = now

    def tick(self, now: float) -> list[Action]:
        """The heartbeat timer, once per interval: is the broker silent, are we idle?"""
        if self.state not in _LIVE and self.state not in _FAILED:
            return []
        out: list[Action] = []
        silent = now - self.last_recv
        if self.state in _LIVE and silent > self.patience:
            out += self._fire(E.SILENT, now, ConnectionLost(
                f"broker at {self.endpoint} silent for {silent:.1f}s", endpoint=self.endpoint))
        if now - self.last_send >= self.interval * 0.5 or self.broken is not None:
            # While given up this reaches a restarted broker, which answers SESSION_UNKNOWN.
            out.append(Send(f.Heartbeat()))
        return out

    def on_bye(self, reason: str, now: float) -> list[Action]:
        """The broker said BYE: it is going away (a restarted one answers SESSION_UNKNOWN)."""
        return self._fire(E.BYE, now, ConnectionLost(f"broker said BYE: {reason}",
                                                     endpoint=self.endpoint))

    def on_session_unknown(self, exc: ZqError, now: float) -> list[Action]:
        return self._fire(E.SESSION_UNKNOWN, now, exc)

    def give_up(self, exc: ZqError, now: float) -> list[Action]:
        """A fatal ERROR, or the client decided the broker is gone."""
        return self._fire(E.FATAL, now, exc)

    def close(self, now: float) -> list[Action]:
        return self._fire(E.CLOSE, now, ClientClosed("client closed"))

    # ------------------------------------------------------------ the table

    def _fire(self, event: Event, now: float, error: ZqError | None = None,
              welcome: f.Welcome | None = None) -> list[Action]:
        try:
            state, steps = TRANSITIONS[self.state, event]
        except KeyError:
            raise SessionError(f"{event.value} in state {self.state.value}") from None
        self.state = state
        out: list[Action] = []
        for step in steps:
            action = self._do(step, now, error, welcome)
            if action is not None:
                out.append(action)
        return out

    def _do(self, step: Step, now: float, error: ZqError | None,
            welcome: f.Welcome | None) -> Action | None:
        if step in _SENDING:
            return self._send(step, now)
        match step:
            case Step.GIVE_UP:
                assert error is not None
                self.broken = error
                return Fail(error, lost=True)
            case Step.FAIL:
                assert error is not None
                return Fail(error, lost=False)
            case Step.VOID:
                assert error is not None
                return Void(self.epoch, error)
            case Step.OPENED:
                assert welcome is not None
                self.welcome = welcome
                self.broken = None
                return Opened(welcome)
            case Step.RESTORE:
                return Restore(self.epoch)
        return Warn("unexpected WELCOME from broker")

    def _send(self, step: Step, now: float) -> Send | None:
        match step:
            case Step.HELLO:
                return self._hello(now)
            case Step.HELLO_IF_DUE:
                # A HELLO that got no WELCOME within the broker's patience goes again.
                return self._hello(now) if now - self.hello_at >= self.patience else None
            case Step.BYE:
                log.info("broker at %s answers again; starting a new session", self.endpoint)
                return Send(f.Bye("client lost the broker"))
        return Send(f.Bye("client closed")) if self.broken is None else None

    def _hello(self, now: float) -> Send:
        if self.state is not S.CONNECTING:
            log.info("broker lost our session; saying HELLO again")
        self.epoch += 1
        self.hello_at = now
        return Send(f.Hello(self.name, starts=True, producer=self.producer))
