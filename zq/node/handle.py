"""``zq.TaskHandle``: a published task call, its confirm, its state and its result."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from zq.errors import OperationTimeout
from zq.node.calls import ResultUnavailable, failure

if TYPE_CHECKING:
    from zq.node.app import App


class TaskHandle:
    """A published task call. ``await`` it for the broker's confirm (it returns itself).

    ``status()`` and ``result()`` ask the broker; before the confirm ``status()``
    says ``pending``.
    """

    __slots__ = ("_app", "_sent", "broadcast", "queue", "task")

    def __init__(self, app: App, task: str, queue: str, sent: asyncio.Future[int], *,
                 broadcast: bool = False) -> None:
        self._app = app
        self._sent = sent
        self.task = task
        self.queue = queue
        self.broadcast = broadcast  # run by every worker: no single outcome

    def __repr__(self) -> str:
        mid = self._sent.result() if self.confirmed else "pending"
        return f"TaskHandle(task={self.task!r}, queue={self.queue!r}, id={mid})"

    def __await__(self) -> Generator[Any, None, TaskHandle]:
        yield from asyncio.shield(self._sent).__await__()
        return self

    @property
    def confirmed(self) -> bool:
        """Whether the broker has confirmed the message (its id is known)."""
        return self._sent.done() and not self._sent.cancelled() \
            and self._sent.exception() is None

    @property
    def id(self) -> int:
        """The message id; RuntimeError until the publish is confirmed (await the handle)."""
        if not self.confirmed:
            raise RuntimeError("the task's publish is not confirmed yet: await the handle")
        return self._sent.result()

    async def status(self) -> dict[str, Any]:
        """The task's state map: ``state`` is pending, ready, delayed, running (with
        ``worker`` and ``attempt``), succeeded (with ``result``), failed (will
        retry; with ``error``), dead (with ``error``) or unknown."""
        self._single()
        if not self._sent.done():
            return {"state": "pending", "queue": self.queue, "id": None, "attempt": 0,
                    "history": []}
        await self
        client = await self._app.client()
        return await client.task_status(self.queue, self.id)

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The task's return value once it succeeded.

        Raises :class:`TaskFailed` if it ended dead, ``zq.OperationTimeout``
        after ``timeout`` seconds, :class:`ResultUnavailable` if the broker keeps
        no outcome for it.
        """
        self._single()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self
        except TimeoutError:
            raise OperationTimeout(f"task {self.task} not confirmed within {timeout}s",
                                   queue=self.queue) from None
        client = await self._app.client()
        left = None if deadline is None else max(0.0, deadline - loop.time())
        state = await client.wait_result(self.queue, self.id, left)
        match state.get("state"):
            case "succeeded":
                return state.get("result")
            case "dead":
                raise failure(state)
            case "unknown":
                raise ResultUnavailable(
                    f"the broker keeps no outcome of task {self.task} (id {self.id}) in "
                    f"queue {self.queue!r}: result_ttl 0 there, or it expired")
        raise OperationTimeout(f"task {self.task} (id {self.id}) not finished within "
                               f"{timeout}s; it is {state.get('state')}",
                               queue=self.queue, id=self.id, state=state)

    def _single(self) -> None:
        if self.broadcast:
            raise ResultUnavailable(f"task {self.task} is a broadcast task: every worker runs "
                                    f"each call, and it has no single state or result")

