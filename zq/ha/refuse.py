"""A standby's client socket: a HELLO is refused, naming the primary, while the
primary is alive; otherwise nothing is read (no I/O but the socket it is given).

A client given both nodes' endpoints that tries the standby first learns at once that
it must go on to the next endpoint (an ERROR UNAVAILABLE for its HELLO, its ``info``
naming the primary's node and endpoint) instead of waiting its share of the connect
timeout. While the standby has not heard from its primary for a liveness period (it
may be about to take over), the socket is not read: a HELLO waits there and is
answered by this node's broker if it is promoted.
"""

from __future__ import annotations

import zmq

from zq.errors import Unavailable
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.wire import command
from zq.transport import recv_parts, send_parts

_HELLO = command(f.HELLO)


def refusal(primary: str, endpoint: str) -> list[bytes]:
    """The ERROR frame that answers a HELLO at a standby."""
    exc = Unavailable(f"this node is a standby; the primary is {primary} at {endpoint}")
    return codec.encode(f.Error(exc.code, exc.name, exc.message, f.HELLO, None,
                                {"endpoint": endpoint, "node": primary}))


def refuse_hellos(sock: zmq.Socket[bytes], primary: str, endpoint: str, most: int = 1000
                  ) -> int:
    """Read what waits (at most ``most`` frames) and refuse each HELLO; other frames
    (an old session's) are dropped: their client finds the silence. Returns the
    number of frames read."""
    answer = refusal(primary, endpoint)
    n = 0
    while n < most:
        try:
            msg = recv_parts(sock)
        except zmq.Again:
            break
        n += 1
        if len(msg) >= 2 and msg[1] == _HELLO:
            try:
                sock.send(msg[0], zmq.SNDMORE | zmq.NOBLOCK)
                send_parts(sock, answer, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # gone, or its queue full: it times out as before
    return n
