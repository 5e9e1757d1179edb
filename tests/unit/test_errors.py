"""Error codes are part of the wire contract: unique, stable, and reversible."""

from __future__ import annotations

import pytest

from zq import errors
from zq.errors import InternalError, ZqError, all_error_classes, error_from_code

# The wire contract. Changing a line here is a protocol change.
CODES = {
    1: "INTERNAL",
    2: "MALFORMED_FRAME",
    3: "UNSUPPORTED_VERSION",
    4: "UNKNOWN_OPCODE",
    5: "PROTOCOL_VIOLATION",
    6: "FRAME_TOO_LARGE",
    7: "SESSION_UNKNOWN",
    10: "INVALID_CREDIT",
    11: "UNKNOWN_DELIVERY",
    12: "STALE_DELIVERY",
    13: "INVALID_QUEUE_NAME",
    14: "QUEUE_FULL",
    15: "UNKNOWN_QUEUE",
    16: "INVALID_ARGUMENT",
    17: "FORBIDDEN",
    18: "TOO_MANY_SESSIONS",
    20: "SHUTTING_DOWN",
    21: "UNAVAILABLE",
    22: "MOVED",
    23: "STALE_CONFIG",
    24: "QUEUE_CONFLICT",
    25: "CLUSTER_MISMATCH",
    26: "UNROUTABLE",
    30: "STORAGE_FULL",
    31: "STORAGE_ERROR",
    40: "CONNECTION_LOST",
    41: "CLIENT_CLOSED",
    42: "TIMEOUT",
    43: "ALREADY_SETTLED",
}
RETRIABLE = {"SESSION_UNKNOWN", "QUEUE_FULL", "TOO_MANY_SESSIONS", "SHUTTING_DOWN",
             "STORAGE_FULL", "STORAGE_ERROR", "CONNECTION_LOST", "TIMEOUT", "UNAVAILABLE",
             "MOVED", "STALE_CONFIG"}


def test_codes_are_pinned() -> None:
    assert {c.code: c.name for c in all_error_classes()} == CODES


def test_codes_and_names_are_unique() -> None:
    classes = all_error_classes()
    assert len({c.code for c in classes}) == len(classes)
    assert len({c.name for c in classes}) == len(classes)


def test_all_error_classes_is_ordered_and_complete() -> None:
    classes = all_error_classes()
    assert [c.code for c in classes] == sorted(CODES)
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, ZqError) and obj is not ZqError}
    assert set(classes) == defined


def test_retriable_flags() -> None:
    assert {c.name for c in all_error_classes() if c.retriable} == RETRIABLE


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.name)
def test_error_from_code_round_trip(cls: type[ZqError]) -> None:
    exc = error_from_code(cls.code, "text", ref=[1, 2])
    assert type(exc) is cls
    assert exc.code == cls.code
    assert exc.message == "text"
    assert exc.ref == [1, 2]
    assert isinstance(exc, ZqError)


@pytest.mark.parametrize("code", [0, 8, 99, 2**31, -1])
def test_unknown_code_is_internal(code: int) -> None:
    exc = error_from_code(code, "what")
    assert type(exc) is InternalError
    assert exc.code == 1
    assert exc.code_seen == code
    assert not exc.retriable


def test_attrs_become_attributes() -> None:
    exc = errors.InvalidCredit("too much", credit=5, limit=3, ref="q")
    assert (exc.credit, exc.limit, exc.ref) == (5, 3, "q")
    assert exc.attrs == {"credit": 5, "limit": 3, "ref": "q"}


def test_message_and_str() -> None:
    exc = errors.StaleDelivery("old attempt")
    assert str(exc) == "STALE_DELIVERY: old attempt"
    assert exc.args == ("old attempt",)
    assert str(errors.ShuttingDown()) == "SHUTTING_DOWN: SHUTTING_DOWN"


def test_every_error_is_catchable_as_zq_error() -> None:
    for cls in all_error_classes():
        with pytest.raises(ZqError):
            raise cls("x")
