"""What each proven key may do: the ``--permissions`` file of brokers and routers.

The file is TOML, one table per key, named as the key's public-key file without
``.key`` (``keys/billing.key`` is ``billing``)::

    [keys.billing]
    publish = ["orders.*", "invoices"]
    consume = ["invoices"]
    manage = []       # declare, pause, purge, dlq... on these queues
    admin = false     # cluster and broker-wide operations
    relay = false     # a router's key: it may carry its clients' proven identities

Missing fields are empty (or false); a key with no table may do nothing. ``admin``
grants no per-queue right: an operator key wants ``manage = ["#"]`` as well.

Patterns match queue names word by word, the words being split on ``.``: ``*`` is
exactly one word, ``#`` zero or more, any other word itself (``orders*`` is a literal
word, as in AMQP topics). ``#`` alone matches every queue.

Without a file, :data:`ALLOW_ALL` (``Permissions(None)``) allows every key, and
sessions without a proven key, everything, ``relay`` included. No I/O here except
:meth:`Permissions.load` reading the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zq.errors import Forbidden
from zq.protocol.limits import MAX_QUEUE_NAME

OPS = ("publish", "consume", "manage")
FLAGS = ("admin", "relay")
NONE = "none"  # the right of an operation any session may do (see manage_right)
# The name of a server's own key: a holder of the server's secret key (a standby of its
# primary, a broker of the same cluster shipping a queue) may do everything. No key
# file can have this name.
SERVER = "@server"
MAX_CACHE = 65_536  # answers kept by Permissions.may before the cache is cleared

_WORD_PUNCTUATION = frozenset("_-:/*#")  # a queue name's, less ".", plus the wildcards


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled pattern: its words; ``matches`` runs in words(name) x words(self)."""

    text: str
    words: tuple[str, ...]

    @classmethod
    def compile(cls, text: object) -> Pattern:
        """The pattern ``text``, else ValueError saying what is wrong with it."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"a pattern is a non-empty string, got {text!r:.80}")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_QUEUE_NAME:
            raise ValueError(f"pattern {text[:40]!r}... is longer than {MAX_QUEUE_NAME} bytes")
        words = tuple(text.split("."))
        for word in words:
            if not word:
                raise ValueError(f"pattern {text!r} has an empty word")
            if not all(ch.isalnum() or ch in _WORD_PUNCTUATION for ch in word):
                raise ValueError(f"pattern {text!r} has a character no queue name has")
        return cls(text, words)

    def matches(self, name: str) -> bool:
        pat, words = self.words, name.split(".")
        if "#" not in pat:
            return len(pat) == len(words) and all(
                p in ("*", w) for p, w in zip(pat, words, strict=True))
        # Every pattern position the words so far may have reached: a set of states
        # (no backtracking), so several '#' cost no more than one.
        live = _past_hashes(pat, [True] + [False] * len(pat))
        for w in words:
            step = [False] * (len(pat) + 1)
            for i, p in enumerate(pat):
                if live[i] and p == "#":
                    step[i] = True  # '#' takes this word and may take more
                elif live[i] and p in ("*", w):
                    step[i + 1] = True
            live = _past_hashes(pat, step)
            if not any(live):
                return False
        return live[-1]


def _past_hashes(pat: tuple[str, ...], live: list[bool]) -> list[bool]:
    """``live`` with the positions after each live '#' (it may take no word) live too."""
    for i, p in enumerate(pat):
        if live[i] and p == "#":
            live[i + 1] = True
    return live


@dataclass(frozen=True, slots=True)
class Rules:
    """One key's table of the file, compiled."""

    publish: tuple[Pattern, ...] = ()
    consume: tuple[Pattern, ...] = ()
    manage: tuple[Pattern, ...] = ()
    admin: bool = False
    relay: bool = False

    @classmethod
    def parse(cls, table: object, where: str) -> Rules:
        """``table`` as rules, else ValueError naming ``where`` (file and key) and the field."""
        if not isinstance(table, Mapping):
            raise ValueError(f"{where}: must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(OPS) - set(FLAGS))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; fields are "
                             f"{', '.join(OPS + FLAGS)}")
        found: dict[str, Any] = {}
        for op in OPS:
            patterns = table.get(op, [])
            if not isinstance(patterns, list):
                raise ValueError(f"{where}.{op}: must be a list of patterns, "
                                 f"got {type(patterns).__name__}")
            try:
                found[op] = tuple(Pattern.compile(p) for p in patterns)
            except ValueError as exc:
                raise ValueError(f"{where}.{op}: {exc}") from None
        for flag in FLAGS:
            found[flag] = table.get(flag, False)
            if type(found[flag]) is not bool:
                raise ValueError(f"{where}.{flag}: must be true or false, "
                                 f"got {found[flag]!r:.80}")
        return cls(**found)


class Permissions:
    """The rules of a permissions file (parsed TOML), or ``None``: allow everything."""

    __slots__ = ("_cache", "_rules", "source")

    def __init__(self, document: Mapping[str, Any] | None, source: str = "<permissions>"
                 ) -> None:
        self.source = source
        self._rules = None if document is None else _parse(document, source)
        self._cache: dict[tuple[str | None, str, str], bool] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Permissions:
        """The permissions file at ``path``; ValueError naming the file if it is wrong."""
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        return cls(document, str(path))

    @property
    def allows_all(self) -> bool:
        return self._rules is None

    def may(self, key: str | None, op: str, queue: str) -> bool:
        """Whether ``key`` may ``op`` (one of OPS) on ``queue``. Answers are cached."""
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        if self._rules is None:
            return True
        found = self._cache.get((key, op, queue))
        if found is None:
            rules = self._for(key)
            found = rules is not None and any(
                p.matches(queue) for p in getattr(rules, op))
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[(key, op, queue)] = found
        return found

    def admin(self, key: str | None) -> bool:
        rules = self._for(key)
        return rules is not None and rules.admin

    def relay(self, key: str | None) -> bool:
        rules = self._for(key)
        return rules is not None and rules.relay

    def keys(self) -> frozenset[str]:
        """The key names the file has a table for (none in allow-all mode)."""
        return frozenset(self._rules or ())

    def changed(self, other: Permissions) -> set[str]:
        """Names of keys whose rules differ between ``self`` and ``other``: added,
        removed or changed. Allow-all against a file is a ValueError: the rights of
        keys the file does not name change too, and no set of names can say so."""
        if self._rules is None or other._rules is None:
            if self._rules is other._rules:
                return set()
            raise ValueError("allow-all against a permissions file: every key changed")
        mine, theirs = self._rules, other._rules
        return {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}

    def _for(self, key: str | None) -> Rules | None:
        if self._rules is None:
            return _EVERYTHING
        return None if key is None else self._rules.get(key)


_ANY_QUEUE = (Pattern("#", ("#",)),)
_EVERYTHING = Rules(_ANY_QUEUE, _ANY_QUEUE, _ANY_QUEUE, admin=True, relay=True)
ALLOW_ALL = Permissions(None)


def _parse(document: Mapping[str, Any], source: str) -> dict[str, Rules]:
    unknown = sorted(set(document) - {"keys"})
    if unknown:
        raise ValueError(f"{source}: unknown table {unknown[0]!r}; the file has [keys.NAME]")
    tables = document.get("keys", {})
    if not isinstance(tables, Mapping):
        raise ValueError(f"{source}: keys must be a table of [keys.NAME] tables")
    return {str(name): Rules.parse(table, f"{source}: keys.{name}")
            for name, table in tables.items()}


# Which right each MANAGE operation needs, and why. "manage", "publish" and "consume"
# are checked on the operation's ``queue`` argument; "admin" is broker-wide.
MANAGE_RIGHTS = {
    "declare": "manage",       # creates or changes one queue's settings
    "info": "manage",          # one queue's stats and settings
    "pause": "manage",         # stops one queue's deliveries
    "resume": "manage",        # restarts them
    "purge": "manage",         # deletes one queue's ready messages
    "delete": "manage",        # removes one queue and all its messages
    "redrive": "manage",       # on the dead-letter queue; a 'to' queue is the caller's to check
    "peek": "manage",          # reads one queue's messages without consuming them
    "schedule_add": "manage",  # publishes to 'queue' on a timer, for as long as it lives
    "schedule_ls": "admin",    # lists every queue's schedules, bodies included: no queue arg
    "schedule_rm": "admin",    # names a schedule, not a queue (args carry no queue to check)
    "complete": "consume",     # a worker settles a task it was delivered (like ACK/NACK)
    "status": "publish",       # a producer asks how the task it published is doing
    "wait": "publish",         # the same, waiting for the result
    "sync": NONE,              # a barrier: changes and reveals nothing; every SDK sends it
    "node": "consume",         # a work node reports itself; checked on its first queue
    "list": "admin",           # every queue's name and stats
    "move": "admin",           # moves a queue to another broker of the cluster
    "move_status": "admin",    # how far a move has gone
    "move_in": "admin",        # broker to broker: the receiving side of a move
    "cluster_config": "admin", # replaces the cluster file
    "explain": "admin",        # any queue's message, its consumer and reasons: no queue arg
    # Streams (zq.core.streams): checked on the ``stream`` argument, as a queue name.
    "stream_declare": "manage",  # creates a stream or changes its retention
    "stream_delete": "manage",   # removes a stream, its entries and groups
    "streams": "manage",         # one stream's stats (without a name: every stream's)
    "stream_join": "consume",    # reads the stream in a group (then CREDIT)
    "stream_group_reset": "manage",   # moves a group's offset
    "stream_group_delete": "manage",  # removes a group
}


def manage_right(op: str) -> str:
    """The right MANAGE ``op`` needs: one of OPS (on its queue), "admin", or "none"
    (any session). Operations this table does not know need "admin"."""
    return MANAGE_RIGHTS.get(op, "admin")


_WORDING = {"publish": "publish to queue {q}", "consume": "consume from queue {q}",
            "manage": "manage queue {q}", "admin": "do admin operations",
            "relay": "relay its clients' identities (it is not a router's key)"}


def check(perms: Permissions, key: str | None, op: str, queue: str | None = None) -> None:
    """Raise :class:`zq.errors.Forbidden` unless ``key`` may ``op`` (one of OPS, "admin",
    "relay" or "none") on ``queue`` (needed for OPS)."""
    if op == NONE:
        return
    if op in OPS:
        if queue is None:
            raise ValueError(f"{op} is checked on a queue")
        allowed = perms.may(key, op, queue)
    elif op in FLAGS:
        allowed = perms.admin(key) if op == "admin" else perms.relay(key)
    else:
        raise ValueError(f"no right named {op!r}")
    if not allowed:
        who = "a session without a proven key" if key is None else f"key {key!r}"
        what = _WORDING[op].format(q=repr(queue))
        raise Forbidden(f"{who} may not {what}", right=op, queue=queue)
