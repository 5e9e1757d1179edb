"""A one-broker cluster behind a router, as one server under test (``zq-router``).

``zq broker --cluster FILE --id b1`` and ``zq router --cluster FILE`` in front of it:
producers publish through the router; consumers locate their queue through it and
consume from the broker directly (PROTOCOL.md section 17). The server's CPU is both
processes'; its RSS (sampled through ``pid``) is the router's, the extra process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from perf.server import Server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class RouterCluster:
    """The broker and the router, started and stopped together."""

    def __init__(self, log_dir: Path, storage: str, data: Path) -> None:
        self.name = "zq broker behind zq router"
        data.mkdir(parents=True, exist_ok=True)
        cluster = data / "cluster.toml"
        cluster.write_text(f'cluster_id = "perf"\nversion = 1\n[[brokers]]\nid = "b1"\n'
                           f'endpoint = "tcp://127.0.0.1:{_free_port()}"\n', encoding="utf-8")
        store = (["--storage", "memory"] if storage == "memory" else
                 ["--storage", "sqlite", "--data", str(data / "b1"), "--fsync",
                  "normal" if storage == "sqlite-normal" else "full"])
        zq = [sys.executable, "-m", "zq"]
        self.broker = Server("zq broker (cluster)", [*zq, "broker", "--cluster", str(cluster),
                                                     "--id", "b1", *store], "ZQ READY ",
                             log_dir / "zq-cluster-broker.log")
        self.router = Server("zq router", [*zq, "router", "--bind", "tcp://127.0.0.1:*",
                                           "--cluster", str(cluster), "--id", "perf-r1"],
                             "ZQ READY ", log_dir / "zq-router.log")
        self.endpoint = ""
        self.broker_endpoint = ""

    def __enter__(self) -> RouterCluster:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.router.pid

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The broker's process if it has exited, else the router's (a run checks it)."""
        b = self.broker.proc
        if b is not None and b.poll() is not None:
            return b
        return self.router.proc

    def start(self, timeout: float = 15.0) -> str:
        self.broker_endpoint = self.broker.start(timeout)
        self.endpoint = self.router.start(timeout)
        return self.endpoint

    def cpu(self) -> float:
        return self.broker.cpu() + self.router.cpu()

    def stop(self, within: float = 10.0) -> int:
        rc_router = self.router.stop(within)
        rc_broker = self.broker.stop(within)
        return rc_router or rc_broker

    def kill(self) -> None:
        self.router.kill()
        self.broker.kill()

    def stderr(self) -> str:
        return self.router.stderr() + "\n--- broker ---\n" + self.broker.stderr()
