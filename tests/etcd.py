"""A real single-member etcd for tests, on free loopback ports (Debian's etcd-server;
scripts/test installs it when it is missing and it can). A missing etcd fails the
test that needs it: it does not skip."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from pathlib import Path

import aetcd

from tests.helpers import free_port

SERVING = "serving client traffic"  # etcd's log line once clients are served


class Etcd:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log = data.with_suffix(".log")

    async def start(self, timeout: float = 20.0) -> Etcd:
        binary = shutil.which("etcd")
        assert binary, "etcd is not installed: scripts/test installs Debian's etcd-server"
        client_url = f"http://127.0.0.1:{self.port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--name", "t", "--data-dir", str(self.data), "--logger", "zap",
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"t={peer_url}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(self._until_serving(), timeout)
        return self

    async def _until_serving(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        with self.log.open("ab") as log:
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    raise AssertionError(f"etcd exited before serving; see {self.log}")
                log.write(line)
                if SERVING.encode() in line:
                    break
        # Keep draining its log so that a full pipe never blocks it.
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        with self.log.open("ab") as log:
            while line := await self.proc.stderr.readline():
                log.write(line)

    def client(self) -> aetcd.Client:
        return aetcd.Client("127.0.0.1", self.port, timeout=1)

    def pause(self) -> None:
        """SIGSTOP: etcd answers nothing (as when it is cut off) until :meth:`resume`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
            await self.proc.wait()
