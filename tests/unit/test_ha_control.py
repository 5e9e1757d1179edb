"""Replication control messages (zq.ha.wire.control / decode_control): every op comes
back as it went, and anything else is refused with MalformedFrame, never another error."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zq.errors import MalformedFrame
from zq.ha.wire import CONTROL, MAGIC, OPS, control, decode_control

# One valid value of each field type an op may carry (bool before int: bool is an int).
SAMPLE: dict[type, Any] = {str: "node-b", int: 7, bool: True}

# A wrong value for each field type: the decoder checks exact types.
WRONG: dict[type, Any] = {str: 7, int: "7", bool: 1}


def fields_of(op: str) -> dict[str, Any]:
    return {name: SAMPLE[kind] for name, kind in OPS[op].items()}


def header(h: Any) -> bytes:
    return bytes(msgpack.packb(h, use_bin_type=True))


def test_ops_cover_the_protocol() -> None:
    assert set(OPS) == {"follow", "ack", "stale", "ping", "refused", "chunk"}


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_comes_back_as_it_went(op: str) -> None:
    fields = fields_of(op)
    data = b"\x00backup part\xff" if op == "chunk" else None
    parts = control(op, data, **fields)
    assert parts[0] == CONTROL
    assert len(parts) == (3 if op == "chunk" else 2)
    got = decode_control(parts)
    want = {"op": op, **fields}
    if data is not None:
        want["data"] = data
    assert got == want
    for name, kind in OPS[op].items():
        assert type(got[name]) is kind


def test_a_chunk_keeps_its_last_flag_and_empty_data() -> None:
    got = decode_control(control("chunk", b"", term=2, seq=9, at=0, last=False))
    assert (got["last"], got["data"], got["seq"], got["at"]) == (False, b"", 9, 0)


def test_extra_fields_are_kept() -> None:
    # A newer peer may add fields; the checked ones are still checked.
    got = decode_control(control("ack", term=1, seq=2, note="x"))
    assert got == {"op": "ack", "term": 1, "seq": 2, "note": "x"}


def refused(parts: list[bytes], match: str) -> None:
    with pytest.raises(MalformedFrame, match=match):
        decode_control(parts)


def test_wrong_magic_is_refused() -> None:
    good = control("ping", term=1)
    refused([MAGIC, good[1]], "not a replication control message")
    refused([b"ZQRX", good[1]], "not a replication control message")
    refused([b"", good[1]], "not a replication control message")


@pytest.mark.parametrize("n", [0, 1, 4, 5])
def test_wrong_number_of_parts_is_refused(n: int) -> None:
    parts = [CONTROL, header({"op": "ping", "term": 1}), b"", b"", b""][:n]
    refused(parts, "not a replication control message")


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x81", header(1) + b"\x00"])
def test_a_header_that_is_not_msgpack_is_refused(raw: bytes) -> None:
    refused([CONTROL, raw], "not msgpack")


@pytest.mark.parametrize("h", [1, "ping", ["ping", 1], None, b"ping", True])
def test_a_header_that_is_not_a_map_is_refused(h: Any) -> None:
    refused([CONTROL, header(h)], "not a map")


@pytest.mark.parametrize("h", [{}, {"op": "pong", "term": 1}, {"op": None},
                               {"op": b"ping", "term": 1}, {"op": 1}, {"term": 1}])
def test_an_unknown_op_is_refused(h: dict[str, Any]) -> None:
    refused([CONTROL, header(h)], "unknown control message")


@pytest.mark.parametrize(("op", "name"),
                         [(op, name) for op in sorted(OPS) for name in OPS[op]])
def test_a_missing_field_is_refused(op: str, name: str) -> None:
    fields = fields_of(op)
    del fields[name]
    data = b"d" if op == "chunk" else None
    refused(control(op, data, **fields), f"{name} must be {OPS[op][name].__name__}")


@pytest.mark.parametrize(("op", "name"),
                         [(op, name) for op in sorted(OPS) for name in OPS[op]])
def test_a_field_of_the_wrong_type_is_refused(op: str, name: str) -> None:
    kind = OPS[op][name]
    fields = {**fields_of(op), name: WRONG[kind]}
    data = b"d" if op == "chunk" else None
    refused(control(op, data, **fields), f"{op!r}: {name} must be {kind.__name__}")


@pytest.mark.parametrize(("field", "value"), [
    ("term", "1"), ("term", True), ("term", 1.0), ("term", None),
    ("seq", [1]), ("last", 1), ("last", 0), ("last", "yes"), ("last", None)])
def test_named_type_mistakes_are_refused(field: str, value: Any) -> None:
    fields: dict[str, Any] = {"term": 1, "seq": 1, "at": 0, "last": True, field: value}
    refused(control("chunk", b"d", **fields), f"{field} must be")


@pytest.mark.parametrize("op", sorted(set(OPS) - {"chunk"}))
def test_data_on_an_op_other_than_chunk_is_refused(op: str) -> None:
    refused(control(op, b"data", **fields_of(op)), "only a chunk carries data")
    refused(control(op, b"", **fields_of(op)), "only a chunk carries data")


def test_a_chunk_without_data_is_refused() -> None:
    refused(control("chunk", **fields_of("chunk")), "only a chunk carries data")


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.sampled_from(["op", "term", "seq", "last", "node", "why"]),
                      kids, max_size=6),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.binary(max_size=40), max_size=4),
       magic=st.booleans())
def test_random_bytes_are_a_control_message_or_malformed(parts: list[bytes],
                                                         magic: bool) -> None:
    if magic and parts:
        parts[0] = CONTROL
    try:
        got = decode_control(parts)
    except MalformedFrame:
        return
    assert parts[0] == CONTROL
    assert got["op"] in OPS


@settings(max_examples=300, deadline=None)
@given(h=msgpack_values, op=st.sampled_from([*OPS, "nope"]), data=st.none() | st.binary())
def test_random_headers_are_a_control_message_or_malformed(h: Any, op: str,
                                                           data: bytes | None) -> None:
    if isinstance(h, dict) and "op" not in h:
        h["op"] = op
    parts = [CONTROL, header(h)] + ([] if data is None else [data])
    try:
        got = decode_control(parts)
    except MalformedFrame:
        return
    assert got["op"] in OPS  # accepted: then it passed every check
    for name, kind in OPS[got["op"]].items():
        assert type(got[name]) is kind
    assert ("data" in got) == (got["op"] == "chunk")


def test_a_standby_refuses_a_hello_naming_its_primary() -> None:
    """PROTOCOL.md 18: ERROR UNAVAILABLE, op HELLO, ref nil, info endpoint and node."""
    from zq.ha.refuse import refusal
    from zq.protocol import codec
    from zq.protocol import frames as f

    frame = codec.decode(refusal("n0", "tcp://127.0.0.1:5555"))
    assert isinstance(frame, f.Error)
    assert (frame.name, frame.op, frame.ref) == ("UNAVAILABLE", f.HELLO, None)
    assert frame.info == {"endpoint": "tcp://127.0.0.1:5555", "node": "n0"}
