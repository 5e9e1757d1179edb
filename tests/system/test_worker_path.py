"""``zq worker MODULE:ATTR --path DIR``: the App's module is found in DIR, started from
another folder (where a single-file binary's worker finds a module beside it)."""

from __future__ import annotations

from pathlib import Path

import zq
from tests.helpers import eventually
from tests.procs import Proc, start_broker, zq_argv
from zq.node.calls import TASK_HEADER, encode_body

APP = '''
import zq

app = zq.App()


@app.task(queue="pathjobs")
async def double(x: int) -> int:
    return 2 * x
'''


async def test_the_module_is_found_on_path(tmp_path: Path) -> None:
    folder = tmp_path / "apps"
    folder.mkdir()
    (folder / "pathapp.py").write_text(APP)
    broker = await start_broker(tmp_path)
    argv = zq_argv("worker", "pathapp:app", "--path", str(folder), "--endpoint",
                   broker.endpoint)
    worker = await Proc.start(argv, tmp_path / "worker.log")  # cwd: the repository
    try:
        await worker.wait_for_line("zq worker ready: ", timeout=15)
        async with zq.Client(broker.endpoint) as c:
            await c.publish("pathjobs", encode_body((21,), {}),
                            headers={TASK_HEADER: "pathapp.double"})

            async def ran() -> bool:
                q = (await c.stats())["queues"].get("pathjobs", {})
                return q.get("acked") == 1

            await eventually(ran, "the task run by the worker")
        await worker.terminate_and_expect_exit(0)
    finally:
        await worker.kill()
        await broker.terminate_and_expect_exit(0)
