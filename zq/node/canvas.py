"""Task workflows: ``chain``, ``group`` and ``chord`` of task signatures (``task.s(...)``).

* ``chain(a.s(x), b.s(), c.s())``: ``a(x)``, then ``b(result of a)``, then ``c(result
  of b)``. The rest of the chain travels in the message's ``zq-then`` header; a worker
  that ran a step successfully publishes the next one (with the result as its first
  argument) *before* it completes its own message, under the dedup id
  ``<chain>:<step>``, and stores as its result ``{"zq-next": [queue, id], "result":
  value}``. So a worker that dies between the two runs the step again (at least once,
  as every task) but the next step is stored once: the dedup id finds it, for as long
  as its queue remembers dedup ids (``dedup_window``, 300 s by default).
* ``group(a.s(1), a.s(2), ...)``: every call at once; the handle gathers the results.
* ``chord(group(...), cb.s())``: the group, then ``cb([results...])`` once every member
  succeeded. A message of the internal task ``zq.chord`` waits in the callback's queue
  and is retried (every ``CHORD_POLL`` s, as Celery's chord_unlock is) until the
  members have all succeeded (it publishes the callback, once, by dedup id) or one is
  dead (it is dead too, saying which).

A workflow's handle follows ``zq-next`` from its first message to its last one's result.
No I/O here but the handles' calls on the App's client.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zq.node.calls import TASK_HEADER, ResultUnavailable, encode_body, failure

if TYPE_CHECKING:
    from zq.node.app import App, Task

THEN = "zq-then"  # header: the steps after this one, [[task, queue, args, kwargs], ...]
WORKFLOW = "zq-flow"  # header: [workflow id, this step's number]
NEXT = "zq-next"  # key of a step's stored result: [queue, id] of the step after it
CHORD_TASK = "zq.chord"  # the internal task that waits for a chord's members
CHORD_POLL = 0.5  # seconds between a chord's looks at its members
CHORD_ATTEMPTS = 1_000_000


@dataclass(frozen=True)
class Signature:
    """A task with its arguments, not called yet: ``task.s(*args, **kwargs)``."""

    task: Task[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def step(self) -> list[Any]:
        return [self.task.name, self.task.queue, list(self.args), self.kwargs]


def _app_of(sigs: tuple[Signature, ...]) -> App:
    if not sigs:
        raise ValueError("a workflow needs at least one task signature")
    app = sigs[0].task.app
    if any(s.task.app is not app for s in sigs) or any(s.task.broadcast for s in sigs):
        raise ValueError("a workflow's tasks must be of one App, and not broadcast tasks")
    return app


class Handle:
    """A workflow's outcome: follows ``zq-next`` links to the last step's result."""

    def __init__(self, app: App, queue: str, id: int) -> None:
        self.app, self.queue, self.id = app, queue, id

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        client = await self.app.client()
        queue, mid = self.queue, self.id
        async with asyncio.timeout(timeout):
            while True:
                state = await client.wait_result(queue, mid)
                if state.get("state") == "dead":
                    raise failure(state)
                if state.get("state") != "succeeded":
                    raise ResultUnavailable(f"no outcome kept for message {mid} of {queue!r}")
                value = state.get("result")
                if not (isinstance(value, dict) and NEXT in value):
                    return value
                queue, mid = value[NEXT]


class Chain:
    def __init__(self, *sigs: Signature) -> None:
        self.app = _app_of(sigs)
        self.sigs = sigs

    async def delay(self) -> Handle:
        """Publish the first step (the rest rides in its headers); its handle."""
        first, rest = self.sigs[0], self.sigs[1:]
        headers = {TASK_HEADER: first.task.name, WORKFLOW: [os.urandom(8).hex(), 0],
                   THEN: [s.step() for s in rest]}
        mid = await self.app.publish_call(first.task.queue, encode_body(first.args,
                                                                        first.kwargs), headers)
        return Handle(self.app, first.task.queue, mid)


class GroupHandle:
    def __init__(self, handles: list[Handle]) -> None:
        self.handles = handles

    @property
    def ids(self) -> list[tuple[str, int]]:
        return [(h.queue, h.id) for h in self.handles]

    async def result(self, timeout: float | None = None) -> list[Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(h.result() for h in self.handles)))


class Group:
    def __init__(self, *sigs: Signature) -> None:
        self.app = _app_of(sigs)
        self.sigs = sigs

    async def delay(self) -> GroupHandle:
        handles = []
        for s in self.sigs:
            mid = await self.app.publish_call(s.task.queue, encode_body(s.args, s.kwargs),
                                              {TASK_HEADER: s.task.name})
            handles.append(Handle(self.app, s.task.queue, mid))
        return GroupHandle(handles)


class Chord:
    def __init__(self, header: Group, callback: Signature) -> None:
        self.app = _app_of((*header.sigs, callback))
        self.header = header
        self.callback = callback

    async def delay(self) -> Handle:
        """The members, then the waiting ``zq.chord`` message in the callback's queue."""
        members = await self.header.delay()
        body = encode_body([], {"members": [list(x) for x in members.ids],
                                "callback": self.callback.step()})
        queue = self.callback.task.queue
        mid = await self.app.publish_call(queue, body, {TASK_HEADER: CHORD_TASK},
                                          max_attempts=CHORD_ATTEMPTS)
        return Handle(self.app, queue, mid)


def chain(*sigs: Signature) -> Chain:
    return Chain(*sigs)


def group(*sigs: Signature) -> Group:
    return Group(*sigs)


def chord(header: Group, callback: Signature) -> Chord:
    return Chord(header, callback)
