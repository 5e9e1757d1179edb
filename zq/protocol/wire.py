"""The bytes a frame is made of: its 4-byte command part and its msgpack header. No I/O.

Unpacking is bounded: the header's size is checked before msgpack runs, and msgpack
itself is given limits, so that a hostile header costs at most its own size.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zq.errors import FrameTooLarge, MalformedFrame
from zq.protocol import frames as f
from zq.protocol.limits import Limits

COMMANDS = {op: f.SIGNATURE + bytes((f.VERSION, op)) for op in f.NAMES}
packb = msgpack.Packer(use_bin_type=True).pack


def command(op: int) -> bytes:
    """The 4-byte command part for opcode ``op``."""
    return COMMANDS[op]


def unpack(data: bytes, limits: Limits, op: int) -> Any:
    """One msgpack header part of frame ``op``, within ``limits``."""
    if len(data) > limits.max_header:
        raise FrameTooLarge(
            f"header of {len(data)} bytes exceeds max_header = {limits.max_header} "
            f"(broker setting max_header, zq broker --max-header)",
            op=op,
            limit=limits.max_header,
        )
    # Container lengths are bounded by the header's size (every element costs at
    # least a byte); the batch limit is checked on the decoded arrays, where an
    # over-long one is FRAME_TOO_LARGE rather than an undecodable header.
    n = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
            ext_hook=no_ext,  # (max_ext_len=0 still lets an extension of length 0 in)
        )
    except Exception as exc:  # msgpack raises many types; all mean one thing here
        raise MalformedFrame(f"undecodable header: {exc}", op=op) from None


def no_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook``: section 4.1 has no extension types; a header with one is
    malformed."""
    raise ValueError(f"extension type {code} is not allowed")


def bad(op: int, what: str) -> MalformedFrame:
    """MALFORMED_FRAME for frame ``op``, saying ``what`` is wrong with it."""
    return MalformedFrame(f"{f.NAMES.get(op, hex(op))}: {what}", op=op)
