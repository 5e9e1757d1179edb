"""What many tests need: loopback ports, and waiting for a condition (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable


def free_port() -> int:
    """A loopback TCP port that nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


async def eventually(cond: Callable[[], Awaitable[bool] | bool], what: str,
                     timeout: float = 10.0, step: float = 0.01) -> float:
    """Poll ``cond`` (sync or async) until it holds; return the seconds it took. Fail
    after ``timeout`` seconds, naming ``what`` was awaited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        ok = cond()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)
