"""Clusters for tests: a cluster file on free loopback ports, brokers and routers on it,
and a raw protocol client for checking frames one by one."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from tests.helpers import free_port
from tests.procs import ROOT, Proc, zq_argv
from zq.protocol import codec
from zq.protocol import frames as f


def write_cluster(path: Path, ids: list[str], version: int = 1, *,
                  cluster_id: str = "test", ports: dict[str, int] | None = None,
                  extra: str = "") -> dict[str, str]:
    """Write a cluster file with brokers ``ids`` on free loopback ports (or ``ports``);
    return id -> endpoint."""
    ports = dict(ports or {})
    lines = [f'cluster_id = "{cluster_id}"', f"version = {version}"]
    endpoints: dict[str, str] = {}
    for b in ids:
        port = ports.get(b) or free_port()
        endpoints[b] = f"tcp://127.0.0.1:{port}"
        lines += ["[[brokers]]", f'id = "{b}"', f'endpoint = "{endpoints[b]}"']
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    os.replace(tmp, path)
    return endpoints


def ports_of(endpoints: dict[str, str]) -> dict[str, int]:
    return {b: int(e.rsplit(":", 1)[1]) for b, e in endpoints.items()}


async def start_cluster_broker(tmp: Path, cluster: Path, broker_id: str, *args: str,
                               heartbeat: str = "0.2") -> Proc:
    """``zq broker --cluster FILE --id ID`` with its own data folder, bound where the
    file says; waits for its ready line."""
    argv = zq_argv("--log-level", "info", "broker", "--cluster", str(cluster), "--id",
                   broker_id, "--data", str(tmp / f"data-{broker_id}"), "--heartbeat",
                   heartbeat, *args)
    n = len(list(tmp.glob(f"broker-{broker_id}*.log")))
    proc = await Proc.start(argv, tmp / f"broker-{broker_id}-{n}.log")
    await proc.ready_line()
    return proc


async def start_router(tmp: Path, cluster: Path, *args: str, router_id: str = "r1",
                       heartbeat: str = "0.2") -> Proc:
    argv = zq_argv("--log-level", "info", "router", "--bind", "tcp://127.0.0.1:*",
                   "--cluster", str(cluster), "--id", router_id, "--heartbeat", heartbeat,
                   *args)
    n = len(list(tmp.glob(f"router-{router_id}*.log")))
    proc = await Proc.start(argv, tmp / f"router-{router_id}-{n}.log")
    await proc.ready_line()
    return proc


async def zq_cli(*args: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run the real ``zq`` command line; its exit code and its stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *zq_argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=str(ROOT))
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


class Wire:
    """A raw DEALER speaking the protocol frame by frame (for checks of what is sent)."""

    def __init__(self, endpoint: str, identity: bytes = b"zq-wire-test") -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)

    async def send(self, frame: f.Frame) -> None:
        await self.sock.send_multipart(codec.encode(frame))

    async def recv(self, timeout: float = 5.0) -> f.Frame:
        parts = await asyncio.wait_for(self.sock.recv_multipart(), timeout)
        return codec.decode(parts)

    async def expect(self, kind: type[Any], timeout: float = 5.0) -> Any:
        """The next frame of type ``kind`` (heartbeats skipped)."""
        while True:
            fr = await self.recv(timeout)
            if isinstance(fr, kind):
                return fr
            if not isinstance(fr, f.Heartbeat):
                raise AssertionError(f"expected {kind.__name__}, got {fr!r}")

    async def hello(self, **kw: Any) -> f.Welcome:
        await self.send(f.Hello("wire", **kw))
        w: f.Welcome = await self.expect(f.Welcome)
        return w

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.close(linger=0)
        self.ctx.term()
