"""A committed batch shipped to a standby (zq.ha.wire): every field comes back as it
went, bodies as raw parts, and anything malformed is MalformedFrame, never another
exception and never a partial batch."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zq.errors import MalformedFrame
from zq.ha.wire import MAGIC, decode, encode
from zq.persistence.base import Rewrite, WriteBatch

ids = st.integers(1, 1 << 40)
names = st.text(min_size=1, max_size=8)
blobs = st.none() | st.binary(max_size=16)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
headers = st.none() | st.dictionaries(st.text(max_size=4), st.integers(-(1 << 63), (1 << 63) - 1),
                                    max_size=2)  # (headers came from msgpack)


@st.composite
def inserts(draw: Any) -> tuple[int, str, list[Any] | None, list[bytes]]:
    bodies = draw(st.lists(st.binary(max_size=32), min_size=1, max_size=5))
    hs = draw(st.none() | st.lists(headers, min_size=len(bodies), max_size=len(bodies)))
    return (draw(ids), draw(names), hs, bodies)


@st.composite
def updates(draw: Any) -> Any:
    if draw(st.booleans()):
        return Rewrite(draw(ids), draw(names), draw(st.integers(0, 99)), draw(floats),
                       draw(headers), draw(blobs))
    n = draw(st.integers(1, 4))
    return (draw(st.lists(ids, min_size=n, max_size=n)),
            draw(st.lists(st.integers(0, 99), min_size=n, max_size=n)),
            draw(floats), draw(st.integers(0, 2)))


batches = st.builds(
    WriteBatch,
    inserts=st.lists(inserts(), max_size=4),
    placed=st.lists(st.tuples(ids, ids, floats, blobs), max_size=3),
    updates=st.lists(updates(), max_size=4),
    deletes=st.lists(ids, max_size=5),
    settings=st.lists(st.tuples(names, blobs), max_size=2),
    purges=st.lists(st.tuples(names, st.integers(0, 99), st.integers(0, 99)), max_size=2),
    dedups=st.lists(st.tuples(names, names, ids, floats), max_size=2),
    results=st.lists(st.tuples(ids, names, names, st.binary(max_size=8), floats),
                     max_size=2),
    schedules=st.lists(st.tuples(names, blobs), max_size=2),
    produced=st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.integers(0, 99),
                                ids, st.integers(1, 9)), max_size=2),
    trims=st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.integers(0, 1 << 63)),
                   max_size=2),
    created=floats)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1 << 40), st.integers(1, 1 << 40), batches)
def test_a_batch_comes_back_as_it_went(term: int, seq: int, b: WriteBatch) -> None:
    parts = encode(term, seq, b)
    bodies = [body for e in b.inserts for body in e[3]]
    assert parts[0] == MAGIC
    assert parts[2:] == bodies  # raw parts, in insert order
    got = decode(parts)
    assert (got.term, got.seq) == (term, seq)
    assert got.batch.position == (term, seq)  # stored with it on the standby
    got.batch.position = None
    assert got.batch == b


def _header(**change: Any) -> list[bytes]:
    b = WriteBatch(inserts=[(1, "q", None, [b"a", b"b"])], deletes=[3])
    parts = encode(7, 1, b)
    h = msgpack.unpackb(parts[1])
    h.update(change)
    return [parts[0], msgpack.packb(h), *parts[2:]]


@pytest.mark.parametrize(("parts", "match"), [
    ([], "magic"),
    ([b"ZQ1", b"\x80"], "magic"),
    ([MAGIC, b"\xc1"], "not msgpack"),
    ([MAGIC, msgpack.packb([1, 2])], "not a map"),
    (_header(term=0), "term"),
    (_header(seq=-1), "seq"),
    (_header(term="7"), "term"),
    (_header()[:-1], "fewer bodies"),
    ([*_header(), b"extra"], "more bodies"),
    (_header(inserts=[[1, "q", [None], 2]]), "headers and bodies"),
    (_header(deletes=[0]), "an id"),
    (_header(updates=[["x"]]), "unknown update kind"),
    (_header(updates=[["u", [1, 2], [1], 0.0, 0]]), "differ in number"),
    (_header(settings=[["q", 5]]), "settings must be bytes"),
    (_header(inserts=None), "wrong"),
    (_header(created="soon"), "wrong"),
])
def test_malformed_batches_are_refused_with_the_reason(parts: list[bytes], match: str
                                                       ) -> None:
    with pytest.raises(MalformedFrame, match=match):
        decode(parts)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.lists(st.binary(max_size=4), max_size=3))
def test_any_header_bytes_are_a_batch_or_malformed_frame(header: bytes,
                                                         bodies: list[bytes]) -> None:
    with contextlib.suppress(MalformedFrame):
        decode([MAGIC, header, *bodies])
