"""The shape of one throughput run, shared by the zq run and the baseline run."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MESSAGES = 200_000
QUICK_MESSAGES = 20_000
DEFAULT_WINDOW = 10_000  # the SDK's default publish_window
ONE_MESSAGE_TASKS = 500  # concurrent publish() tasks per producer when batch == 1
RELAY_MODES = ("poll", "asyncio")
RELAY_IO = ("multipart", "parts")
STORAGES = ("memory", "sqlite", "sqlite-normal")  # sqlite: synchronous=FULL
# How zq producers tag their batches (perf.lanes): no options; a random priority 0-9 per
# batch; or batches round robin over these tenants, on queues declared with these weights.
LANES = ("plain", "priority", "tenant")
TENANT_WEIGHTS = {"t1": 1, "t2": 2, "t3": 3, "t4": 4}


@dataclass(frozen=True, slots=True)
class LoadConfig:
    messages: int = DEFAULT_MESSAGES
    producers: int = 1
    consumers: int = 1
    batch: int = 100  # bodies per publish_many (1: one publish() per message)
    prefetch: int = 1000  # consumer credit
    size: int = 100  # bytes per body (the first 8 carry the message's index)
    window: int = DEFAULT_WINDOW  # unconfirmed messages a producer may have
    tasks: int = 0  # concurrent publishing tasks per producer; 0 = derived (see below)
    timeout: float = 300.0  # seconds for one run before it is declared failed
    relay_mode: str = "poll"
    relay_io: str = "multipart"
    storage: str = "memory"  # the zq broker's store
    queues: int = 1  # batch j goes to queue j % queues (see perf.common.queue_of)
    partition: bool = False  # consumer c takes queues c, c + consumers, ... (else all)
    stamp: bool = False  # bodies carry their send time: publish->deliver, first delivery
    lanes: str = "plain"  # zq producers: plain, priority or tenant (see LANES)
    seed: int = 1  # lanes == "priority": the random priorities' seed

    def __post_init__(self) -> None:
        for name in ("messages", "producers", "consumers", "batch", "prefetch", "window",
                     "queues"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.size < 8:
            raise ValueError("size must be >= 8 bytes (a body carries its 8-byte index)")
        if self.stamp and self.size < 16:
            raise ValueError("size must be >= 16 bytes (a body carries its index and send time)")
        if self.partition and self.consumers > self.queues:
            raise ValueError("more consumers than queues to share among them")
        if self.tasks < 0:
            raise ValueError("tasks must be >= 0")
        if self.producers > self.messages:
            raise ValueError("more producers than messages")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")
        if self.relay_mode not in RELAY_MODES:
            raise ValueError(f"relay_mode must be one of {', '.join(RELAY_MODES)}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")
        if self.relay_io not in RELAY_IO:
            raise ValueError(f"relay_io must be one of {', '.join(RELAY_IO)}")
        if self.lanes not in LANES:
            raise ValueError(f"lanes must be one of {', '.join(LANES)}")

    @property
    def publish_tasks(self) -> int:
        """Publishing tasks per producer: enough to fill the window, a few hundred for B=1."""
        if self.tasks:
            return self.tasks
        if self.batch == 1:
            return min(ONE_MESSAGE_TASKS, self.window)
        return max(1, self.window // self.batch)

    @property
    def window_batches(self) -> int:
        """Batches a baseline producer keeps in flight: the zq producer's bound, in batches."""
        return max(1, min(self.window, self.publish_tasks * self.batch) // self.batch)

    def share(self, producer: int) -> tuple[int, int]:
        """The message indexes ``[lo, hi)`` that ``producer`` publishes."""
        base, extra = divmod(self.messages, self.producers)
        lo = producer * base + min(producer, extra)
        return lo, lo + base + (1 if producer < extra else 0)

    def describe(self) -> str:
        qs = ""
        if self.queues > 1:
            if self.partition and self.consumers > 1:
                who = f"queue k consumed by consumer k % {self.consumers} only"
            else:
                who = "every consumer consumes every queue"
            qs = (f"{self.queues:,} queues (batch j to queue j % {self.queues:,}; {who}; "
                  f"prefetch per queue); ")
        if self.lanes == "priority":
            qs += "zq: each batch a random priority 0-9; "
        elif self.lanes == "tenant":
            weights = ", ".join(f"{t} {w}" for t, w in TENANT_WEIGHTS.items())
            qs += (f"zq: batches round robin over {len(TENANT_WEIGHTS)} tenants (weights "
                   f"{weights}); ")
        return (f"{self.messages:,} messages of {self.size} B, zq storage {self.storage}; {qs}"
                f"{self.producers} producer(s), "
                f"{self.consumers} consumer(s); batch {self.batch}, prefetch {self.prefetch:,}, "
                f"window {self.window:,} ({self.publish_tasks} publishing task(s) per producer; "
                f"baseline: {self.window_batches} batch(es) in flight)")
