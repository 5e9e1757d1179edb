"""The hostile-frame generators (tests/fuzz/strategies.py) against the decoder, in process.

Every generated frame, of every flavour and command, decodes to a frame or raises a
``ZqError``, which the broker turns into one ERROR frame: never another exception,
which would end the broker's loop. Valid frames decode to the command they were built
from. An almost-valid frame fails to decode, unless its mutation breaks a rule that is
checked after decoding (``semantic``), in which case it decodes: so the tags that the
live fuzz run (tests/system/test_fuzz.py) relies on are true.

The decoder runs on the default limits of zq/protocol/limits.py.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from zq.errors import MalformedFrame, ZqError
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.limits import DEFAULT_LIMITS

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_or_error(parts: list[bytes]) -> f.Frame | ZqError:
    """What the broker's decoder makes of ``parts``; any other exception propagates."""
    try:
        return codec.decode(parts, DEFAULT_LIMITS)
    except ZqError as exc:
        return exc


@FUZZ
@given(fz.hostile())
def test_every_hostile_frame_decodes_or_raises_a_zq_error(parts: list[bytes]) -> None:
    result = decode_or_error(parts)
    assert isinstance(result, ZqError) or type(result) in f.OPCODES


@FUZZ
@given(st.sampled_from(fz.CLIENT_COMMANDS), st.data())
def test_valid_frames_decode_to_their_command(cmd: int, data: st.DataObject) -> None:
    parts = data.draw(fz.valid(cmd))
    frame = codec.decode(parts, DEFAULT_LIMITS)
    assert f.OPCODES[type(frame)] == cmd


@FUZZ
@given(st.sampled_from(fz.CLIENT_COMMANDS), st.randoms(use_true_random=False))
def test_an_almost_valid_frame_fails_to_decode_unless_its_fault_is_semantic(
        cmd: int, rng: random.Random) -> None:
    frame = fz.make_almost(rng, cmd)
    result = decode_or_error(frame.parts)
    if frame.semantic:
        assert not isinstance(result, ZqError), f"{frame.describe()}: {result}"
    else:
        assert isinstance(result, ZqError), (
            f"{frame.describe()} decoded to {result!r}: a receiver would not refuse it")


@FUZZ
@given(fz.almost_valid(f.PUBLISH, heavy=False))
def test_almost_valid_strategy_gives_parts(parts: list[bytes]) -> None:
    assert parts
    assert all(isinstance(p, bytes) for p in parts)
    decode_or_error(parts)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_garbage_is_refused_when_tagged_so(rng: random.Random) -> None:
    frame = fz.make_garbage(rng)
    result = decode_or_error(frame.parts)
    assert isinstance(result, ZqError) == frame.refused, frame.describe()
    if frame.how == "random-parts":
        assert isinstance(result, MalformedFrame), frame.describe()


def test_a_seeded_plan_is_reproducible_and_places_each_heavy_mutation() -> None:
    one = fz.plan(7, 300, max_frame=1 << 20, oversize_at=(1 << 20, 1 << 21), heavy_each=2)
    two = fz.plan(7, 300, max_frame=1 << 20, oversize_at=(1 << 20, 1 << 21), heavy_each=2)
    assert [x.parts for x in one] == [x.parts for x in two]
    heavy = Counter(x.how.split(":", 1)[0] for x in one if x.how.split(":", 1)[0] in fz.HEAVY)
    assert set(heavy) == fz.HEAVY  # two may land on the same place: at most 2 or 4 of each
    assert all(n <= (4 if name == "oversize-part" else 2) for name, n in heavy.items())
    sizes = {len(x.parts[-1]) for x in one if x.how.startswith("oversize-part")}
    assert sizes <= {(1 << 20) + fz.OVER_MAX_FRAME, (1 << 21) + fz.OVER_MAX_FRAME}


def test_a_seeded_plan_covers_every_command_and_mutation() -> None:
    """Enough draws reach every client command in every flavour and every mutation,
    and none of them makes the decoder raise anything but a ZqError."""
    frames = fz.plan(20261205, 20_000, max_frame=DEFAULT_LIMITS.max_frame)
    seen = Counter((x.flavour, x.op) for x in frames)
    for cmd in fz.CLIENT_COMMANDS:
        assert seen["valid", cmd], f.NAMES[cmd]
        assert seen["almost", cmd], f.NAMES[cmd]
    assert seen["garbage", 0]
    names = {x.how.split(":", 1)[0] for x in frames if x.flavour == "almost"}
    assert names == {m.name for m in fz.MUTATIONS}
    for x in frames:
        decode_or_error(x.parts)


@pytest.mark.parametrize("ext", [b"\xc7\x00\x05", b"\xc7\x00\x7f"], ids=["type-5", "type-127"])
def test_a_zero_length_extension_type_in_message_headers_is_refused(ext: bytes) -> None:
    """PROTOCOL.md section 4.1: "msgpack extension types MUST NOT be used; a receiver
    rejects them". ``max_ext_len=0`` lets an ext8 of length 0 through."""
    parts = [codec.command(f.PUBLISH), b"fz", b"\x92\x01\x91\x81\xa1k" + ext, b"body"]
    assert isinstance(decode_or_error(parts), MalformedFrame)
