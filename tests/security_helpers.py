"""CURVE for tests: key pairs, a folder of authorized keys, a permissions file, CURVE
brokers and routers on loopback, CURVE clients and raw sockets, and the refusals a
server logged.

A cluster's brokers and routers share one server key pair (``Keyring.make("server")``):
it is every client's server key, and a router links with it as ``@server``, which has
every right (relay included).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq
import zmq.asyncio

import zq
from tests.cluster_helpers import start_cluster_broker, start_router
from tests.procs import Proc, start_broker
from tests.system.rawpeer import recv_frame
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security import keys
from zq.security.curve import ClientKeys

# The reasons a server gives for a refused connection (its log and STATS "security").
NO_KEY = "no key (another security mechanism)"
WRONG_SERVER_KEY = "wrong server key or bad encryption"
UNKNOWN_KEY = "unknown key"  # the authenticator's word (keys_refused, its log lines)
KEY_REFUSED = "key refused (ZAP status 400)"  # the same refusals, in handshakes_failed
GARBAGE = "not a ZMTP 3 peer of this mechanism (garbage)"
ENDED = "connection ended during the handshake"
# A connection without a session that closed with no failed handshake to explain it:
# random bytes get no other event from libzmq (nor does a peer that hangs up early).
CLOSED = "closed before a session (not ZMTP 3 or it left)"
REASONS = (NO_KEY, WRONG_SERVER_KEY, UNKNOWN_KEY, GARBAGE, ENDED, CLOSED)

_ONE = "refused a connection: "
_MORE = re.compile(r"refused (\d+) more connection\(s\): (.*)$")


@dataclass(frozen=True)
class KeyPair:
    """A key pair made by ``zq keys generate``: ``NAME.key`` and ``NAME.key_secret``."""

    name: str
    public: Path
    secret: Path

    @property
    def z85(self) -> bytes:
        return keys.public_key(self.public)

    def client_keys(self, server: KeyPair | Path) -> ClientKeys:
        """This pair as a CURVE client of ``server`` (a pair, or a public key file)."""
        public, secret = keys.secret_pair(self.secret)
        server_public = server.public if isinstance(server, KeyPair) else server
        return ClientKeys(public, secret, keys.public_key(server_public))


class Keyring:
    """Key pairs in ``ROOT/keys`` (private), and ``ROOT/authorized``: the folder of
    public keys a server lets in (``--authorized-keys``)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "keys"
        self.authorized = root / "authorized"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.authorized.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pairs: dict[str, KeyPair] = {}

    def make(self, name: str, *, authorize: bool = True) -> KeyPair:
        """A new pair ``name``; its public key is copied to the authorized folder unless
        ``authorize`` is False (a key no server knows)."""
        public, secret = keys.generate(name, self.dir)
        if authorize:
            shutil.copyfile(public, self.authorized / public.name)
        pair = self.pairs[name] = KeyPair(name, public, secret)
        return pair

    def __getitem__(self, name: str) -> KeyPair:
        return self.pairs[name]


def write_permissions(path: Path, rules: Mapping[str, Mapping[str, Any]]) -> Path:
    """A ``--permissions`` file: ``{name: {"publish": [patterns], ..., "admin": bool}}``
    becomes one ``[keys.NAME]`` table each."""
    lines: list[str] = []
    for name, table in rules.items():
        lines.append(f"[keys.{json.dumps(name)}]")
        for field, value in table.items():
            text = ("true" if value else "false") if isinstance(value, bool) \
                else json.dumps(list(value))
            lines.append(f"{field} = {text}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def curve_args(server: KeyPair, authorized: Path, permissions: Path | None = None
               ) -> list[str]:
    """The flags of a CURVE server (broker or router)."""
    args = ["--curve-secret", str(server.secret), "--authorized-keys", str(authorized)]
    if permissions is not None:
        args += ["--permissions", str(permissions)]
    return args


async def start_curve_broker(tmp: Path, server: KeyPair, authorized: Path,
                             permissions: Path | None = None, *args: str,
                             env: dict[str, str] | None = None) -> Proc:
    """``zq broker`` with CURVE on an ephemeral loopback port (its ready line read)."""
    return await start_broker(tmp, *curve_args(server, authorized, permissions), *args,
                              env=env)


async def start_curve_cluster_broker(tmp: Path, cluster: Path, broker_id: str,
                                     server: KeyPair, authorized: Path,
                                     permissions: Path | None = None, *args: str) -> Proc:
    """A broker of cluster file ``cluster`` with CURVE."""
    return await start_cluster_broker(tmp, cluster, broker_id,
                                      *curve_args(server, authorized, permissions), *args)


async def start_curve_router(tmp: Path, cluster: Path, server: KeyPair, authorized: Path,
                             permissions: Path | None = None, *args: str,
                             router_id: str = "r1", brokers_key: KeyPair | None = None
                             ) -> Proc:
    """``zq router`` with CURVE, serving clients with ``server``'s pair and linking to
    the brokers with it too; ``brokers_key``: the brokers' pair, when it is another."""
    extra = [] if brokers_key is None else ["--server-key", str(brokers_key.public)]
    return await start_router(tmp, cluster, *curve_args(server, authorized, permissions),
                              *extra, *args, router_id=router_id)


def curve_client(endpoint: str | Sequence[str], key: KeyPair, server: KeyPair,
                 **kw: Any) -> zq.Client:
    """A ``zq.Client`` proving ``key`` to a server holding ``server``'s pair."""
    return zq.Client(endpoint, curve_secret=str(key.secret), server_key=str(server.public),
                     **kw)


S = TypeVar("S", bound=zmq.Socket[Any])


def curve_dealer(ctx: zmq.Context[S], endpoint: str, key: KeyPair | None,
                 server: KeyPair | Path | None, *, reconnect: bool = True) -> S:
    """A raw DEALER of ``ctx`` (linger 0), over CURVE if ``key`` is given, connected to
    ``endpoint``; ``reconnect=False``: one connection only (RECONNECT_IVL -1)."""
    sock: S = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if not reconnect:
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
    if key is not None:
        assert server is not None
        key.client_keys(server).apply(sock)
    sock.connect(endpoint)
    return sock


class CurveWire:
    """A raw DEALER over CURVE speaking the protocol frame by frame, as ``key`` (its own
    context, closed by :meth:`close`)."""

    def __init__(self, endpoint: str, key: KeyPair, server: KeyPair | Path) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = curve_dealer(self.ctx, endpoint, key, server)

    async def send(self, frame: f.Frame) -> None:
        await self.sock.send_multipart(codec.encode(frame))

    async def recv(self, timeout: float = 5.0) -> f.Frame:
        """The next frame, heartbeats skipped."""
        return await recv_frame(self.sock, timeout)

    async def hello(self, **kw: Any) -> f.Welcome:
        await self.send(f.Hello(kw.pop("name", "wire"), **kw))
        frame = await self.recv()
        assert isinstance(frame, f.Welcome), f"expected WELCOME, got {frame!r}"
        return frame

    async def sync(self, req: int) -> list[f.Frame]:
        """MANAGE ``sync`` (a barrier any session of a broker may send): the frames
        received before its answer, i.e. the answers to everything sent before it."""
        await self.send(f.Manage(req, "sync"))
        before: list[f.Frame] = []
        while True:
            frame = await self.recv()
            if (isinstance(frame, f.ManageReply) and frame.req == req) or (
                    isinstance(frame, f.Error) and frame.ref == req):
                return before
            before.append(frame)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.close(linger=0)
        self.ctx.term()


async def server_stats(endpoint: str, server: KeyPair) -> dict[str, Any]:
    """STATS of a broker or router, asked with the server's own key (``@server``)."""
    async with curve_client(endpoint, server, server, name="stats") as c:
        return await c.stats()


def log_size(log: Path) -> int:
    """Where a process's log ends now (to read only what it writes from here on)."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def log_lines(log: Path, start: int = 0) -> list[str]:
    """The lines of a process's log from byte ``start`` on."""
    with open(log, "rb") as fh:
        fh.seek(start)
        return fh.read().decode(errors="replace").splitlines()


def refusals(log: Path, start: int = 0) -> Counter[str]:
    """The connections a server's log says it refused from byte ``start`` on, by reason:
    one line each (``refused a connection: REASON (detail)``) plus the summing-up
    lines (``refused N more connection(s): n1 REASON1, n2 REASON2``)."""
    found: Counter[str] = Counter()
    for line in log_lines(log, start):
        if _ONE in line:
            rest = line.split(_ONE, 1)[1]
            reason = next((r for r in REASONS if rest.startswith(r)),
                          rest.split(" (from ", 1)[0])
            found[reason] += 1
        elif (m := _MORE.search(line)) is not None:
            for part in m.group(2).split(", "):
                n, reason = part.split(" ", 1)
                found[reason] += int(n)
    return found
