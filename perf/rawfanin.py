"""Baseline producer processes for ``python -m perf fanin``: many DEALER sockets each.

One ``zmq.Context`` per process and one DEALER socket per producer. On the connect
signal every socket connects and sends ``[P]``; a producer counts as connected when
the relay's ``[P]`` comes back. On start every producer sends ``[M, seq, body]``
and, as the zq producer awaits each ``publish()``, sends its next message only when
the consumer's ack for the last one came back through the relay. One
``zmq.Poller`` watches every socket.
"""

from __future__ import annotations

import time
from multiprocessing.synchronize import Event
from typing import Any

import zmq

from perf.common import Events, WorkerReport, cpu_seconds, make_bodies, run_worker
from perf.fanin import FaninSpec
from perf.relay import MSG, PING, dealer

_NOBLOCK = int(zmq.NOBLOCK)


def producer_main(spec: FaninSpec, go: Event, start: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        socks: list[zmq.Socket[bytes]] = []
        try:
            return _produce(spec, ctx, socks, go, start, events)
        finally:
            for s in socks:
                s.close(linger=0)
            ctx.term()

    run_worker(spec, events, body)  # type: ignore[arg-type]


def _produce(spec: FaninSpec, ctx: zmq.Context[zmq.Socket[bytes]],
             socks: list[zmq.Socket[bytes]], go: Event, start: Event,
             events: Events[Any]) -> WorkerReport:
    m = spec.per_client
    n = spec.clients
    bodies = [make_bodies(c * m, (c + 1) * m, spec.size)
              for c in range(spec.first, spec.first + n)]
    seqs = [i.to_bytes(4, "big") for i in range(m)]
    events.put(("ready", spec.role, spec.index))
    if not go.wait(spec.timeout):
        raise TimeoutError("no connect signal")
    poller = zmq.Poller()
    which: dict[zmq.Socket[bytes], int] = {}
    for k in range(n):
        s = dealer(ctx, spec.endpoint)
        s.send(PING)
        socks.append(s)
        which[s] = k
        poller.register(s, zmq.POLLIN)
    connected = [0.0] * n
    waiting = n
    deadline = time.monotonic() + spec.timeout
    while waiting:
        ready = poller.poll(1000)
        now = time.monotonic()
        for s, _ in ready:
            s.recv_multipart()
            connected[which[s]] = now
            waiting -= 1
        if not ready and now > deadline:
            raise TimeoutError(f"{waiting} producer(s) never got the relay's ping back")
    events.put(("connected", spec.role, spec.index, connected))
    if not start.wait(spec.timeout):
        raise TimeoutError("no start signal")
    sent = [0] * n
    confirmed = 0
    total = n * m
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    deadline = t0 + spec.timeout
    for k, s in enumerate(socks):
        s.send_multipart([MSG, seqs[0], bodies[k][0]], _NOBLOCK, copy=False)
        sent[k] = 1
    while confirmed < total:
        ready = poller.poll(1000)
        if not ready and time.monotonic() > deadline:
            raise TimeoutError(f"{total - confirmed} message(s) never confirmed")
        for s, _ in ready:
            k = which[s]
            while True:
                try:
                    s.recv_multipart(_NOBLOCK)  # [b"A", seq]
                except zmq.Again:
                    break
                confirmed += 1
                i = sent[k]
                if i < m:
                    s.send_multipart([MSG, seqs[i], bodies[k][i]], _NOBLOCK, copy=False)
                    sent[k] = i + 1
    t1 = time.monotonic()
    cpu1 = cpu_seconds()
    return WorkerReport(spec.role, spec.index, count=confirmed, t_first=t0, t_last=t1,
                        cpu_s=cpu1 - cpu0)
