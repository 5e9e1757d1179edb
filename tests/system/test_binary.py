"""The single-file binary (issue 14, acceptance 1): built by scripts/build-binary, copied
alone into an empty folder and run with an empty environment (no PATH, no Python, no
virtual environment), it serves the SDK, runs its own client commands and a worker whose
module lies beside it, and needs no library beyond the C library's own.

The build (PyInstaller, about 15 s; once per .venv also 15 s to install it and compile
its bootloader) goes into this module's temporary folder, so what is tested is what the
sources make now.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import zq
from tests.cluster_helpers import write_cluster
from tests.helpers import free_port
from tests.procs import ROOT, Proc

# The build runs in the fixture, which the first test's timeout counts.
pytestmark = pytest.mark.timeout(420)

# What the binary may take from the host: the C library and its parts (libc, libm, libdl,
# libpthread, librt, libutil, the dynamic loader, the kernel's vDSO). libstdc++ and
# libgcc_s, which libzmq needs, are not in this set: the binary carries its own copies.
BASE_LIBS = re.compile(
    r"linux-vdso\.so\.1|ld-linux[-a-z0-9_.]*\.so\.\d+|lib(c|m|dl|pthread|rt|util)\.so\.\d+")

# A user's task module, placed beside the binary: an async task, and a plain function
# run in a process pool (the pool's processes are the binary started again).
TASKS = '''\
import os

import zq

app = zq.App(name="edge")


@app.task(queue="edge.tasks")
async def double(n: int) -> int:
    return 2 * n


@app.task(queue="edge.tasks", executor="process")
def pool_pid() -> int:
    return os.getpid()
'''


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("binary")
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-binary"), "--dist", str(out / "dist"),
         "--work", str(out / "work"), "--no-check"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert build.returncode == 0, f"scripts/build-binary failed:\n{build.stderr[-6000:]}"
    path = out / "dist" / "zq"
    assert path.stat().st_size <= 40 * 1024 * 1024, f"{path.stat().st_size} bytes: over 40 MB"
    yield path
    shutil.rmtree(out / "work", ignore_errors=True)


@pytest.fixture
def alone(binary: Path, tmp_path: Path) -> Path:
    """The binary copied alone into an empty folder; returns that folder. Beside it in
    tmp_path: the HOME and TMPDIR it is given, and a folder to start a worker from."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy2(binary, folder / "zq")
    for sub in ("home", "unpack", "elsewhere"):
        (tmp_path / sub).mkdir()
    return folder


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with nothing from ours: no PATH, no PYTHON*, no VIRTUAL_ENV."""
    return {"HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "unpack"), **extra}


async def start(folder: Path, tmp_path: Path, log: str, *args: str,
                cwd: Path | None = None, **env: str) -> Proc:
    """``FOLDER/zq ARGS`` in the bare environment (plus ``env``), in ``cwd`` or FOLDER."""
    argv = [str(folder / "zq"), *args]
    with open(tmp_path / log, "ab") as fh:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=fh, env=bare_env(tmp_path, **env), cwd=str(cwd or folder))
    return Proc(proc, tmp_path / log, argv)


@pytest.fixture
def admin_port() -> int:
    return free_port()


@pytest.fixture
async def broker(alone: Path, tmp_path: Path, admin_port: int) -> AsyncIterator[Proc]:
    """``./zq broker`` from the lone binary's folder, bare, with its admin listener on
    ``admin_port``; SIGTERM must stop it with 0."""
    proc = await start(alone, tmp_path, "broker.log", "broker", "--bind", "tcp://127.0.0.1:*",
                       "--data", "./data", "--admin-bind", f"127.0.0.1:{admin_port}")
    try:
        await proc.ready_line(timeout=30)
        yield proc
        await proc.terminate_and_expect_exit(0, within=10)
    finally:
        await proc.kill()


async def run(folder: Path, tmp_path: Path, *args: str, timeout: float = 30.0
              ) -> tuple[int, str, str]:
    """``./zq ARGS`` in FOLDER, bare, to the end: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "./zq", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=bare_env(tmp_path), cwd=str(folder))
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port``: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def load_tasks(path: Path, endpoint: str) -> ModuleType:
    """The task module as the test's producer sees it (same module name, so the same
    task names), its App pointed at ``endpoint``; not put in sys.modules."""
    spec = importlib.util.spec_from_file_location("edgejob", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.app.endpoint = endpoint
    return module


async def test_lone_binary_serves_the_sdk_its_commands_and_a_worker(
        alone: Path, broker: Proc, admin_port: int, tmp_path: Path) -> None:
    assert sorted(p.name for p in alone.iterdir()) == ["data", "zq"]  # zq, and its --data
    ep = broker.endpoint
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ep), ep

    rc, out, err = await run(alone, tmp_path, "--version")
    assert (rc, out.strip()) == (0, f"zq, version {zq.__version__}"), err

    # The package data: the admin dashboard's files, read with importlib.resources.
    web = ROOT / "zq" / "admin" / "web"
    for path, name in (("/", "index.html"), ("/app.js", "app.js")):
        assert await http_get(admin_port, path) == (200, (web / name).read_bytes()), path

    # The SDK, from this process, against the binary's broker.
    async with zq.Client(ep, name="sdk") as client:
        bodies = [b"reading %d" % i for i in range(50)]
        ids = await asyncio.gather(*(client.publish("edge.sdk", b) for b in bodies))
        assert len(set(ids)) == 50
        got: list[bytes] = []
        async with asyncio.timeout(30), client.consume("edge.sdk", prefetch=20) as consumer:
            async for msg in consumer:
                got.append(msg.body)
                await msg.ack()
                if len(got) == len(bodies):
                    break
        assert sorted(got) == sorted(bodies)

    # The binary's own client commands, bare as well.
    rc, out, err = await run(alone, tmp_path, "publish", "edge.cli", "hello", "world",
                             "--endpoint", ep)
    assert rc == 0, err
    assert len(out.split()) == 2, out
    rc, out, err = await run(alone, tmp_path, "stats", "--json", "--endpoint", ep)
    assert rc == 0, err
    stats = json.loads(out)
    assert stats["queues"]["edge.sdk"]["acked"] == 50
    assert stats["queues"]["edge.cli"]["ready"] == 2
    rc, out, err = await run(alone, tmp_path, "consume", "edge.cli", "--count", "2",
                             "--endpoint", ep)
    assert (rc, out.splitlines()) == (0, ["hello", "world"]), err

    # A worker whose module lies beside the binary, found through PYTHONPATH (started
    # from another folder, so the current directory does not find it).
    (alone / "edgejob.py").write_text(TASKS)
    worker = await start(alone, tmp_path, "worker.log", "worker", "edgejob:app",
                         "--endpoint", ep, cwd=tmp_path / "elsewhere",
                         PYTHONPATH=str(alone))
    try:
        ready = await worker.wait_for_line("zq worker ready: ", timeout=30)
        assert "edge.tasks" in ready, ready
        tasks = load_tasks(alone / "edgejob.py", ep)
        try:
            handle = await tasks.double.delay(21)
            assert await handle.result(timeout=30) == 42
            handle = await tasks.pool_pid.delay()
            pid = await handle.result(timeout=60)
            assert isinstance(pid, int)
            assert pid not in (worker.pid, os.getpid())
        finally:
            await tasks.app.close()
        await worker.terminate_and_expect_exit(0, within=15)
    finally:
        await worker.kill()


async def test_lone_binary_runs_a_router_in_front_of_its_broker(alone: Path,
                                                                  tmp_path: Path) -> None:
    cluster = alone / "cluster.toml"
    write_cluster(cluster, ["b1"])
    started: list[Proc] = []
    try:
        b1 = await start(alone, tmp_path, "b1.log", "broker", "--cluster", "cluster.toml",
                         "--id", "b1", "--data", "./data-b1")
        started.append(b1)
        await b1.ready_line(timeout=30)
        router = await start(alone, tmp_path, "router.log", "router", "--bind",
                             "tcp://127.0.0.1:*", "--cluster", "cluster.toml", "--id", "r1")
        started.append(router)
        await router.ready_line(timeout=30)
        async with zq.Client(router.endpoint, name="sdk") as client:
            ids = await asyncio.gather(*(client.publish("edge.routed", b"m%d" % i)
                                         for i in range(20)))
            assert len(set(ids)) == 20
            got: list[bytes] = []
            async with asyncio.timeout(30), client.consume("edge.routed") as consumer:
                async for msg in consumer:
                    got.append(msg.body)
                    await msg.ack()
                    if len(got) == 20:
                        break
        assert sorted(got) == sorted(b"m%d" % i for i in range(20))
        for proc in reversed(started):
            await proc.terminate_and_expect_exit(0, within=10)
    finally:
        for proc in started:
            await proc.kill()


async def ldd(path: Path, unpacked: Path, *, from_unpacked: bool) -> list[str]:
    """Each library ``path`` needs that the unpacked folder does not hold: 'name => where'.
    ``from_unpacked``: loaded as zq loads it, with LD_LIBRARY_PATH naming that folder
    (the bootloader sets it for its child); else as the host loads the file itself."""
    env = {"PATH": os.environ.get("PATH", "")}
    if from_unpacked:
        env["LD_LIBRARY_PATH"] = str(unpacked)
    proc = await asyncio.create_subprocess_exec(
        "ldd", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env)
    out, _ = await proc.communicate()
    needed = []
    for line in out.decode().splitlines():
        words = line.split()
        if not words or "statically linked" in line:
            continue
        where = words[2] if len(words) > 2 and words[1] == "=>" else words[0]
        if not where.startswith(str(unpacked) + "/"):
            needed.append(f"{words[0]} => {where}")
    return needed


async def test_binary_and_what_it_unpacks_need_only_the_c_library(
        alone: Path, broker: Proc, tmp_path: Path) -> None:
    # A onefile binary unpacks into $TMPDIR/_MEIxxxxxx while it runs.
    unpacked = [p for p in (tmp_path / "unpack").iterdir() if p.name.startswith("_MEI")]
    assert len(unpacked) == 1, unpacked
    objects = [alone / "zq", *sorted(p for p in unpacked[0].rglob("*.so*") if p.is_file())]
    names = {p.name.split(".")[0] for p in objects}
    # What zq needs compiled: uvloop, pyzmq with its libzmq, msgpack, sqlite3.
    assert {"loop", "_zmq", "_cmsgpack", "_sqlite3", "libsqlite3", "libpython3"} <= names, names
    assert any(n.startswith("libzmq") for n in names), names
    outside = {}
    for obj in objects:
        found = await ldd(obj, unpacked[0], from_unpacked=obj != alone / "zq")
        needed = [n for n in found if not BASE_LIBS.fullmatch(Path(n.split(" => ")[0]).name)]
        if needed:
            outside[str(obj.relative_to(tmp_path))] = needed
    assert not outside, f"needs libraries from the host beyond the C library: {outside}"

    broker.signal(signal.SIGTERM)
    assert await broker.wait(10) == 0, broker.stderr()
    assert not unpacked[0].exists(), "the unpacked folder was left behind"
