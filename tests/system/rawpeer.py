"""A raw DEALER socket that speaks bytes to a broker, for hostile-input tests."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from zq.protocol import codec
from zq.protocol import frames as f


async def recv_frame(sock: zmq.asyncio.Socket, timeout: float = 5.0) -> f.Frame:
    """The next frame on ``sock``, heartbeats skipped."""
    async with asyncio.timeout(timeout):
        while True:
            frame = codec.decode(await sock.recv_multipart())
            if not isinstance(frame, f.Heartbeat):
                return frame


class Raw:
    """A DEALER that sends any multipart message and decodes what the broker answers."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.monitor_sock: zmq.asyncio.Socket | None = None

    async def send(self, parts: list[bytes]) -> None:
        await self.sock.send_multipart(parts)

    async def recv(self, timeout: float = 5.0) -> f.Frame:
        """The next frame from the broker, skipping heartbeats."""
        return await recv_frame(self.sock, timeout)

    async def error(self, timeout: float = 5.0) -> f.Error:
        frame = await self.recv(timeout)
        assert isinstance(frame, f.Error), f"expected an ERROR, got {frame!r}"
        return frame

    async def hello(self) -> f.Welcome:
        await self.send(codec.encode(f.Hello("hostile")))
        frame = await self.recv()
        assert isinstance(frame, f.Welcome), frame
        return frame

    def monitor(self) -> zmq.asyncio.Socket:
        """A PAIR socket that reports this DEALER's connects and disconnects."""
        mon = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.monitor_sock = mon
        return mon

    def close(self) -> None:
        if self.monitor_sock is not None:
            self.sock.disable_monitor()
            self.monitor_sock.close(linger=0)
        self.sock.close(linger=0)


async def wait_event(mon: zmq.asyncio.Socket, event: int, timeout: float = 5.0) -> None:
    """Wait for ``event`` (e.g. ``zmq.EVENT_DISCONNECTED``) on a monitor socket."""
    async with asyncio.timeout(timeout):
        while parse_monitor_message(await mon.recv_multipart())["event"] != event:
            pass
