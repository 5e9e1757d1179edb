"""Encode frames to ZeroMQ parts and decode parts to frames. No I/O.

Decoding is bounded: sizes are checked before msgpack runs, msgpack itself is
given limits, and every failure becomes one of MalformedFrame, FrameTooLarge,
UnknownOpcode or UnsupportedVersion, each carrying the opcode when known.

This module is the codec's one front door; the work is done in

* :mod:`zq.protocol.limits`: every bound and constant of the protocol;
* :mod:`zq.protocol.wire`: command parts and bounded msgpack;
* :mod:`zq.protocol.decoders` (with :mod:`~zq.protocol.fields` and
  :mod:`~zq.protocol.options`): parts to frames;
* :mod:`zq.protocol.encoders`: frames to parts;
* :mod:`zq.protocol.sizing`: what a message costs in a frame, and splitting.
"""

from __future__ import annotations

from zq.protocol.decoders import decode, deliver_ids, reply_req
from zq.protocol.encoders import (
    encode,
    encode_confirm,
    encode_deliver,
    encode_publish,
    forward,
    publish_header,
)
from zq.protocol.limits import (
    DEFAULT_LIMITS,
    ENVELOPE,
    HEADER_RESERVE,
    MAX_DURATION_MS,
    MAX_KEY,
    MAX_PRIORITY,
    MAX_QUEUE_NAME,
    PER_MESSAGE,
    Limits,
)
from zq.protocol.options import publish_options
from zq.protocol.sizing import (
    fits_alone,
    fits_stored,
    fits_together,
    header_budget,
    header_size,
    reserve,
    split,
    too_large_text,
)
from zq.protocol.wire import command, packb

_MS_MAX = MAX_DURATION_MS  # its name before limits.py, still used by tests

__all__ = [
    "DEFAULT_LIMITS",
    "ENVELOPE",
    "HEADER_RESERVE",
    "MAX_KEY",
    "MAX_PRIORITY",
    "MAX_QUEUE_NAME",
    "PER_MESSAGE",
    "Limits",
    "command",
    "decode",
    "deliver_ids",
    "encode",
    "encode_confirm",
    "encode_deliver",
    "encode_publish",
    "fits_alone",
    "fits_stored",
    "fits_together",
    "forward",
    "header_budget",
    "header_size",
    "packb",
    "publish_header",
    "publish_options",
    "reply_req",
    "reserve",
    "split",
    "too_large_text",
]
