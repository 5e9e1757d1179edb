"""The doorman of a server socket, with real ZeroMQ sockets in-process: connections
without a session are closed after the hello timeout, those with one are not, a
descriptor it does not know is never touched, and refusals are logged with a bound."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import pytest
import zmq

from tests.helpers import eventually
from zq.security.doorman import Doorman, RateLog, srcfd
from zq.transport import serve_options


@pytest.fixture
async def server() -> AsyncIterator[tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes],
                                          Doorman]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    serve_options(sock, hwm=1000, max_frame=1 << 20, backlog=100)
    sock.bind("tcp://127.0.0.1:*")
    door = Doorman(sock, hello_timeout=0.3, name="test")
    door.start(asyncio.get_running_loop())
    yield ctx, sock, door
    door.close()
    sock.close(linger=0)
    ctx.term()


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.RECONNECT_IVL, -1)  # one connection each: a cut one stays cut
    d.connect(endpoint)
    return d


async def test_a_silent_connection_is_closed_and_a_speaking_one_is_not(
        server: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], Doorman]) -> None:
    ctx, sock, door = server
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    silent, talker = _dealer(ctx, endpoint), _dealer(ctx, endpoint)
    try:
        talker.send(b"hello")
        await eventually(lambda: sock.poll(0) != 0, "the talker's frame", 5, 0.01)
        frame = part = sock.recv(copy=False)  # the routing id part names the connection
        while part.more:
            part = sock.recv(copy=False)
        door.spoke(frame)
        await eventually(lambda: len(door.open) == 2, "both accepted", 5, 0.01)
        await eventually(lambda: sum(door.dropped.values()) == 1, "the silent one closed",
                         5, 0.02)
        assert list(door.dropped) == ["no HELLO within 0.3 s"]
        await eventually(lambda: len(door.open) == 1, "its close seen", 5, 0.02)
        assert srcfd(frame) in door.open  # the one that spoke is still open
        await asyncio.sleep(0)  # (nothing more is due: the talker's deadline is gone)
        assert not door.waiting
        talker.send(b"still here")
        await eventually(lambda: sock.poll(0) != 0, "the talker is still served", 5, 0.01)
    finally:
        silent.close(linger=0)
        talker.close(linger=0)


async def test_a_descriptor_it_did_not_accept_is_never_shut_down(
        server: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], Doorman]) -> None:
    _, _, door = server
    r, w = os.pipe()
    try:
        assert door.cut(r, "test") is False
        os.write(w, b"x")  # the pipe still works
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
        os.close(w)


def test_refusals_are_logged_one_by_one_then_summed(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLog("srv", per_second=3)
    with caplog.at_level(logging.WARNING, logger="zq.security"):
        for _ in range(5):
            rl.say("unknown key")
        rl.say("garbage")
        rl.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["srv: refused a connection: unknown key"] * 3
    assert lines[3] == "srv: refused 3 more connection(s): 1 garbage, 2 unknown key"
    assert len(lines) == 4


async def test_a_closed_doorman_leaves_the_context_working() -> None:
    """Once the doorman is closed, the server socket sends it no more events: libzmq
    sends them from the context's I/O thread, which would block on a monitor nobody
    reads, and every other socket of the context (a process's clients) with it."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    serve_options(sock, hwm=1000, max_frame=1 << 20, backlog=100)
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    door = Doorman(sock, hello_timeout=60, name="test")
    door.start(asyncio.get_running_loop())
    peers = [_dealer(ctx, endpoint) for _ in range(40)]
    await eventually(lambda: door.poll() is None and len(door.open) == len(peers),
                     "every peer accepted", 5, 0.01)
    door.close()
    for p in peers:  # each close is an event for the (now gone) monitor
        p.close(linger=0)
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        b.bind("tcp://127.0.0.1:*")
        a.connect(b.getsockopt_string(zmq.LAST_ENDPOINT))
        a.send(b"still working")
        await eventually(lambda: b.poll(0) != 0, "a new connection in the context", 5, 0.02)
        assert b.recv() == b"still working"
    finally:
        for s in (a, b, sock):
            s.close(linger=0)
        ctx.term()
