"""``zq broker --ha`` as a new user meets it: a setting missing or wrong is a clear
error and exit 2; an etcd that is not there yet is said in the log, the node waits
for it (no ready line, nothing served) and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.helpers import eventually, free_port
from tests.procs import Proc, zq_argv


async def _run(tmp: Path, *args: str) -> tuple[int, str]:
    proc = await Proc.start(zq_argv("broker", *args), tmp / "broker.log")
    rc = await proc.wait(30)
    return rc, proc.stderr()


async def test_wrong_ha_settings_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    rc, err = await _run(tmp_path, "--ha", "etcd://127.0.0.1:2379", "--data", str(tmp_path))
    assert rc == 2
    assert "needs --id NAME" in err
    rc, err = await _run(tmp_path, "--ha", "http://127.0.0.1:2379", "--id", "B1")
    assert rc == 2
    assert "etcd://127.0.0.1:2379" in err
    rc, err = await _run(tmp_path, "--ha", "etcd://127.0.0.1:2379", "--id", "B1",
                         "--storage", "memory")
    assert rc == 2
    assert "needs --storage sqlite" in err
    rc, err = await _run(tmp_path, "--ha", "etcd://127.0.0.1:2379", "--id", "B1",
                         "--ha-ttl", "1")
    assert rc == 2
    assert "at least 2 seconds" in err


async def test_a_node_waits_for_etcd_and_stops_cleanly(tmp_path: Path) -> None:
    proc = await Proc.start(zq_argv("broker", "--id", "B1", "--data", str(tmp_path / "d"),
                                    "--ha", f"etcd://127.0.0.1:{free_port()}",
                                    "--bind", "tcp://127.0.0.1:*"), tmp_path / "node.log")
    try:
        await eventually(lambda: "etcd cannot be reached" in proc.stderr(),
                         "the log saying etcd is not there", 20, 0.1)
        assert proc.proc.returncode is None
        with_line = asyncio.ensure_future(proc.readline(0.5))
        try:
            await with_line
            raise AssertionError("a node without etcd printed a ready line")
        except TimeoutError:
            pass
    finally:
        proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0


async def test_a_replicas_folder_served_alone_forgets_its_position(tmp_path: Path) -> None:
    """Served without --ha its content moves on: it must not claim, later, to end where
    a replica's history does (it then counts as never replicated)."""
    from tests.system.durability_helpers import read_db
    from zq.persistence import WriteBatch
    from zq.persistence.sqlite import SqliteStore

    data = tmp_path / "d"
    store = SqliteStore(data)
    await store.open(1)
    await store.commit(WriteBatch(inserts=[(1, "q", None, [b"x"])], position=(4, 2)))
    await store.close()
    proc = await Proc.start(zq_argv("broker", "--data", str(data), "--storage", "sqlite",
                                    "--bind", "tcp://127.0.0.1:*"), tmp_path / "solo.log")
    await proc.ready_line()
    await proc.terminate_and_expect_exit(0)
    assert read_db(data / "zq.db", "SELECT term, seq FROM replica") == []
    assert "count as never replicated" in proc.stderr()
