"""Baseline workers for ``python -m perf latency``: the same open-loop traffic through
the bare ROUTER relay of :mod:`perf.relay`, one body per ZeroMQ message.

The producer runs the same schedule, pacer (a timerfd) and uvloop loop as the zq
producer (:mod:`perf.latency`), on a plain DEALER socket read from the loop's
reader callback: ``[M, seq, body]`` out, and the relay's ``[A, seq]`` (the
consumer's ack) is its confirm. The consumer is a plain blocking loop that
records the receive time, checks the index and acks each message at once.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.synchronize import Event
from typing import Any

import zmq

from perf.common import Counts, Events, WorkerReport, cpu_seconds, run_worker
from perf.hist import OpenLoop, Pacer, Schedule, make_body
from perf.latency import LEAD, DeliveryLog, LatencySpec, producer_report
from perf.relay import ACK, HELLO, MSG, WELCOME, dealer_alone
from zq.broker import run_loop
from zq.transport import fd, readable

_NOBLOCK = int(zmq.NOBLOCK)


def producer_main(spec: LatencySpec, start: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        with dealer_alone(spec.endpoint) as sock:
            out: list[WorkerReport] = []
            run_loop(_produce(spec, sock, start, events, out))
            return out[0]

    run_worker(spec, events, body)


async def _produce(spec: LatencySpec, sock: zmq.Socket[bytes], start: Event,
                   events: Events[Any], out: list[WorkerReport]) -> None:
    n, size = spec.messages, spec.size
    loop = asyncio.get_running_loop()
    events.put(("ready", spec.role, spec.index))
    if not await asyncio.to_thread(start.wait, spec.timeout):
        raise TimeoutError("no start signal")
    rec = OpenLoop(Schedule(time.monotonic() + LEAD, spec.rate, n))
    due = rec.schedule.due
    done: asyncio.Future[None] = loop.create_future()
    recv = sock.recv_multipart
    send = sock.send_multipart

    def on_readable() -> None:
        while True:
            try:
                msg = recv(_NOBLOCK)  # [b"A", seq]
            except zmq.Again:
                break
            rec.confirmed(int.from_bytes(msg[1], "big"), time.monotonic())
        if rec.done and not done.done():
            done.set_result(None)

    def fire(upto: int) -> None:
        now = time.monotonic()
        for i in rec.take_due(upto, now):
            send([MSG, i.to_bytes(8, "big"), make_body(i, due(i), size)], _NOBLOCK)
        if readable(sock):  # sending can swallow the descriptor's edge
            loop.call_soon(on_readable)

    loop.add_reader(fd(sock), on_readable)
    pacer = Pacer(loop, rec.schedule, fire)
    cpu0 = cpu_seconds()
    pacer.start()
    try:
        await asyncio.wait_for(done, n / spec.rate + spec.timeout)
    finally:
        pacer.stop()
        loop.remove_reader(fd(sock))
    cpu1 = cpu_seconds()
    out.append(producer_report(spec, rec, cpu1 - cpu0))


def consumer_main(spec: LatencySpec, counts: Counts, stop: Event, events: Events[Any]) -> None:
    def body() -> WorkerReport:
        with dealer_alone(spec.endpoint) as sock:
            return _consume(spec, sock, counts, stop, events)

    run_worker(spec, events, body)


def _consume(spec: LatencySpec, sock: zmq.Socket[bytes], counts: Counts, stop: Event,
             events: Events[Any]) -> WorkerReport:
    sock.send_multipart([HELLO])
    if not sock.poll(int(spec.timeout * 1000), zmq.POLLIN) or sock.recv_multipart() != [WELCOME]:
        raise TimeoutError("the relay did not welcome this consumer")
    log = DeliveryLog(spec.messages)
    recv = sock.recv_multipart
    send = sock.send_multipart
    me = spec.index
    cpu0 = cpu_seconds()
    events.put(("ready", spec.role, me))
    while log.count < spec.messages and not stop.is_set():
        if not sock.poll(50, zmq.POLLIN):
            continue
        while True:
            try:
                msg = recv(_NOBLOCK)  # [producer, b"M", seq, body]
            except zmq.Again:
                break
            log.received(msg[3], time.monotonic())
            send([ACK, msg[0], msg[2]], _NOBLOCK)
        counts[me] = log.count
    cpu1 = cpu_seconds()
    return log.report(spec, cpu1 - cpu0)
