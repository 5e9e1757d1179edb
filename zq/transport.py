"""Small typed helpers for driving a plain pyzmq socket from an asyncio loop.

zq does not use ``zmq.asyncio``: it waits on the socket's file descriptor and
then reads with NOBLOCK until the socket is empty, so one wake-up handles
every queued message. The descriptor is edge-triggered, so after sending we
must check :func:`readable` before waiting on it again.
"""

from __future__ import annotations

from typing import Any, cast

import zmq


def fd(sock: zmq.Socket[Any]) -> int:
    """The socket's file descriptor, for ``loop.add_reader``."""
    return cast(int, sock.getsockopt(zmq.FD))


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is waiting (also re-arms the edge-triggered descriptor)."""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
