"""The rule for queue names, shared by the broker, the SDK and the CLI. No I/O.

A queue name is 1 to 255 octets of UTF-8 made of letters and digits (any
script) and the characters ``. _ - : /``; it contains no ``..``. Names that end
in ``.dlq`` are dead-letter queues: the broker writes to them (dead letters)
and ``redrive`` reads from them, but a PUBLISH to one is refused.

Why so strict: names show up in columns (``zq queue ls``), in file-like
listings and in URLs of the management layer, and a name with a tab, a space or
``../`` in it breaks each of those in its own way.
"""

from __future__ import annotations

from zq.errors import InvalidQueueName
from zq.protocol.limits import DLQ_SUFFIX as DLQ_SUFFIX
from zq.protocol.limits import MAX_QUEUE_NAME as MAX_QUEUE_NAME

PUNCTUATION = frozenset("._-:/")
RULE = (f"1 to {MAX_QUEUE_NAME} bytes of letters, digits and . _ - : / (no spaces or "
        f"control characters, no '..')")


def name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a queue name, or None if nothing is."""
    if not isinstance(name, str):
        return f"a queue name must be a string, got {type(name).__name__}"
    if not name:
        return "a queue name cannot be empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_QUEUE_NAME:
        return f"a queue name is at most {MAX_QUEUE_NAME} bytes of UTF-8"
    for ch in name:
        if not (ch.isalnum() or ch in PUNCTUATION):
            shown = repr(ch) if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
            return f"a queue name cannot contain {shown}"
    if ".." in name:
        return "a queue name cannot contain '..'"
    return None


def check_queue_name(name: object) -> str:
    """``name`` if it follows the rule, else raise :class:`zq.InvalidQueueName`."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidQueueName(f"{problem}: {name!r} (queue names are {RULE})",
                               queue=name if isinstance(name, str) else None)
    assert isinstance(name, str)
    return name


def is_dead_letter_queue(name: str) -> bool:
    return name.endswith(DLQ_SUFFIX)


def check_publishable(name: object) -> str:
    """A name a producer may publish to: the rule, and not a dead-letter queue."""
    name = check_queue_name(name)
    if is_dead_letter_queue(name):
        raise InvalidQueueName(
            f"{name!r} is a dead-letter queue: only the broker writes to it (dead letters) "
            f"and 'zq dlq redrive' moves messages out of it", queue=name)
    return name


TOPIC_OPERATIONS = frozenset({"bind", "unbind", "topic_set"})


def manage_target(op: str, args: dict[str, object]) -> str | None:
    """The name a MANAGE operation acts on, by which it is routed in a cluster and its
    right checked: a stream operation's ``stream``, a topic operation's ``topic``
    (a topic and the queues bound to it live on one broker), else its ``queue``; None
    if the operation names none."""
    key = "stream" if op.startswith("stream") else "topic" if op in TOPIC_OPERATIONS \
        else "queue"
    name = args.get(key)
    return name if isinstance(name, str) and name else None
