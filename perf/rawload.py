"""Baseline producer and consumer processes: plain blocking pyzmq DEALER loops.

The producer keeps at most ``window_batches`` batches unconfirmed, as the zq SDK
keeps its publish window; a batch is confirmed when its consumer's ack comes
back through the relay. The consumer checks each body's index exactly as the zq
consumer does and sends one ack per batch.

With one queue the producer sends ``[M, seq, body...]`` (the relay's round robin);
with ``queues > 1`` it sends ``[Q, queue, seq, body...]``, batch ``j`` to queue
``j % queues`` as the zq producer does, and each consumer's hello names the queues
it takes, so the relay routes by queue name as the broker does. With ``stamp`` each
body is made when it is sent and carries that time (see :mod:`perf.hist`).
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
    queue_names,
    queue_of,
    run_worker,
)
from perf.hist import HEAD
from perf.relay import ACK, HELLO, MSG, QMSG, WELCOME, dealer_alone
from perf.stamps import StampLog

_POLL_MS = 5


def producer_main(spec: WorkerSpec, start: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        with dealer_alone(spec.endpoint) as sock:
            return _produce(spec, sock, start, events)

    run_worker(spec, events, body)


def _produce(spec: WorkerSpec, sock: zmq.Socket[bytes], start: Event,
             events: Events[Any]) -> WorkerReport:
    b = spec.batch
    firsts = range(spec.lo, spec.hi, b)
    nb = len(firsts)
    seqs = [i.to_bytes(4, "big") for i in range(nb)]
    if spec.queues == 1:
        heads = [[MSG, seq] for seq in seqs]
    else:
        names = [q.encode() for q in queue_names(spec.queues)]
        heads = [[QMSG, names[queue_of(lo, b, spec.queues)], seq]
                 for lo, seq in zip(firsts, seqs, strict=True)]
    if spec.stamp:
        pad = b"x" * (spec.size - HEAD.size)
        pack = HEAD.pack
        now = time.monotonic

        def batch(k: int) -> list[bytes]:
            lo = firsts[k]
            t = now()
            return [*heads[k], *[pack(i, t) + pad for i in range(lo, min(lo + b, spec.hi))]]
    else:
        bodies = make_bodies(spec.lo, spec.hi, spec.size)
        msgs = [[*heads[k], *bodies[k * b:(k + 1) * b]] for k in range(nb)]
        del bodies

        def batch(k: int) -> list[bytes]:
            return msgs[k]
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
            send(batch(sent), copy=False)
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
    return WorkerReport(spec.role, spec.index, count=spec.hi - spec.lo, t_first=t0, t_last=t1,
                        cpu_s=cpu1 - cpu0)


def consumer_main(spec: WorkerSpec, counts: Counts, stop: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        with dealer_alone(spec.endpoint) as sock:
            return _consume(spec, sock, counts, stop, events)

    run_worker(spec, events, body)


def _consume(spec: WorkerSpec, sock: zmq.Socket[bytes], counts: Counts, stop: Event,
             events: Events[Any]) -> WorkerReport:
    t_sub = time.monotonic()
    if spec.queues == 1:
        sock.send_multipart([HELLO])
    else:
        names = queue_names(spec.queues)
        mine = spec.subscribe or range(spec.queues)
        sock.send_multipart([HELLO, *(names[k].encode() for k in mine)])
    if not sock.poll(int(spec.timeout * 1000), zmq.POLLIN) or sock.recv_multipart() != [WELCOME]:
        raise TimeoutError("the relay did not welcome this consumer")
    subscribe_s = time.monotonic() - t_sub
    if spec.stamp:
        return _consume_stamped(spec, sock, counts, stop, events, subscribe_s)
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
            at = 3 if msg[1] == MSG else 4  # [producer, b"Q", queue, seq, body, ...]
            for body in msg[at:]:
                i = unpack(body)[0]
                if seen[i]:
                    dup += 1
                else:
                    seen[i] = 1
            send([ACK, msg[0], msg[at - 1]], copy=False)
            n += len(msg) - at
            t_last = time.monotonic()
        counts[me] = n
    cpu1 = cpu_seconds()
    return WorkerReport(spec.role, me, count=n, duplicates=dup, t_last=t_last,
                        cpu_s=cpu1 - cpu0, seen=bytes(seen), extra={"subscribe_s": subscribe_s})


def _consume_stamped(spec: WorkerSpec, sock: zmq.Socket[bytes], counts: Counts, stop: Event,
                     events: Events[Any], subscribe_s: float) -> WorkerReport:
    """The same loop for stamped bodies: latency and each queue's first delivery too."""
    log = StampLog(spec.messages)
    received = log.received
    send = sock.send_multipart
    recv = sock.recv_multipart
    names = {q.encode(): k for k, q in enumerate(queue_names(spec.queues))}
    me = spec.index
    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    while sum(counts) < spec.messages and not stop.is_set():
        if not sock.poll(_POLL_MS, zmq.POLLIN):
            continue
        while True:
            try:
                msg = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.monotonic()
            if msg[1] == MSG:
                at, q = 3, 0
            else:
                at, q = 4, names[msg[2]]
            for body in msg[at:]:
                received(q, body, now)
            send([ACK, msg[0], msg[at - 1]], copy=False)
        counts[me] = log.count
    cpu1 = cpu_seconds()
    return log.report(spec, cpu1 - cpu0, subscribe_s)
