"""A replicated broker as one server under test (``zq-ha``): etcd and two nodes of
``zq broker --ha`` on one machine (one shared disk), both sqlite with synchronous=FULL.

The clients use the primary's endpoint; the run starts once the standby is named in
``sync``, so every confirm waited for the standby's commit as well as the primary's.
The server's CPU is both nodes' (etcd's is left out: it only renews a lease); its RSS
(sampled through ``pid``) is the primary's. Needs etcd (Debian's ``etcd-server``)
and the HA extra (``pip install 'zq[ha]'``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from perf.server import Server, ServerError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class HaPair:
    """etcd, then node n0 (it becomes primary), then node n1 (its standby)."""

    def __init__(self, log_dir: Path, data: Path) -> None:
        self.name = "zq broker --ha (primary and synchronous standby)"
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.log_dir = log_dir
        self.etcd_port = _free_port()
        self.etcd: subprocess.Popen[bytes] | None = None
        url = f"etcd://127.0.0.1:{self.etcd_port}"
        zq = [sys.executable, "-m", "zq"]
        self.nodes = [Server(f"zq broker --ha n{i}", [
            *zq, "broker", "--id", "perf", "--ha", url, "--ha-node", f"n{i}",
            "--bind", f"tcp://127.0.0.1:{_free_port()}", "--storage", "sqlite",
            "--data", str(data / f"n{i}"), "--fsync", "full"], "ZQ READY ",
            log_dir / f"zq-ha-n{i}.log") for i in range(2)]
        self.endpoint = ""

    def __enter__(self) -> HaPair:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """A node's process if it has exited, else the primary's (a run checks it)."""
        for node in self.nodes:
            p = node.proc
            if p is not None and p.poll() is not None:
                return p
        return self.nodes[0].proc

    def start(self, timeout: float = 30.0) -> str:
        self._start_etcd(timeout)
        self.endpoint = self.nodes[0].start(timeout)
        self._wait_key("leader", "node", "n0", timeout)
        self.nodes[1].start(timeout)
        self._wait_key("sync", "standby", "n1", timeout)
        return self.endpoint

    def _start_etcd(self, timeout: float) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise ServerError("zq-ha needs etcd: apt-get install etcd-server")
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{_free_port()}"
        log = (self.log_dir / "etcd.log").open("ab")
        self.etcd = subprocess.Popen(
            [binary, "--name", "perf", "--data-dir", str(self.data / "etcd"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"perf={peer}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_key("", "", "", timeout)

    def _wait_key(self, key: str, field: str, want: str, timeout: float) -> None:
        """Until etcd answers (``key`` empty), or ``key``'s JSON has ``field == want``."""
        import aetcd

        async def look() -> bool:
            client = aetcd.Client("127.0.0.1", self.etcd_port, timeout=1)
            try:
                got = await client.get(f"/zq/zq/brokers/perf/{key}".encode())
            except aetcd.ClientError:
                return False
            finally:
                await client.close()
            if not key:
                return True
            return got is not None and json.loads(got.value).get(field) == want

        deadline = time.monotonic() + timeout
        while not asyncio.run(look()):
            if time.monotonic() > deadline:
                raise ServerError(f"zq-ha: etcd never said {key or 'hello'} "
                                  f"{field}={want!r} within {timeout:g}s")
            time.sleep(0.05)

    def cpu(self) -> float:
        return sum(node.cpu() for node in self.nodes)

    def stop(self, within: float = 10.0) -> int:
        rc_standby = self.nodes[1].stop(within)
        rc_primary = self.nodes[0].stop(within)
        self._stop_etcd()
        return rc_primary or rc_standby

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
        self._stop_etcd()

    def _stop_etcd(self) -> None:
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.send_signal(signal.SIGTERM)
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()

    def stderr(self) -> str:
        return "\n".join(f"--- n{i} ---\n{node.stderr()}" for i, node in enumerate(self.nodes))
