"""``zq broker --cluster FILE --id NAME`` as real processes (PROTOCOL.md section 17).

It binds its entry's endpoint, keeps its id in the data folder and refuses another,
creates only the queues placed on it and answers MOVED (with where) for the others,
answers LOCATE, and takes a newer cluster file on SIGHUP.
"""

from __future__ import annotations

import signal
from pathlib import Path

import zq
from tests.cluster_helpers import Wire, ports_of, start_cluster_broker, write_cluster
from tests.helpers import eventually
from tests.procs import Proc, zq_argv
from zq.cluster import load, place
from zq.errors import Moved
from zq.protocol import frames as f


async def test_a_clustered_broker_serves_its_own_names_and_moves_the_others(
        tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    eps = write_cluster(file, ["b1", "b2"])
    cfg = load(file)
    mine = next(n for n in (f"q{i}" for i in range(100)) if place(n, cfg) == "b1")
    theirs = next(n for n in (f"q{i}" for i in range(100)) if place(n, cfg) == "b2")
    b1 = await start_cluster_broker(tmp_path, file, "b1")
    wire = Wire(b1.endpoint)
    try:
        assert b1.endpoint == eps["b1"]  # bound where the file says
        assert (tmp_path / "data-b1" / "broker-id").read_text().strip() == "b1"
        welcome = await wire.hello(producer=b"p" * 16)
        assert welcome.cluster == {"id": "test", "version": 1, "node": "b1", "role": "broker"}
        await wire.send(f.Publish(theirs, 1, [b"x"]))
        err = await wire.expect(f.Error)
        assert (err.code, err.ref) == (Moved.code, 1)
        assert err.info == {"queue": theirs, "broker": "b2", "endpoint": eps["b2"],
                            "version": 1}
        await wire.send(f.Publish(mine, 2, [b"x"]))
        assert (await wire.expect(f.Confirm)).entries == [(2, 1, 1)]
        await wire.send(f.Locate(3, theirs))
        loc = await wire.expect(f.Location)
        assert loc.loc == {"queue": theirs, "broker": "b2", "endpoint": eps["b2"],
                           "version": 1, "exists": False}
        await wire.send(f.Locate(4, mine))
        assert (await wire.expect(f.Location)).loc["exists"] is True
        async with zq.Client(b1.endpoint) as c:
            assert theirs not in (await c.stats())["queues"]
    finally:
        wire.close()
        await b1.terminate_and_expect_exit(0)


async def test_a_data_folder_of_another_broker_id_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    write_cluster(file, ["b1", "b2"])
    b1 = await start_cluster_broker(tmp_path, file, "b1")
    await b1.terminate_and_expect_exit(0)
    argv = zq_argv("broker", "--cluster", str(file), "--id", "b2", "--data",
                   str(tmp_path / "data-b1"))
    p = await Proc.start(argv, tmp_path / "wrong-id.log")
    assert await p.wait(15) == 2
    assert "holds the data of broker 'b1'" in p.stderr()
    argv = zq_argv("broker", "--cluster", str(file), "--id", "b9", "--data",
                   str(tmp_path / "data-b9"))
    p = await Proc.start(argv, tmp_path / "unknown-id.log")
    assert await p.wait(15) == 2
    assert "b9" in p.stderr()


async def test_sighup_takes_the_newer_cluster_file(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    eps = write_cluster(file, ["b1", "b2"])
    b1 = await start_cluster_broker(tmp_path, file, "b1")
    wire = Wire(b1.endpoint)
    try:
        await wire.hello()
        write_cluster(file, ["b1", "b2", "b3"], version=2, ports=ports_of(eps))
        b1.signal(signal.SIGHUP)
        cfg2 = load(file)
        on_b3 = next(n for n in (f"n{i}" for i in range(100)) if place(n, cfg2) == "b3")

        async def moved_to_b3() -> bool:
            await wire.send(f.Locate(1, on_b3))
            loc = await wire.expect(f.Location)
            return bool(loc.loc["broker"] == "b3" and loc.loc["version"] == 2)

        await eventually(moved_to_b3, "the broker to take version 2", 5)
    finally:
        wire.close()
        await b1.terminate_and_expect_exit(0)
