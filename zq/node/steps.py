"""What a worker does for workflows (zq.node.canvas): after a chained step succeeded,
publish the next one; and run the internal ``zq.chord`` task, which waits for a chord's
members and then publishes its callback."""

from __future__ import annotations

from typing import Any

from zq.client import Client, Message
from zq.node.calls import TASK_HEADER, encode_body, report
from zq.node.canvas import NEXT, THEN, WORKFLOW

WAIT = "wait"


async def advance(client: Client, msg: Message, value: Any) -> Any:
    """``msg`` ran with result ``value``: if a chain goes on, its next step is published
    (once, by dedup id, however often this step runs) and the result to store says
    where it went; else ``value`` as it is."""
    then = msg.headers.get(THEN)
    if not then:
        return value
    flow = msg.headers.get(WORKFLOW)
    wid, step = (flow[0], flow[1] + 1) if isinstance(flow, list) and len(flow) == 2 \
        else (f"{msg.queue}:{msg.id}", 1)
    name, queue, args, kwargs = then[0]
    headers: dict[str, Any] = {TASK_HEADER: name, WORKFLOW: [wid, step]}
    if then[1:]:
        headers[THEN] = then[1:]
    mid = await client.publish(queue, encode_body([value, *args], kwargs), headers=headers,
                               dedup_id=f"zq-flow:{wid}:{step}")
    return {NEXT: [queue, mid], "result": value}


async def chord(client: Client, msg: Message, kwargs: dict[str, Any]
                ) -> tuple[str, Any]:
    """One look at a chord's members: ("done", the result to store) once all succeeded
    and the callback is published; (WAIT, None) while some run; ("dead", a report) if
    one is dead or its outcome is not kept."""
    results = []
    for queue, mid in kwargs["members"]:
        st = await client.task_status(queue, mid)
        state = st.get("state")
        if state == "succeeded":
            value = st.get("result")
            results.append(value["result"] if isinstance(value, dict) and NEXT in value
                           else value)
        elif state in ("dead", "unknown"):
            why = "is dead" if state == "dead" else "has no outcome kept (result_ttl)"
            return "dead", report("ChordMemberFailed", f"member {mid} of {queue!r} {why}")
        else:
            return WAIT, None
    name, queue, args, kw = kwargs["callback"]
    cid = await client.publish(queue, encode_body([results, *args], kw),
                               headers={TASK_HEADER: name},
                               dedup_id=f"zq-chord:{msg.queue}:{msg.id}")
    return "done", {NEXT: [queue, cid], "result": None}
