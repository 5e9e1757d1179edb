"""The test relay itself (tests/tcp_relay.py): passes, drops, holds and forgets bytes as
its docstring says, on loopback, against an echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.helpers import eventually
from tests.tcp_relay import TcpRelay


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    writers: list[asyncio.StreamWriter] = []

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        while data := await r.read(65536):
            w.write(data)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    r = await TcpRelay(server.sockets[0].getsockname()[1]).start()
    try:
        yield r
    finally:
        await r.close()
        server.close()
        for w in writers:
            await _closed(w)
        await server.wait_closed()


async def _open(relay: TcpRelay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", relay.port)


async def _closed(w: asyncio.StreamWriter) -> None:
    w.close()
    await w.wait_closed()


async def _nothing_for_a_while(r: asyncio.StreamReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.read(1), 0.2)


async def test_drop_discards_both_ways_and_passes_again_after_the_heal(
        relay: TcpRelay) -> None:
    r, w = await _open(relay)
    w.write(b"one")
    assert await r.readexactly(3) == b"one"
    relay.cut("drop")
    w.write(b"lost")
    await eventually(lambda: relay.dropped == 4, "the relay to drop what it read", 5)
    relay.heal()
    w.write(b"two")
    assert await r.readexactly(3) == b"two"  # nothing of "lost", and the pipe still open
    await _closed(w)


async def test_hold_delivers_everything_in_order_after_the_heal(relay: TcpRelay) -> None:
    r, w = await _open(relay)
    w.write(b"a")
    assert await r.readexactly(1) == b"a"
    relay.cut("hold")
    w.write(b"bc")
    await _nothing_for_a_while(r)
    relay.heal()
    w.write(b"d")
    assert await r.readexactly(3) == b"bcd"
    assert relay.dropped == 0
    await _closed(w)


async def test_a_connection_made_during_a_cut_goes_on_at_the_heal(relay: TcpRelay) -> None:
    relay.cut("drop")
    r, w = await _open(relay)
    w.write(b"early")
    await _nothing_for_a_while(r)
    relay.heal()
    assert await r.readexactly(5) == b"early"  # its SYN was only late: nothing lost
    await _closed(w)


async def test_forget_kills_the_open_connections_for_good_and_passes_new_ones(
        relay: TcpRelay) -> None:
    r, w = await _open(relay)
    w.write(b"x")
    assert await r.readexactly(1) == b"x"
    relay.forget()
    w.write(b"gone")
    await eventually(lambda: relay.dropped == 4, "the relay to drop what it read", 5)
    relay.heal()
    w.write(b"still gone")
    await _nothing_for_a_while(r)
    assert not r.at_eof()  # nobody is told
    r2, w2 = await _open(relay)
    w2.write(b"new")
    assert await r2.readexactly(3) == b"new"
    for writer in (w, w2):
        await _closed(writer)


def test_a_relay_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TcpRelay(5555, host="0.0.0.0")
