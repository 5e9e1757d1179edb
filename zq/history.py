"""A message's attempt history (``zq-history``) and the bound on the headers that carry it.

No I/O. Every header the broker adds to a message grows it, and a message whose
headers outgrow a DELIVER frame can no longer reach any consumer. So what
enters is capped where it enters (consumer names, reasons), and after each
change the headers are fitted to the message's budget: the room a DELIVER of
that message has for headers, counted with the longest queue name, because a
dead letter travels under its dead-letter queue's name. The history keeps its
first entry and as many of the latest as fit (at most ``MAX_HISTORY``), and
``zq-history-omitted`` counts the entries dropped between them.
"""

from __future__ import annotations

from typing import Any

from zq.protocol import codec
from zq.protocol.limits import DEAD_AT as DEAD_AT
from zq.protocol.limits import HISTORY as HISTORY
from zq.protocol.limits import HISTORY_OMITTED as OMITTED
from zq.protocol.limits import MAX_HISTORY as MAX_HISTORY
from zq.protocol.limits import MAX_NAME as MAX_NAME
from zq.protocol.limits import MAX_REASON as MAX_REASON
from zq.protocol.limits import ORIGIN as ORIGIN
from zq.protocol.limits import REASON as REASON


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def entries(headers: dict[str, Any] | None) -> list[Any]:
    """The history entries in ``headers`` (a copy; [] if none)."""
    h = (headers or {}).get(HISTORY)
    return list(h) if isinstance(h, list) else []


def append(headers: dict[str, Any] | None, entry: dict[str, Any], budget: int
           ) -> tuple[dict[str, Any], int]:
    """New headers with ``entry`` added to the history, fitted to ``budget`` bytes.

    Returns the headers and their encoded size.
    """
    out = dict(headers) if headers else {}
    history = entries(out)
    history.append(entry)
    out[HISTORY] = history
    return fit(out, budget)


def fit(headers: dict[str, Any], budget: int) -> tuple[dict[str, Any], int]:
    """``headers`` (changed in place) within ``budget`` encoded bytes, if trimming the
    history can do it: entries go from the middle, then the whole history, then the
    dead-letter reason is shortened. Returns the headers and their encoded size."""
    history = headers.get(HISTORY)
    if isinstance(history, list) and len(history) > MAX_HISTORY:
        _omit_middle(headers, len(history) - MAX_HISTORY)
    size = codec.header_size(headers)
    if size > budget:
        size = _shrink_history(headers, size, budget)
    reason = headers.get(REASON)
    if size > budget and isinstance(reason, str) and reason:
        keep = len(reason.encode()) - (size - budget)
        if keep >= 0:  # only when that is enough: else keep the reason whole
            headers[REASON] = cap(reason, keep)
            size = codec.header_size(headers)
    return headers, size


def _shrink_history(headers: dict[str, Any], size: int, budget: int) -> int:
    """Drop history entries until the headers fit (estimated by entry sizes, then checked)."""
    history = headers.get(HISTORY)
    if not isinstance(history, list) or not history:
        return size
    over = size - budget
    k = 0
    for entry in history[1:-1]:
        if over <= 0:
            break
        over -= len(codec.packb(entry))
        k += 1
    if k:
        _omit_middle(headers, k)
        size = codec.header_size(headers)
    if size > budget:
        _count(headers, len(headers.pop(HISTORY)))
        size = codec.header_size(headers)
    return size


def _omit_middle(headers: dict[str, Any], k: int) -> None:
    """Drop ``k`` entries after the first one (never the first or the last)."""
    history = headers[HISTORY]
    k = min(k, len(history) - 2)
    if k > 0:
        headers[HISTORY] = [history[0], *history[1 + k:]]
        _count(headers, k)


def _count(headers: dict[str, Any], dropped: int) -> None:
    before = headers.get(OMITTED, 0)
    headers[OMITTED] = (before if type(before) is int else 0) + dropped
