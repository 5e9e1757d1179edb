"""The codec: round trips, bounded decoding, and one error class per kind of fault."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zq.errors import (
    FrameTooLarge,
    InvalidArgument,
    InvalidQueueName,
    MalformedFrame,
    UnknownOpcode,
    UnsupportedVersion,
    ZqError,
)
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.codec import Limits, decode, encode

PROPS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

U63 = 2**63 - 1


def cmd(op: int) -> bytes:
    return codec.command(op)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# ------------------------------------------------------------------ strategies

queues = st.text(min_size=1, max_size=63)  # at most 4 octets per char: <= 252 octets
ids = st.integers(0, U63)
bodies = st.lists(st.binary(max_size=64), min_size=1, max_size=20)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=10,
)
header_maps = st.dictionaries(st.text(max_size=10), values, max_size=5)


@st.composite
def per_message_headers(draw: st.DrawFn, n: int) -> list[f.Headers | None]:
    if draw(st.booleans()):
        return []
    return draw(st.lists(st.none() | header_maps, min_size=n, max_size=n))


MS_MAX = 100 * 365 * 86_400_000  # the largest duration an option may name


@st.composite
def options(draw: st.DrawFn, n: int) -> f.Options | None:
    if draw(st.booleans()):
        return None
    key = st.text(min_size=1, max_size=60)  # at most 4 octets per char: <= 240 octets

    def maybe(s: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | s)

    return f.Options(maybe(st.integers(0, 9)), maybe(st.integers(0, MS_MAX)),
                     maybe(st.integers(0, 1 << 62)), maybe(st.integers(1, MS_MAX)),
                     maybe(st.integers(1, MS_MAX)), maybe(st.integers(1, 1_000_000)),
                     maybe(key), maybe(key) if n == 1 else None)


@st.composite
def publishes(draw: st.DrawFn) -> f.Publish:
    b = draw(bodies)
    return f.Publish(draw(queues), draw(ids), b, draw(per_message_headers(len(b))),
                     draw(options(len(b))))


@st.composite
def delivers(draw: st.DrawFn) -> f.Deliver:
    b = draw(bodies)
    n = len(b)
    return f.Deliver(draw(queues), draw(st.lists(ids, min_size=n, max_size=n)),
                     draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n)), b,
                     draw(per_message_headers(n)))


@st.composite
def id_pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    n = draw(st.integers(1, 50))
    return (draw(st.lists(ids, min_size=n, max_size=n)),
            draw(st.lists(st.integers(0, U63), min_size=n, max_size=n)))


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("frame", [
    f.Hello(),
    f.Hello("n", 250),
    f.Welcome("b", 1, 1, 1, 1, 1),
    f.Heartbeat(),
    f.Bye(),
    f.Publish("q", 0, [b""]),
    f.Publish("q", 1, [b"a", b"b"], [{"a": 1}, None]),
    f.Publish("ünïcødé/queue", U63, [b"\x00" * 10], [{"nested": {"l": [1, "x", b"y"]}}]),
    f.Publish("q", 2, [b"a"], [], f.Options(priority=9, delay_ms=0, eta_ms=1, ttl_ms=1,
                                            time_limit_ms=1, max_attempts=1, tenant="t",
                                            dedup_id="d")),
    f.Publish("q", 3, [b"a", b"b"], [], f.Options(priority=0, tenant="ü" * 127)),
    f.Confirm([(1, 1, 1)]),
    f.Confirm([(1, 1, 5), (2, 6, 1), (3, 7, 10_000)]),
    f.Credit("q", 1),
    f.Credit("q", -5),  # carried as is: the range is the credit window's business
    f.Cancel("q"),
    f.Deliver("q", [1], [1], [b"a"]),
    f.Deliver("q", [1, 2], [1, 2], [b"a", b"b"], [None, {"h": True}]),
    f.Ack([1], [1]),
    f.Nack([1, 2], [1, 1]),
    f.Nack([1], [3], requeue=False, delay_ms=0, reason="poison"),
    f.Nack([1], [3], requeue=True, delay_ms=5000, reason=""),
    f.Release([1, 2, 3]),
    f.Extend([1, 2], [1, 3], 30_000),
    f.Manage(1, "declare", {"queue": "q", "settings": {"max_length": 10}}),
    f.Manage(U63, "sync", {}),
    f.ManageReply(1, {"queue": "q", "created": True}),
    f.ManageReply(2, {}),
    f.Stats(0),
    f.StatsReply(1, {}),
    f.Error(2, "MALFORMED_FRAME", "bad"),
    f.Error(12, "STALE_DELIVERY", "old", f.ACK, [1, 2]),
    f.Error(20, "SHUTTING_DOWN", "bye", f.PUBLISH, 17),
    f.Error(10, "INVALID_CREDIT", "no", f.CREDIT, "q"),
], ids=repr)
def test_round_trip(frame: f.Frame) -> None:
    assert decode(encode(frame)) == frame


def test_publish_and_deliver_layout() -> None:
    parts = encode(f.Publish("jobs", 3, [b"one", b"two"], [{"k": 1}, None]))
    assert parts[0] == b"ZQ\x01\x10"
    assert parts[1] == b"jobs"
    assert msgpack.unpackb(parts[2]) == [3, [{"k": 1}, None]]
    assert parts[3:] == [b"one", b"two"]
    parts = encode(f.Deliver("jobs", [5], [2], [b"x"]))
    assert parts[:2] == [b"ZQ\x01\x22", b"jobs"]
    assert msgpack.unpackb(parts[2]) == [[5], [2], []]
    assert parts[3:] == [b"x"]


def test_publish_options_travel_as_a_third_header_element() -> None:
    opts = f.Options(priority=3, tenant="acme")
    parts = encode(f.Publish("jobs", 4, [b"x"], [], opts))
    assert msgpack.unpackb(parts[2]) == [4, [], {"priority": 3, "tenant": "acme"}]
    assert decode(parts) == f.Publish("jobs", 4, [b"x"], [], opts)
    # without options the header keeps its two elements; a nil third element is no options
    assert msgpack.unpackb(encode(f.Publish("jobs", 4, [b"x"]))[2]) == [4, []]
    assert decode(_publish([4, [], None])) == f.Publish("q", 4, [b"b"])


@pytest.mark.parametrize(("opts", "n_bodies"), [
    ("not a map", 1),
    ([1], 1),
    ({"colour": "red"}, 1),  # unknown key
    ({"priority": 10}, 1),
    ({"priority": -1}, 1),
    ({"priority": True}, 1),
    ({"priority": 1.0}, 1),
    ({"delay_ms": -1}, 1),
    ({"delay_ms": 100 * 365 * 86_400_000 + 1}, 1),
    ({"eta_ms": "soon"}, 1),
    ({"ttl_ms": 0}, 1),
    ({"time_limit_ms": 0}, 1),
    ({"max_attempts": 0}, 1),
    ({"max_attempts": 1_000_001}, 1),
    ({"tenant": ""}, 1),
    ({"tenant": 5}, 1),
    ({"tenant": "x" * 256}, 1),
    ({"dedup_id": b"bytes"}, 1),
    ({"dedup_id": "d"}, 2),  # a dedup id names one message
], ids=repr)
def test_bad_publish_option_is_invalid_argument_naming_the_seq(opts: Any,
                                                               n_bodies: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode(_publish([77, [], opts], n_bodies=n_bodies))
    assert info.value.code == 16
    assert info.value.attrs["op"] == f.PUBLISH
    assert info.value.attrs["ref"] == 77


@pytest.mark.parametrize(("opts", "expected"), [
    ({"priority": 9, "max_attempts": 1_000_000}, f.Options(priority=9, max_attempts=1_000_000)),
    ({"priority": 0, "delay_ms": 0, "eta_ms": 0}, f.Options(priority=0, delay_ms=0, eta_ms=0)),
    ({"tenant": "x" * 255, "dedup_id": "é" * 127},
     f.Options(tenant="x" * 255, dedup_id="é" * 127)),
    ({"ttl_ms": None}, f.Options()),  # nil is absent
], ids=repr)
def test_publish_option_bounds_are_inclusive(opts: dict[str, Any], expected: f.Options) -> None:
    frame = decode(_publish([1, [], opts]))
    assert isinstance(frame, f.Publish)
    assert frame.opts == expected


def test_hot_path_encoders_match_encode() -> None:
    frame = f.Deliver("q", [1, 2], [1, 1], [b"a", b"b"], [None, {"x": 1}])
    assert codec.encode_deliver(b"q", [1, 2], [1, 1], [None, {"x": 1}],
                                [b"a", b"b"]) == encode(frame)
    assert decode(codec.encode_confirm([[1, 2, 3]])) == f.Confirm([(1, 2, 3)])


def test_bodies_are_passed_through_untouched() -> None:
    body = bytes(range(256)) * 4
    frame = decode(encode(f.Publish("q", 1, [body])))
    assert isinstance(frame, f.Publish)
    assert frame.bodies[0] == body


def test_encode_refuses_non_frames() -> None:
    with pytest.raises(TypeError):
        encode("HELLO")  # type: ignore[arg-type]


@PROPS
@given(publishes())
def test_publish_round_trip_property(frame: f.Publish) -> None:
    assert decode(encode(frame)) == frame


@PROPS
@given(delivers())
def test_deliver_round_trip_property(frame: f.Deliver) -> None:
    assert decode(encode(frame)) == frame


@PROPS
@given(id_pairs())
def test_ack_round_trip_property(pair: tuple[list[int], list[int]]) -> None:
    frame = f.Ack(*pair)
    assert decode(encode(frame)) == frame


@PROPS
@given(id_pairs(), st.booleans(), st.integers(0, U63), st.text(max_size=50))
def test_nack_round_trip_property(pair: tuple[list[int], list[int]], requeue: bool,
                                  delay_ms: int, reason: str) -> None:
    frame = f.Nack(pair[0], pair[1], requeue, delay_ms, reason)
    assert decode(encode(frame)) == frame


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize("parts", [
    [],
    [b""],
    [b"ZQ\x01"],
    [b"ZQ\x01\x03\x00"],
    [b"XQ\x01\x03", pack(None)],
    [b"zq\x01\x03", pack(None)],
], ids=repr)
def test_not_a_zq_frame(parts: list[bytes]) -> None:
    with pytest.raises(MalformedFrame):
        decode(parts)


def test_wrong_version() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        decode([b"ZQ\x02\x03", pack(None)])
    assert info.value.op == f.HEARTBEAT


def test_version_is_checked_before_opcode() -> None:
    with pytest.raises(UnsupportedVersion):
        decode([b"ZQ\x00\x55", pack(None)])


@pytest.mark.parametrize("op", [0x00, 0x05, 0x12, 0x28, 0x32, 0x44, 0x52, 0x7E, 0x80, 0xFF])
def test_unknown_opcode(op: int) -> None:
    with pytest.raises(UnknownOpcode) as info:
        decode([b"ZQ\x01" + bytes((op,)), pack(None)])
    assert info.value.op == op


@pytest.mark.parametrize("header", [
    b"\xc1",  # never used in msgpack
    b"\x92\x01",  # array of 2 with one element
    pack([1]) + b"\x00",  # trailing data
    b"\xd4\x01\x00",  # an extension type
    pack({1: "non-string key"}),
], ids=repr)
def test_undecodable_header(header: bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        decode([cmd(f.STATS), header])
    assert info.value.op == f.STATS


def _publish(header: Any, n_bodies: int = 1, queue: bytes = b"q") -> list[bytes]:
    return [cmd(f.PUBLISH), queue, pack(header), *[b"b"] * n_bodies]


def _deliver(header: Any, n_bodies: int = 1) -> list[bytes]:
    return [cmd(f.DELIVER), b"q", pack(header), *[b"b"] * n_bodies]


@pytest.mark.parametrize("parts", [
    # wrong part counts
    [cmd(f.PUBLISH), b"q", pack([1, []])],  # no body
    [cmd(f.DELIVER), b"q", pack([[1], [1], []])],
    [cmd(f.ACK), pack([[1], [1]]), b"extra"],
    [cmd(f.HEARTBEAT)],
    # header shape
    _publish({"seq": 1}),
    _publish([1]),
    _publish([1, [], {}, "extra"]),  # options are the last element: four is too many
    [cmd(f.CREDIT), pack({"queue": "q", "n": 1})],
    [cmd(f.HELLO), pack(["name", 0])],
    [cmd(f.HEARTBEAT), pack({})],
    [cmd(f.CONFIRM), pack([])],
    [cmd(f.CONFIRM), pack([[1, 1]])],
    [cmd(f.WELCOME), pack({"broker": "b", "heartbeat_ms": 1000})],  # missing keys
    # field types
    _publish(["1", []]),  # seq as str
    _publish([True, []]),  # seq as bool
    _publish([-1, []]),
    _publish([2**63, []]),
    _publish([1.0, []]),
    _publish([1, None]),  # headers not an array
    _publish([1, ["not a map"]]),
    [cmd(f.ACK), pack([[-1], [1]])],  # negative id
    [cmd(f.ACK), pack([["1"], [1]])],  # id as str
    [cmd(f.ACK), pack([[True], [1]])],  # id as bool
    [cmd(f.ACK), pack([[], []])],  # no ids
    [cmd(f.ACK), pack([1, 1])],  # ids not an array
    [cmd(f.RELEASE), pack([[1, None]])],
    [cmd(f.NACK), pack([[1], [1], 1, 0, ""])],  # requeue not bool
    [cmd(f.NACK), pack([[1], [1], None, 0, ""])],
    [cmd(f.NACK), pack([[1], [1], True, -1, ""])],  # negative delay
    [cmd(f.NACK), pack([[1], [1], True, 0, b"bytes"])],  # reason not str
    [cmd(f.CREDIT), pack(["q", "10"])],
    [cmd(f.CREDIT), pack(["q", 1.5])],
    [cmd(f.CREDIT), pack([5, 1])],  # queue not a string
    [cmd(f.HELLO), pack({"name": 5})],
    [cmd(f.HELLO), pack({"heartbeat_ms": -1})],
    [cmd(f.WELCOME), pack({"broker": "b", "heartbeat_ms": 0, "liveness": 1, "max_batch": 1,
                           "max_credit": 1, "max_frame": 1})],
    [cmd(f.BYE), pack({"reason": None})],
    [cmd(f.STATS), pack(["1"])],
    [cmd(f.STATS_REPLY), pack([1, []])],
    [cmd(f.ERROR), pack({"code": "2"})],
    # counts that do not match
    _publish([1, [None]], n_bodies=2),  # one header entry for two bodies
    _publish([1, [None, None, None]], n_bodies=2),
    _deliver([[1, 2], [1, 1], []], n_bodies=1),  # two ids, one body
    _deliver([[1], [1, 1], []], n_bodies=1),
    _deliver([[1], [1], [None, None]], n_bodies=1),
    [cmd(f.ACK), pack([[1, 2], [1]])],  # ids and attempts differ
    [cmd(f.NACK), pack([[1], [1, 2], True, 0, ""])],
    [cmd(f.EXTEND), pack([[1, 2], [1], 1000])],
    # EXTEND, MANAGE, MANAGE_REPLY
    [cmd(f.EXTEND), pack([[1], [1]])],
    [cmd(f.EXTEND), pack([[1], [1], 0])],  # ms must be >= 1
    [cmd(f.EXTEND), pack([[1], [1], "1000"])],
    [cmd(f.MANAGE), pack([1, "declare"])],
    [cmd(f.MANAGE), pack([1, "", {}])],  # an op is named
    [cmd(f.MANAGE), pack([1, 5, {}])],
    [cmd(f.MANAGE), pack([1, "sync", None])],  # args is a map
    [cmd(f.MANAGE), pack([-1, "sync", {}])],
    [cmd(f.MANAGE_REPLY), pack([1, []])],
], ids=lambda p: repr(p)[:80])
def test_malformed(parts: list[bytes]) -> None:
    op = parts[0][3]
    with pytest.raises(MalformedFrame) as info:
        decode(parts)
    assert info.value.op == op


@pytest.mark.parametrize("queue", [
    b"",
    b"x" * 256,
    b"\xff\xfe",
    "é".encode()[:1],  # a cut UTF-8 sequence
], ids=repr)
def test_bad_queue_name_in_frame_1(queue: bytes) -> None:
    """Not text: the frame is broken. Empty or too long: the name breaks the rule,
    INVALID_QUEUE_NAME as from the SDK, naming the PUBLISH's seq; not fatal."""
    for parts in (_publish([1, []], queue=queue),
                  [cmd(f.DELIVER), queue, pack([[1], [1], []]), b"b"]):
        try:
            queue.decode()
        except UnicodeDecodeError:
            with pytest.raises(MalformedFrame):
                decode(parts)
            continue
        with pytest.raises(InvalidQueueName) as info:
            decode(parts)
        if parts[0] == cmd(f.PUBLISH):
            assert info.value.ref == 1


def test_queue_name_limits_are_in_octets() -> None:
    ok = "é" * 127  # 254 octets
    assert decode(encode(f.Publish(ok, 1, [b"x"]))) == f.Publish(ok, 1, [b"x"])
    with pytest.raises(InvalidQueueName):
        decode(encode(f.Publish("é" * 128, 1, [b"x"])))  # 256 octets


@pytest.mark.parametrize("queue", ["", "x" * 256])
def test_bad_queue_name_in_header(queue: str) -> None:
    for frame in (f.Credit(queue, 1), f.Cancel(queue)):
        with pytest.raises(InvalidQueueName):
            decode(encode(frame))


def test_too_many_bodies() -> None:
    small = Limits(max_batch=2)
    assert decode(encode(f.Publish("q", 1, [b"a", b"b"])), small)
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Publish("q", 1, [b"a", b"b", b"c"])), small)
    assert info.value.op == f.PUBLISH
    assert info.value.limit == 2
    with pytest.raises(FrameTooLarge):
        decode(encode(f.Deliver("q", [1, 2, 3], [1, 1, 1], [b"a", b"b", b"c"])), small)


@pytest.mark.parametrize("frame", [
    f.Ack([1, 2, 3], [1, 1, 1]),
    f.Nack([1, 2, 3], [1, 1, 1]),
    f.Release([1, 2, 3]),
], ids=repr)
def test_too_many_ids(frame: f.Frame) -> None:
    small = Limits(max_batch=2)
    with pytest.raises(FrameTooLarge):
        decode(encode(frame), small)


def test_too_many_ids_beyond_16_is_frame_too_large() -> None:
    small = Limits(max_batch=100)
    with pytest.raises(FrameTooLarge):
        decode(encode(f.Ack(list(range(101)), [1] * 101)), small)


def test_header_over_max_header() -> None:
    small = Limits(max_header=256)
    big_reason = "x" * 300
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Bye(big_reason)), small)
    assert info.value.op == f.BYE
    assert info.value.limit == 256
    assert decode(encode(f.Bye("x" * 200)), small) == f.Bye("x" * 200)
    with pytest.raises(FrameTooLarge):
        decode(encode(f.Publish("q", 1, [b"b"], [{"k": big_reason}])), small)


def test_default_max_header_is_4_mib() -> None:
    assert codec.DEFAULT_LIMITS.max_header == 4 * 1024 * 1024
    with pytest.raises(FrameTooLarge):
        decode([cmd(f.BYE), b"\x00" * (4 * 1024 * 1024 + 1)])


def test_total_over_max_frame() -> None:
    small = Limits(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Publish("q", 1, [b"x" * 600, b"y" * 600])), small)
    assert info.value.op == f.PUBLISH
    assert info.value.limit == 1024
    # each part alone is within the limit: it is the sum that counts
    assert decode(encode(f.Publish("q", 1, [b"x" * 400, b"y" * 400])), small)


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="too small"):
        Limits(max_frame=10)
    with pytest.raises(ValueError, match="too small"):
        Limits(max_batch=0)


# ------------------------------------------------------------------ fuzzing

FUZZ_LIMITS = Limits(max_frame=4096, max_header=1024, max_batch=8)
msgpack_objects = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.text(max_size=8) | st.binary(max_size=4), inner, max_size=4),
    max_leaves=20,
)
commands = st.one_of(
    st.sampled_from(sorted(f.NAMES)).map(codec.command),
    st.binary(min_size=4, max_size=4).map(lambda b: b"ZQ" + b[2:]),
    st.binary(max_size=6),
)
random_parts = st.one_of(
    st.lists(st.binary(max_size=64), max_size=6),
    st.tuples(commands, st.lists(st.binary(max_size=64), max_size=5)).map(
        lambda t: [t[0], *t[1]]),
    st.tuples(commands, msgpack_objects.map(pack), st.lists(st.binary(max_size=16),
                                                             max_size=3)).map(
        lambda t: [t[0], t[1], *t[2]]),
    st.tuples(commands, queues.map(str.encode) | st.binary(max_size=8),
              msgpack_objects.map(pack), st.lists(st.binary(max_size=16), max_size=10)).map(
        lambda t: [t[0], t[1], t[2], *t[3]]),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(random_parts, st.sampled_from([FUZZ_LIMITS, codec.DEFAULT_LIMITS]))
def test_decode_raises_only_zq_errors(parts: list[bytes], limits: Limits) -> None:
    error: ZqError | None = None
    try:
        frame = decode(parts, limits)
    except ZqError as exc:
        error = exc
    if error is not None:
        assert type(error) in (MalformedFrame, FrameTooLarge, UnknownOpcode,
                               UnsupportedVersion, InvalidArgument)
        if type(error) is InvalidArgument:  # only a PUBLISH option can be out of range
            assert parts[0][3] == f.PUBLISH
        # the opcode is attached once the command part could be read
        assert error.attrs.get("op") is None or error.attrs["op"] == parts[0][3]
        return
    assert type(frame) in f.OPCODES
    # whatever decodes must encode back to an equivalent frame
    assert decode(encode(frame), limits) == frame


# ------------------------------------------------------------ frame sizing


def test_split_by_count_bytes_and_header_bytes() -> None:
    lim = Limits(max_frame=10_000, max_header=1_000)
    assert codec.split(1, [10] * 7, None, 3, lim) == [3, 6, 7]
    assert codec.split(1, [4_000] * 5, None, 100, lim) == [2, 4, 5]
    assert codec.split(1, [1] * 4, [400] * 4, 100, lim) == [2, 4]
    assert codec.split(1, [], None, 10, lim) == []
    assert codec.split(1, [20_000, 1], None, 10, lim) == [1, 2]  # too big: alone


@given(st.lists(st.integers(0, 3_000), max_size=60),
       st.lists(st.integers(0, 300), min_size=60, max_size=60), st.integers(1, 20))
@PROPS
def test_split_frames_decode_within_limits(lens: list[int], hs: list[int], batch: int) -> None:
    lim = Limits(max_frame=8_192, max_header=1_024)
    headers: list[f.Headers | None] = [{"h": "v" * n} for n in hs[:len(lens)]]
    hsizes = [codec.header_size(h) for h in headers]
    ends = codec.split(1, lens, hsizes, batch, lim)
    start = 0
    for end in ends:
        assert 0 < end - start <= batch
        bodies = [b"x" * n for n in lens[start:end]]
        fits = all(codec.fits_alone(1, lens[i], hsizes[i], lim) for i in range(start, end))
        for frame in (f.Publish("q", U63, bodies, headers[start:end]),
                      f.Deliver("q", [U63] * len(bodies), [U63] * len(bodies), bodies,
                                headers[start:end])):
            if fits or end - start > 1:
                assert decode(encode(frame), lim) == frame
        start = end
    assert start == len(lens)


def test_publish_whose_message_could_not_be_delivered_alone_names_its_seq() -> None:
    lim = Limits(max_frame=2048)
    body = b"x" * (2048 - 40)  # the PUBLISH fits; a DELIVER of it would not
    assert sum(len(p) for p in encode(f.Publish("q", 9, [body], []))) <= 2048
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Publish("q", 9, [body], [])), lim)
    assert info.value.attrs["ref"] == 9
    assert not codec.fits_alone(1, len(body), 0, lim)


def test_oversized_publish_names_its_seq() -> None:
    lim = Limits(max_frame=2048, max_batch=4)
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Publish("q", 5, [b"x" * 3000], [])), lim)
    assert info.value.attrs["ref"] == 5
    with pytest.raises(FrameTooLarge) as info:
        decode(encode(f.Publish("q", 6, [b"x"] * 5, [])), lim)
    assert info.value.attrs["ref"] == 6
