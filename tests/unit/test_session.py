"""The broker's session table: (state, opcode) -> state, or the right error."""

from __future__ import annotations

import pytest

from zq.errors import ProtocolViolation, SessionUnknown
from zq.protocol import frames as f
from zq.protocol.session import TRANSITIONS, State, next_state

READY_OPS = [f.HEARTBEAT, f.PUBLISH, f.CREDIT, f.CANCEL, f.ACK, f.NACK, f.RELEASE, f.EXTEND,
             f.START, f.STATS, f.MANAGE, f.LOCATE, f.FORWARD]
BROKER_TO_CLIENT = [f.WELCOME, f.CONFIRM, f.DELIVER, f.STATS_REPLY, f.MANAGE_REPLY, f.ERROR,
                    f.LOCATION, f.CATALOG]
names = f.NAMES.get


def test_hello_opens_a_session() -> None:
    assert next_state(State.NEW, f.HELLO) is State.READY


def test_bye_closes_from_new_and_ready() -> None:
    assert next_state(State.NEW, f.BYE) is State.CLOSED
    assert next_state(State.READY, f.BYE) is State.CLOSED


@pytest.mark.parametrize("op", READY_OPS, ids=names)
def test_work_frames_keep_a_ready_session_ready(op: int) -> None:
    assert next_state(State.READY, op) is State.READY


@pytest.mark.parametrize("op", READY_OPS, ids=names)
def test_work_frames_before_hello_are_session_unknown(op: int) -> None:
    with pytest.raises(SessionUnknown) as info:
        next_state(State.NEW, op)
    assert info.value.op == op
    assert info.value.retriable


@pytest.mark.parametrize("state", [State.NEW, State.READY])
@pytest.mark.parametrize("op", BROKER_TO_CLIENT, ids=names)
def test_broker_frames_from_a_client_are_violations(state: State, op: int) -> None:
    with pytest.raises(ProtocolViolation) as info:
        next_state(state, op)
    assert info.value.op == op


def test_hello_twice_is_a_violation() -> None:
    state = next_state(State.NEW, f.HELLO)
    with pytest.raises(ProtocolViolation, match="HELLO"):
        next_state(state, f.HELLO)


@pytest.mark.parametrize("op", sorted(f.NAMES), ids=names)
def test_closed_accepts_nothing(op: int) -> None:
    with pytest.raises(ProtocolViolation):
        next_state(State.CLOSED, op)


def test_undefined_opcode_is_a_violation_not_a_crash() -> None:
    with pytest.raises(ProtocolViolation, match="0x55"):
        next_state(State.READY, 0x55)


def test_table_is_exactly_the_spec() -> None:
    expected = {(State.NEW, f.HELLO): State.READY, (State.NEW, f.BYE): State.CLOSED,
                (State.READY, f.BYE): State.CLOSED}
    expected.update({(State.READY, op): State.READY for op in READY_OPS})
    assert expected == TRANSITIONS


def test_every_opcode_is_classified() -> None:
    """Each opcode is a client frame (in the table) or a broker frame (never accepted)."""
    client_ops = {op for (_, op) in TRANSITIONS}
    assert client_ops | set(BROKER_TO_CLIENT) == set(f.NAMES)
    assert not client_ops & set(BROKER_TO_CLIENT)
