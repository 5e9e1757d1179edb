"""``python -m perf topics``: a publish to a topic with 1, 5 and 20 bindings (issue 17).

One run, on loopback, one measurement after another:

* topic, k bindings (k in ``bindings``, 1, 5 and 20 by default): a fresh
  ``zq broker --storage sqlite`` (``--fsync full``, or ``normal``) on a fresh data
  folder; k queues ``t<k>.q<j>`` bound to topic ``t<k>`` with no pattern (every key);
  one producer (``zq.Client`` in this process) publishes N bodies to the topic with
  ``publish_many(None, batch, topic=..., key=KEY)`` from ``window / batch`` concurrent
  tasks; first publish to last confirm. The broker is then stopped with SIGTERM (it
  checkpoints the WAL) and the database measured (below).
* queue, the baseline: the same on a fresh broker, the N bodies published to one plain
  queue (``publish_many(queue, batch)``).
* relay (unless left out): the bare ZeroMQ relay of ``perf throughput`` on the same N
  bodies, batches and window (:func:`perf.harness.run` "baseline": a producer and a
  consumer process). It stores nothing and confirms nothing: its rate is publish to
  last delivery, an upper bound of what the machine moves, not a durable figure.

``rounds`` times, every other round in reverse order; the table shows medians.

Stored bytes: ``zq.db`` plus ``zq.db-wal`` (if left) of the stopped broker, less those
of an empty database made the same way (a broker started and stopped on a fresh
folder, measured once), per message published and per copy stored (k per message; one
for the plain queue). The rows are then counted with sqlite3: ``messages`` must hold
N x k rows (N per queue), ``bodies`` N (one per body, shared by its k copies) for
k > 1 and none for k = 1 (one copy: the body stays in its row); a miscount fails the
run. ``dbstat`` gives the bytes of each table and index, in the JSON.

Rates are N / seconds (msg/s: bodies published and confirmed) and N x k / seconds
(copies/s). CPU seconds of the broker and of this process (the producer) are read from
/proc around the timed part. Logs, and ``topics.json`` with everything, are left in the
run's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zq
from perf import harness, server
from perf.backlog import run_async
from perf.common import INDEX, cpu_seconds, make_bodies
from perf.config import DEFAULT_WINDOW, LoadConfig
from perf.progress import BAR
from perf.report import footer, machine, scenario_header

DEFAULT_MESSAGES = 50_000
QUICK_MESSAGES = 5_000
DEFAULT_ROUNDS = 3
QUICK_ROUNDS = 1
DEFAULT_BINDINGS = (1, 5, 20)
MAX_BINDINGS = 1_000  # zq.core.topics.MAX_BINDINGS: per topic
KEY = "perf.key"  # every publish's routing key (the bindings take every key)
QUEUE = "plain"  # the baseline's queue
DB_FILES = ("zq.db", "zq.db-wal")
STOP_WITHIN = 120.0  # seconds for a broker to stop: it checkpoints a WAL of up to 1e6 rows


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    messages: int = DEFAULT_MESSAGES
    rounds: int = DEFAULT_ROUNDS
    bindings: tuple[int, ...] = DEFAULT_BINDINGS
    size: int = 100
    batch: int = 100  # bodies per publish_many
    window: int = DEFAULT_WINDOW  # the producer's publish_window (tasks: window / batch)
    fsync: str = "full"  # the broker's --fsync
    relay: bool = True  # also the bare relay, in the same rounds
    timeout: float = 300.0  # seconds one measurement may take
    keep_data: bool = False  # keep every data folder (else removed once measured)

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "batch", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.bindings:
            raise ValueError("at least one binding count")
        if len(set(self.bindings)) != len(self.bindings):
            raise ValueError("a binding count given twice")
        if not all(1 <= k <= MAX_BINDINGS for k in self.bindings):
            raise ValueError(f"binding counts must be 1..{MAX_BINDINGS}")
        if self.size < INDEX.size:
            raise ValueError(f"size must be >= {INDEX.size} bytes (a body carries its index)")
        if self.fsync not in ("full", "normal"):
            raise ValueError("fsync must be full or normal")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")

    @property
    def tasks(self) -> int:
        return max(1, self.window // self.batch)

    @property
    def storage(self) -> str:
        return "sqlite" if self.fsync == "full" else "sqlite-normal"

    @property
    def labels(self) -> list[str]:
        """The measurements of one round, in the order of even rounds."""
        return ["queue", *(f"t{k}" for k in self.bindings), *(["relay"] if self.relay else [])]

    def describe(self) -> str:
        ks = ", ".join(map(str, self.bindings))
        return (f"{self.rounds} round(s) of {self.messages:,} x {self.size:,} B, one producer "
                f"(publish_many batches of {self.batch:,} from {self.tasks} task(s), window "
                f"{self.window:,}) to a topic with {ks} binding(s) (every key), against a "
                f"plain queue{' and the bare relay' if self.relay else ''}; a fresh sqlite "
                f"broker (--fsync {self.fsync}) for each measurement")


@dataclass(slots=True)
class Measure:
    """One measurement: its rate, what it stored, and the CPU seconds spent."""

    label: str  # queue, t<k>, relay
    bindings: int  # k; 0 for the queue and the relay
    seconds: float
    per_s: float  # bodies published (relay: delivered) per second
    copies: int  # messages stored: N x k (N for the queue; 0 for the relay)
    db_bytes: int = 0  # zq.db + zq.db-wal of the stopped broker
    stored_bytes: int = 0  # db_bytes less the empty database's
    bytes_per_message: float = 0.0
    bytes_per_copy: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)  # counted with sqlite3
    tables: dict[str, int] = field(default_factory=dict)  # bytes per table/index (dbstat)
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def copies_per_s(self) -> float:
        return self.per_s * max(1, self.bindings)


@dataclass(slots=True)
class Round:
    number: int
    order: list[str]
    got: dict[str, Measure] = field(default_factory=dict)

    def ratio(self, label: str, to: str) -> float | None:
        a, b = self.got.get(label), self.got.get(to)
        return a.per_s / b.per_s if a is not None and b is not None and b.per_s else None


@dataclass(slots=True)
class TopicsResult:
    rounds: list[Round]
    empty_db_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    folder: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def measures(self, label: str) -> list[Measure]:
        return [m for r in self.rounds if (m := r.got.get(label)) is not None]

    def median(self, label: str, what: str) -> float | None:
        xs = [float(getattr(m, what)) for m in self.measures(label)]
        return statistics.median(xs) if xs else None

    def median_ratio(self, label: str, to: str) -> float | None:
        xs = [x for r in self.rounds if (x := r.ratio(label, to)) is not None]
        return statistics.median(xs) if xs else None


class Failed(RuntimeError):
    """A measurement did not reach its end, or its counts were wrong."""


# ------------------------------------------------------------------ clients


async def _fan(send: Callable[[list[bytes]], Awaitable[list[int]]],
               batches: list[list[bytes]], tasks: int) -> int:
    """Every batch through ``send`` from ``tasks`` concurrent tasks; confirmed ids."""
    it = iter(batches)
    confirmed = 0

    async def work() -> None:
        nonlocal confirmed
        for chunk in it:
            ids = await send(chunk)  # not ``confirmed += len(await ...)``: that reads
            confirmed += len(ids)  # ``confirmed`` before the await, losing other tasks'


    async with asyncio.TaskGroup() as tg:
        for _ in range(tasks):
            tg.create_task(work())
    return confirmed


async def _publish(endpoint: str, k: int, batches: list[list[bytes]], n: int,
                   cfg: TopicsConfig, mark: Callable[[], None]) -> float:
    """Bind k queues to topic ``t<k>`` (k = 0: declare the plain queue), then publish
    every batch there; the seconds from the first publish to the last confirm.
    ``mark`` is called just before the first publish."""
    topic = f"t{k}"
    async with zq.Client(endpoint, name="perf-topics", publish_window=cfg.window) as client:
        if k:
            for j in range(k):
                await client.bind(topic, f"{topic}.q{j:02d}")
        else:
            await client.declare_queue(QUEUE)
        queue, to = (None, topic) if k else (QUEUE, None)

        async def send(chunk: list[bytes]) -> list[int]:
            return await client.publish_many(queue, chunk, topic=to,
                                             key=KEY if to is not None else None)

        mark()
        t0 = time.monotonic()
        async with asyncio.timeout(cfg.timeout):
            confirmed = await _fan(send, batches, cfg.tasks)
        seconds = time.monotonic() - t0
        if k:
            t = next((t for t in await client.topics() if t["topic"] == topic), {})
            counted = (t.get("published"), t.get("copies"))
        else:
            stats = (await client.queue_info(QUEUE))["stats"]
            counted = (stats["ready"], stats["ready"])
    if confirmed != n or counted != (n, n * max(1, k)):
        raise Failed(f"{topic if k else QUEUE}: {confirmed:,} confirmed, the broker counted "
                     f"(published, copies) {counted}, expected {n:,} and {n * max(1, k):,}")
    return seconds


# ------------------------------------------------------------------ the store


def db_bytes(data: Path) -> int:
    """Bytes of the database files in ``data`` (the WAL too, if one was left)."""
    return sum((data / name).stat().st_size for name in DB_FILES if (data / name).exists())


def count_rows(db: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Rows of ``bodies`` and ``messages`` (and how they are spread), and the bytes of
    each table and index (``dbstat``; empty if this sqlite3 lacks it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:

        def one(sql: str) -> int:
            return int(c.execute(sql).fetchone()[0] or 0)

        per_queue = [int(x) for (x,) in c.execute(
            "SELECT count(*) FROM messages GROUP BY qid")]
        rows = {"bodies": one("SELECT count(*) FROM bodies"),
                "body_refs": one("SELECT sum(refs) FROM bodies"),
                "messages": one("SELECT count(*) FROM messages"),
                "shared": one("SELECT count(*) FROM messages WHERE body_ref IS NOT NULL"),
                "queues_with_messages": len(per_queue),
                "fewest_per_queue": min(per_queue, default=0),
                "most_per_queue": max(per_queue, default=0),
                "producer_rows": one("SELECT count(*) FROM producers")}
        tables: dict[str, int] = {}
        with contextlib.suppress(sqlite3.Error):
            tables = {str(name): int(b) for name, b in c.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")}
    return rows, tables


def check_rows(rows: dict[str, int], n: int, k: int) -> list[str]:
    """What is wrong with the counted rows of N bodies published to k queues (k = 0:
    one plain queue); empty if nothing."""
    queues = max(1, k)
    want = {"messages": n * queues, "queues_with_messages": queues,
            "fewest_per_queue": n, "most_per_queue": n,
            "bodies": n if k > 1 else 0, "body_refs": n * k if k > 1 else 0,
            "shared": n * k if k > 1 else 0}
    return [f"{name} {rows.get(name, 0):,}, expected {v:,}" for name, v in want.items()
            if rows.get(name, 0) != v]


# --------------------------------------------------------------------- run


def _broker(folder: Path, cfg: TopicsConfig, data: Path) -> server.Server:
    return server.zq_broker(folder / "zq-broker.log", cfg.storage, data)


def _empty(folder: Path, cfg: TopicsConfig) -> int:
    """The database bytes of a broker started and stopped on a fresh folder."""
    with _fresh(folder / "data-empty", cfg) as data:
        with _broker(folder, cfg, data) as srv:
            srv.start()
            _stopped(srv)
        return db_bytes(data)


@contextlib.contextmanager
def _fresh(data: Path, cfg: TopicsConfig) -> Iterator[Path]:
    """``data``, emptied first (a --dir used before), removed afterwards unless kept."""
    shutil.rmtree(data, ignore_errors=True)
    try:
        yield data
    finally:
        if not cfg.keep_data:
            shutil.rmtree(data, ignore_errors=True)


def _stopped(srv: server.Server) -> None:
    rc = srv.stop(STOP_WITHIN)
    if rc != 0:
        raise Failed(f"{srv.name} exited {rc} on SIGTERM, expected 0")


def _topic(r: int, label: str, k: int, batches: list[list[bytes]], cfg: TopicsConfig,
           folder: Path, empty: int) -> Measure:
    """One measurement on a fresh broker: k bindings (0: the plain queue)."""
    n = cfg.messages
    with _fresh(folder / f"data-r{r + 1}-{label}", cfg) as data:
        with _broker(folder, cfg, data) as srv:
            srv.start()
            at: dict[str, float] = {}

            def mark() -> None:
                at.update(broker=srv.cpu(), perf=cpu_seconds())

            seconds = run_async(_publish(srv.endpoint, k, batches, n, cfg, mark))
            cpu = {"broker": round(srv.cpu() - at["broker"], 3),
                   "perf": round(cpu_seconds() - at["perf"], 3)}
            with BAR.scope("stopping"):
                _stopped(srv)
        size = db_bytes(data)  # before sqlite3 opens it (that may make a -wal)
        rows, tables = count_rows(data / DB_FILES[0])
    wrong = check_rows(rows, n, k)
    if wrong:
        raise Failed(f"{label}, round {r + 1}: " + "; ".join(wrong))
    copies = n * max(1, k)
    stored = size - empty
    return Measure(label, k, round(seconds, 4), round(n / seconds, 1), copies, size, stored,
                   round(stored / n, 1), round(stored / copies, 1), rows, tables, cpu)


def _relay(cfg: TopicsConfig, folder: Path) -> Measure:
    lc = LoadConfig(messages=cfg.messages, batch=cfg.batch, size=cfg.size,
                    window=cfg.window, timeout=cfg.timeout)
    res = harness.run("baseline", lc, folder)
    if not res.ok:
        raise Failed("relay: " + "; ".join(res.problems))
    return Measure("relay", 0, round(res.elapsed_s, 4), round(res.msg_per_s, 1), 0,
                   cpu_s={"relay": res.server_cpu_s, "clients": res.client_cpu_s})


def run(cfg: TopicsConfig, folder: Path, say: Callable[[str], None] = print) -> TopicsResult:
    """The whole run in ``folder`` (logs, data folders, topics.json); every broker is
    stopped on the way out, whatever happens."""
    bodies = make_bodies(0, cfg.messages, cfg.size)
    batches = [bodies[i:i + cfg.batch] for i in range(0, cfg.messages, cfg.batch)]
    res = TopicsResult([], loadavg_before=[round(x, 2) for x in os.getloadavg()],
                       folder=str(folder))
    try:
        with BAR.scope("empty database"):
            res.empty_db_bytes = _empty(folder, cfg)
        for r in range(cfg.rounds):
            # Every other round in reverse: a machine that slows down (or warms up)
            # during a round does not always favour the same measurement.
            order = cfg.labels if r % 2 == 0 else cfg.labels[::-1]
            rnd = Round(r + 1, order)
            res.rounds.append(rnd)
            with BAR.scope(f"round {r + 1}/{cfg.rounds}"):
                for label in order:
                    with BAR.scope(label):
                        if label == "relay":
                            m = _relay(cfg, folder)
                        else:
                            k = 0 if label == "queue" else int(label[1:])
                            m = _topic(r, label, k, batches, cfg, folder, res.empty_db_bytes)
                    rnd.got[label] = m
            say(f"round {r + 1}: " + ", ".join(f"{m.label} {m.per_s:,.0f}"
                                               for m in rnd.got.values()) + " msg/s")
    except (Failed, zq.ZqError, TimeoutError, server.ServerError, harness.RunFailed,
            OSError, sqlite3.Error) as exc:
        res.problems.append(f"{type(exc).__name__}: {exc}")
    res.loadavg_after = [round(x, 2) for x in os.getloadavg()]
    return res


# ------------------------------------------------------------------ report


def header(cfg: TopicsConfig) -> str:
    return scenario_header("topics", cfg, relay=False)


def _fmt(x: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _rows(res: TopicsResult, cfg: TopicsConfig) -> Iterator[list[str]]:
    yield ["publish to", "bindings", "msg/s", "copies/s", "vs queue", "vs relay",
           "B/message", "B/copy", "broker CPU/s"]
    for label in cfg.labels:
        ms = res.measures(label)
        if not ms:
            continue
        zq_run = label != "relay"
        cpu = (statistics.median(m.cpu_s["broker"] / m.seconds for m in ms)
               if zq_run else None)
        what = {"queue": f"queue {QUEUE}", "relay": "bare relay"}.get(label, f"topic {label}")
        yield [what, str(ms[0].bindings) if label.startswith("t") else "-",
               _fmt(res.median(label, "per_s")),
               _fmt(res.median(label, "copies_per_s")) if zq_run else "-",
               _fmt(res.median_ratio(label, "queue"), ".1%"),
               _fmt(res.median_ratio(label, "relay"), ".1%"),
               _fmt(res.median(label, "bytes_per_message"), ",.1f") if zq_run else "-",
               _fmt(res.median(label, "bytes_per_copy"), ",.1f") if zq_run else "-",
               _fmt(cpu, ".2f")]


def table(res: TopicsResult, cfg: TopicsConfig) -> str:
    rows = list(_rows(res, cfg))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if c >= 1 else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append(f"(medians of {len(res.rounds)} round(s); msg/s: bodies published, first "
                 f"publish to last confirm; copies/s: msg/s x bindings; B: zq.db(-wal) after "
                 f"SIGTERM less an empty database of {res.empty_db_bytes:,} B; the relay: "
                 f"publish to last delivery, nothing stored or confirmed)")
    lines += footer(res.problems, res.loadavg_before, res.loadavg_after, res.folder,
                    "topics.json")
    return "\n".join(lines)


def json_line(cfg: TopicsConfig, res: TopicsResult) -> str:
    d: dict[str, Any] = dataclasses.asdict(res)
    for r, rd in zip(res.rounds, d["rounds"], strict=True):
        for label, md in rd["got"].items():
            md["copies_per_s"] = (round(r.got[label].copies_per_s, 1) if label != "relay"
                                  else None)
            md["vs_queue"] = r.ratio(label, "queue")
            md["vs_relay"] = r.ratio(label, "relay")
    medians = {label: {"per_s": res.median(label, "per_s"),
                       "copies_per_s": res.median(label, "copies_per_s"),
                       "vs_queue": res.median_ratio(label, "queue"),
                       "vs_relay": res.median_ratio(label, "relay"),
                       "bytes_per_message": res.median(label, "bytes_per_message"),
                       "bytes_per_copy": res.median(label, "bytes_per_copy")}
               for label in cfg.labels if res.measures(label)}
    d.update(scenario="topics", ok=res.ok, medians=medians, config=dataclasses.asdict(cfg),
             machine=machine())
    return json.dumps(d, sort_keys=True)
