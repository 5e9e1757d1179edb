"""Encode frames into the parts of one ZeroMQ multipart message. No I/O.

:func:`encode` takes any frame. The broker's and the SDK's hot paths build the
frames they send most without a frame object: :func:`encode_deliver`,
:func:`encode_confirm` and :func:`encode_publish` (with :func:`publish_header`
for a PUBLISH that is kept to be sent again), so PUBLISH's layout is written
here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zq.protocol import frames as f
from zq.protocol.wire import COMMANDS, packb


def encode(frame: f.Frame) -> list[bytes]:
    """Encode a frame into the parts of one multipart message."""
    if type(frame) is f.Publish:
        return encode_publish(frame.queue, frame.seq, frame.bodies, frame.headers, frame.opts)
    if type(frame) is f.Deliver:
        return [COMMANDS[f.DELIVER], frame.queue.encode(),
                packb([frame.ids, frame.attempts, frame.headers]), *frame.bodies]
    if type(frame) is f.Forward:
        return forward(frame.key, frame.parts)
    if type(frame) is f.Manage and frame.bodies:
        return [COMMANDS[f.MANAGE], packb([frame.req, frame.op, frame.args]), *frame.bodies]
    entry = _HEADERS.get(type(frame))
    if entry is None:
        raise TypeError(f"not a frame: {frame!r}")
    cmd, header = entry
    return [cmd, packb(header(frame))]


def forward(key: bytes, parts: Sequence[bytes]) -> list[bytes]:
    """A FORWARD carrying the frame ``parts`` of client ``key``, without decoding it."""
    return [COMMANDS[f.FORWARD], key, *parts]


def publish_header(seq: int, headers: Sequence[f.Headers | None],
                   opts: f.Options | None) -> bytes:
    """The msgpack header part of a PUBLISH: ``[seq, headers]`` or ``[seq, headers, opts]``."""
    head: bytes = packb([seq, headers] if opts is None else [seq, headers, opts.to_map()])
    return head


def encode_publish(queue: str, seq: int, bodies: Sequence[bytes],
                   headers: Sequence[f.Headers | None], opts: f.Options | None = None
                   ) -> list[bytes]:
    """A PUBLISH from its fields, without building a :class:`frames.Publish`."""
    return [COMMANDS[f.PUBLISH], queue.encode(), publish_header(seq, headers, opts), *bodies]


def encode_deliver(queue: bytes, ids: list[int], attempts: list[int],
                   headers: list[f.Headers | None], bodies: list[bytes]) -> list[bytes]:
    """Hot-path DELIVER encoder: takes the queue name already encoded."""
    return [COMMANDS[f.DELIVER], queue, packb([ids, attempts, headers]), *bodies]


def encode_confirm(entries: list[list[int]]) -> list[bytes]:
    """Hot-path CONFIRM encoder for ``[seq, first_id, count]`` entries."""
    return [COMMANDS[f.CONFIRM], packb(entries)]


# --------------------------------- the header of each frame of two parts


def _hello(fr: f.Hello) -> Any:
    h = {"name": fr.name, "heartbeat_ms": fr.heartbeat_ms}
    if fr.starts:
        h["starts"] = True
    if fr.producer:
        h["producer"] = fr.producer
    if fr.link is not None:
        h["link"] = fr.link
    if fr.user is not None:
        h["user"] = fr.user
    return h


def _welcome(fr: f.Welcome) -> Any:
    h = {"broker": fr.broker, "heartbeat_ms": fr.heartbeat_ms, "liveness": fr.liveness,
         "max_batch": fr.max_batch, "max_credit": fr.max_credit, "max_frame": fr.max_frame}
    if fr.starts:
        h["starts"] = True
    if fr.cluster is not None:
        h["cluster"] = fr.cluster
    return h


def _error(fr: f.Error) -> Any:
    h = {"code": fr.code, "name": fr.name, "text": fr.text, "op": fr.op, "ref": fr.ref}
    if fr.info is not None:
        h["info"] = fr.info
    return h


_HEADER_OF: dict[type[Any], Callable[[Any], Any]] = {
    f.Hello: _hello,
    f.Welcome: _welcome,
    f.Heartbeat: lambda fr: None,
    f.Bye: lambda fr: {"reason": fr.reason},
    f.Confirm: lambda fr: [list(e) for e in fr.entries],
    f.Credit: lambda fr: [fr.queue, fr.n],
    f.Cancel: lambda fr: [fr.queue],
    f.Ack: lambda fr: [fr.ids, fr.attempts],
    f.Nack: lambda fr: [fr.ids, fr.attempts, fr.requeue, fr.delay_ms, fr.reason],
    f.Release: lambda fr: [fr.ids],
    f.Extend: lambda fr: [fr.ids, fr.attempts, fr.ms],
    f.Start: lambda fr: [fr.ids, fr.attempts],
    f.Manage: lambda fr: [fr.req, fr.op, fr.args],
    f.ManageReply: lambda fr: [fr.req, fr.result],
    f.Stats: lambda fr: [fr.req],
    f.StatsReply: lambda fr: [fr.req, fr.stats],
    f.Error: _error,
    f.Locate: lambda fr: [fr.req, fr.queue],
    f.Location: lambda fr: [fr.req, fr.loc],
    f.Catalog: lambda fr: ([fr.seq, fr.kind, fr.queues] if fr.moved is None
                           else [fr.seq, fr.kind, fr.queues, fr.moved]),
}
# Each frame type of two parts: its command part and what builds its header.
_HEADERS = {kind: (COMMANDS[f.OPCODES[kind]], header) for kind, header in _HEADER_OF.items()}
