"""Baseline producer and consumer processes: plain blocking pyzmq DEALER loops.

The producer keeps at most ``window_batches`` batches unconfirmed, as the zq SDK
keeps its publish window; a batch is confirmed when its consumer's ack comes
back through the relay. The consumer checks each body's index exactly as the zq
consumer does and sends one ack per batch.
"""

from __future__ import annotations

import time
from multiprocessing.synchronize import Event
from typing import Any

import zmq

from perf.common import (
    INDEX,
    Counts,
    Events,
    WorkerReport,
    WorkerSpec,
    cpu_seconds,
    make_bodies,
    run_worker,
)
from perf.relay import ACK, HELLO, MSG, WELCOME

_POLL_MS = 5


def _socket(spec: WorkerSpec) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(spec.endpoint)
    return ctx, sock


def producer_main(spec: WorkerSpec, start: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        ctx, sock = _socket(spec)
        try:
            return _produce(spec, sock, start, events)
        finally:
            sock.close(linger=0)
            ctx.term()

    run_worker(spec, events, body)


def _produce(spec: WorkerSpec, sock: zmq.Socket[bytes], start: Event,
             events: Events[Any]) -> WorkerReport:
    bodies = make_bodies(spec.lo, spec.hi, spec.size)
    b = spec.batch
    batches = [bodies[i:i + b] for i in range(0, len(bodies), b)]
    seqs = [i.to_bytes(4, "big") for i in range(len(batches))]
    nb = len(batches)
    window = spec.window_batches
    send = sock.send_multipart
    recv = sock.recv_multipart
    events.put(("ready", spec.role, spec.index))
    if not start.wait(spec.timeout):
        raise TimeoutError("no start signal")
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    deadline = t0 + spec.timeout
    sent = confirmed = 0
    while confirmed < nb:
        while sent < nb and sent - confirmed < window:
            send([MSG, seqs[sent], *batches[sent]], copy=False)
            sent += 1
        if not sock.poll(1000, zmq.POLLIN):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{nb - confirmed} batch(es) never confirmed")
            continue
        while True:
            try:
                recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            confirmed += 1
    t1 = time.monotonic()
    cpu1 = cpu_seconds()
    return WorkerReport(spec.role, spec.index, count=len(bodies), t_first=t0, t_last=t1,
                        cpu_s=cpu1 - cpu0)


def consumer_main(spec: WorkerSpec, counts: Counts, stop: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        ctx, sock = _socket(spec)
        try:
            return _consume(spec, sock, counts, stop, events)
        finally:
            sock.close(linger=0)
            ctx.term()

    run_worker(spec, events, body)


def _consume(spec: WorkerSpec, sock: zmq.Socket[bytes], counts: Counts, stop: Event,
             events: Events[Any]) -> WorkerReport:
    sock.send_multipart([HELLO])
    if not sock.poll(int(spec.timeout * 1000), zmq.POLLIN) or sock.recv_multipart() != [WELCOME]:
        raise TimeoutError("the relay did not welcome this consumer")
    total = spec.messages
    seen = bytearray(total)
    unpack = INDEX.unpack_from
    send = sock.send_multipart
    recv = sock.recv_multipart
    me = spec.index
    n = dup = 0
    t_last = 0.0
    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    while sum(counts) < total and not stop.is_set():
        if not sock.poll(_POLL_MS, zmq.POLLIN):
            continue
        while True:
            try:
                msg = recv(zmq.NOBLOCK)  # [producer, b"M", seq, body, ...]
            except zmq.Again:
                break
            for body in msg[3:]:
                i = unpack(body)[0]
                if seen[i]:
                    dup += 1
                else:
                    seen[i] = 1
            send([ACK, msg[0], msg[2]], copy=False)
            n += len(msg) - 3
            t_last = time.monotonic()
        counts[me] = n
    cpu1 = cpu_seconds()
    return WorkerReport(spec.role, me, count=n, duplicates=dup, t_last=t_last,
                        cpu_s=cpu1 - cpu0, seen=bytes(seen))
