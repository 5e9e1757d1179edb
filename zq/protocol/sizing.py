"""How many bytes a message costs in a frame, and how messages are cut into frames. No I/O.

The SDK uses these to split publishes and to refuse a message before sending it;
the broker uses them to batch deliveries and to admit publishes. Both sides doing
the same arithmetic is what keeps every frame either side builds within the
other's limits (PROTOCOL.md section 11).
"""

from __future__ import annotations

from collections.abc import Sequence

from zq.protocol import frames as f
from zq.protocol.limits import ENVELOPE, HEADER_RESERVE, MAX_QUEUE_NAME, PER_MESSAGE, Limits
from zq.protocol.wire import packb


def header_size(headers: f.Headers | None) -> int:
    """Encoded size of one message's headers (0 for none)."""
    return 0 if headers is None else len(packb(headers))


def fits_alone(queue_len: int, body_len: int, hsize: int, limits: Limits) -> bool:
    """Whether one message can travel alone in a PUBLISH and in a DELIVER."""
    return (ENVELOPE + queue_len + PER_MESSAGE + hsize + body_len <= limits.max_frame
            and ENVELOPE + PER_MESSAGE + hsize <= limits.max_header)


def reserve(limits: Limits) -> int:
    """Header bytes a new message must leave free (see HEADER_RESERVE)."""
    return min(HEADER_RESERVE, limits.max_frame // 16)


def header_budget(body_len: int, limits: Limits) -> int:
    """The most header bytes a message with this body can carry and still travel
    alone in a DELIVER from any queue (a dead letter moves to another queue)."""
    return min(limits.max_header - ENVELOPE - PER_MESSAGE,
               limits.max_frame - ENVELOPE - MAX_QUEUE_NAME - PER_MESSAGE - body_len)


def fits_stored(body_len: int, hsize: int, limits: Limits) -> bool:
    """Whether a new message may be stored: it fits a DELIVER from any queue with
    ``reserve`` header bytes to spare for its history and dead-letter headers."""
    return hsize + reserve(limits) <= header_budget(body_len, limits)


def too_large_text(i: int, body_len: int, hsize: int, limits: Limits) -> str:
    """Why message ``i`` is refused, naming the setting to raise."""
    return (f"message {i} ({body_len} body + {hsize} header bytes) is too large: a message "
            f"must fit a DELIVER frame of max_frame = {limits.max_frame} bytes (headers at "
            f"most {limits.max_header}) with {reserve(limits)} header bytes to spare for "
            f"the broker's attempt history; raise the broker setting max_frame "
            f"(zq broker --max-frame) or send less")


def fits_together(queue_len: int, body_lens: Sequence[int], limits: Limits) -> bool:
    """Whether messages without headers fit one frame by bytes (then each fits alone)."""
    n = len(body_lens)
    return (ENVELOPE + queue_len + n * PER_MESSAGE + sum(body_lens) <= limits.max_frame
            and ENVELOPE + n * PER_MESSAGE <= limits.max_header)


def split(queue_len: int, body_lens: Sequence[int], hsizes: Sequence[int] | None,
          max_batch: int, limits: Limits) -> list[int]:
    """End indices that cut messages into frames within ``max_batch`` and ``limits``.

    A message that does not fit alone (see :func:`fits_alone`) still gets a
    frame of its own; callers refuse such messages before they get here.
    """
    n = len(body_lens)
    if hsizes is None and n <= max_batch and fits_together(queue_len, body_lens, limits):
        return [n] if n else []  # the common case, without a loop per message
    ends: list[int] = []
    fbytes = ENVELOPE + queue_len
    hbytes = ENVELOPE
    count = 0
    max_frame, max_header = limits.max_frame, limits.max_header
    for i, blen in enumerate(body_lens):
        h = PER_MESSAGE + hsizes[i] if hsizes else PER_MESSAGE
        if count and (count >= max_batch or fbytes + h + blen > max_frame
                      or hbytes + h > max_header):
            ends.append(i)
            fbytes, hbytes, count = ENVELOPE + queue_len, ENVELOPE, 0
        fbytes += h + blen
        hbytes += h
        count += 1
    if count:
        ends.append(len(body_lens))
    return ends
