"""The session state of one client as the broker sees it, as a transition table.

A (state, opcode) pair that is not in the table is an error: SESSION_UNKNOWN
before HELLO (the client should say HELLO, for instance after a broker
restart), PROTOCOL_VIOLATION otherwise.
"""

from __future__ import annotations

import enum

from zq.errors import ProtocolViolation, SessionUnknown
from zq.protocol import frames as f


class State(enum.Enum):
    NEW = "new"  # no HELLO yet
    READY = "ready"  # HELLO accepted, WELCOME sent
    CLOSED = "closed"  # BYE received or peer dropped


_READY_OPS = (f.HEARTBEAT, f.PUBLISH, f.CREDIT, f.CANCEL, f.ACK, f.NACK, f.RELEASE, f.EXTEND,
              f.START, f.STATS, f.MANAGE, f.LOCATE, f.FORWARD)

# Frames a client may send to a broker, by state.
TRANSITIONS: dict[tuple[State, int], State] = {
    (State.NEW, f.HELLO): State.READY,
    (State.NEW, f.BYE): State.CLOSED,
    (State.READY, f.BYE): State.CLOSED,
    **{(State.READY, op): State.READY for op in _READY_OPS},
}


def next_state(state: State, op: int) -> State:
    """The state after the broker receives opcode ``op`` in ``state``."""
    nxt = TRANSITIONS.get((state, op))
    if nxt is not None:
        return nxt
    name = f.NAMES.get(op, hex(op))
    if state is State.NEW and op in _READY_OPS:
        raise SessionUnknown(f"{name} before HELLO: send HELLO first", op=op)
    raise ProtocolViolation(f"{name} is not allowed in state {state.value}", op=op)
