"""The permissions file (zq.security.permissions): parsing, pattern matching, the
cache, reloads, MANAGE rights and Forbidden. No I/O besides tmp_path files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zq.errors import Forbidden
from zq.manage import OPERATIONS
from zq.security.permissions import (
    ALLOW_ALL,
    MAX_CACHE,
    OPS,
    Pattern,
    Permissions,
    check,
    manage_right,
)

EXAMPLE = """
[keys.billing]
publish = ["orders.*", "invoices"]
consume = ["invoices"]
manage = []            # declare, pause, purge, dlq on these queues
admin = false          # cluster and broker-wide operations
relay = false          # this key is a router's

[keys.ops]
manage = ["#"]
admin = true

[keys.edge]
relay = true
"""


@pytest.fixture
def perms(tmp_path: Path) -> Permissions:
    path = tmp_path / "permissions.toml"
    path.write_text(EXAMPLE)
    return Permissions.load(path)


def matches(pattern: str, name: str) -> bool:
    return Pattern.compile(pattern).matches(name)


# ------------------------------------------------------------------ the example file


def test_example_file(perms: Permissions) -> None:
    assert perms.keys() == {"billing", "ops", "edge"}
    assert perms.may("billing", "publish", "orders.eu")
    assert perms.may("billing", "publish", "invoices")
    assert not perms.may("billing", "publish", "orders")
    assert not perms.may("billing", "publish", "orders.eu.x")
    assert perms.may("billing", "consume", "invoices")
    assert not perms.may("billing", "consume", "orders.eu")
    assert not perms.may("billing", "manage", "invoices")
    assert not perms.admin("billing")
    assert not perms.relay("billing")
    assert perms.may("ops", "manage", "anything.at.all")
    assert not perms.may("ops", "publish", "invoices")
    assert perms.admin("ops")
    assert perms.relay("edge")
    assert not perms.admin("edge")
    assert not perms.may("edge", "consume", "invoices")


def test_unknown_key_and_no_key_are_denied(perms: Permissions) -> None:
    for key in ("stranger", None, ""):
        assert not any(perms.may(key, op, "invoices") for op in OPS)
        assert not perms.admin(key)
        assert not perms.relay(key)


def test_empty_file_denies_everyone(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    perms = Permissions.load(path)
    assert perms.keys() == frozenset()
    assert not perms.may("billing", "publish", "x")


def test_allow_all_allows_everything_even_without_a_key() -> None:
    for p in (ALLOW_ALL, Permissions(None)):
        assert p.allows_all
        assert p.keys() == frozenset()
        for key in ("billing", None):
            assert all(p.may(key, op, "any.queue") for op in OPS)
            assert p.admin(key)
            assert p.relay(key)
            check(p, key, "admin")


def test_may_refuses_unknown_operations(perms: Permissions) -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        perms.may("billing", "admin", "invoices")


# ------------------------------------------------------------------ patterns


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("orders.*", "orders.eu", True),
    ("orders.*", "orders", False),
    ("orders.*", "orders.eu.x", False),
    ("orders.#", "orders", True),
    ("orders.#", "orders.eu", True),
    ("orders.#", "orders.eu.x", True),
    ("orders.#", "ordersx", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x", False),
    ("a.#.b", "b", False),
    ("a.*.b", "a.b", False),
    ("a.*.b", "a.x.b", True),
    ("#.b.#", "b", True),
    ("#.b.#", "x.b.y.z", True),
    ("#.b.#", "x.y", False),
    ("#.#.a.#.#", "x.a", True),
    ("*.#", "x", True),
    ("*.#", "x.y.z", True),
    ("#.*", "x", True),
    ("*.*", "x", False),
    ("orders*", "orders*", True),
    ("orders*", "orders", False),
    ("orders*", "ordersx", False),
    ("orders*", "orders.x", False),
    ("a#", "a.b", False),
    ("invoices", "invoices", True),
    ("invoices", "invoices.dlq", False),
    ("tenant:1/jobs", "tenant:1/jobs", True),
    ("файлы.*", "файлы.x", True),
])
def test_pattern_semantics(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@given(st.text(min_size=1, max_size=255).filter(lambda s: len(s.encode()) <= 255))
def test_hash_alone_matches_every_queue(name: str) -> None:
    assert matches("#", name)


@pytest.mark.parametrize("bad", [
    "", "a..b", ".a", "a.", ".", "a b", "a\tb", "a\x00", 7, None, ["a"], "x" * 256,
])
def test_invalid_patterns(bad: Any) -> None:
    with pytest.raises(ValueError, match="pattern"):
        Pattern.compile(bad)


def reference(pattern: list[str], words: list[str]) -> bool:
    """Recursive word matching, the obvious way."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return reference(rest, words) or (bool(words) and reference(pattern, words[1:]))
    return bool(words) and head in ("*", words[0]) and reference(rest, words[1:])


PATTERN_WORDS = st.sampled_from(["a", "b", "c", "*", "#", "a*"])
NAME_WORDS = st.sampled_from(["a", "b", "c", "a*", ""])  # "": names may start or end with "."


@given(st.lists(PATTERN_WORDS, min_size=1, max_size=8),
       st.lists(NAME_WORDS, min_size=1, max_size=8))
def test_matcher_agrees_with_reference(pattern: list[str], words: list[str]) -> None:
    assert matches(".".join(pattern), ".".join(words)) is reference(pattern, words)


def test_many_hashes_stay_fast() -> None:
    # A backtracking matcher takes polynomial time in the number of '#' here.
    name = ".".join(["a"] * 120)
    assert not matches("#.a.#.a.#.a.#.a.#.a.#.b", name)


# ------------------------------------------------------------------ errors in the file


def load(tmp_path: Path, text: str) -> Permissions:
    path = tmp_path / "perms.toml"
    path.write_text(text)
    return Permissions.load(path)


@pytest.mark.parametrize(("text", "names"), [
    ("[keys.billing]\npublsh = ['a']\n", ["billing", "publsh"]),
    ("[keys.billing]\npublish = 'orders'\n", ["billing", "publish"]),
    ("[keys.billing]\nconsume = {a = 1}\n", ["billing", "consume"]),
    ("[keys.billing]\nmanage = [1]\n", ["billing", "manage"]),
    ("[keys.billing]\npublish = ['a..b']\n", ["billing", "publish", "a..b"]),
    ("[keys.billing]\npublish = ['.a']\n", ["billing", "publish"]),
    ("[keys.billing]\npublish = ['']\n", ["billing", "publish"]),
    ("[keys.billing]\nadmin = 'yes'\n", ["billing", "admin"]),
    ("[keys.billing]\nadmin = 1\n", ["billing", "admin"]),
    ("[keys.billing]\nrelay = []\n", ["billing", "relay"]),
    ("[keys]\nbilling = 'all'\n", ["billing", "table"]),
    ("[keys]\nbilling = ['a']\n", ["billing", "table"]),
    ("keys = ['billing']\n", ["keys"]),
    ("[users.billing]\n", ["users"]),
    ("[keys.billing\n", ["TOML"]),
])
def test_errors_name_file_key_and_field(tmp_path: Path, text: str, names: list[str]
                                        ) -> None:
    with pytest.raises(ValueError, match=r"perms\.toml") as info:
        load(tmp_path, text)
    for name in names:
        assert name in str(info.value)


def test_missing_fields_default_to_nothing() -> None:
    perms = Permissions({"keys": {"quiet": {}}})
    assert perms.keys() == {"quiet"}
    assert not any(perms.may("quiet", op, "q") for op in OPS)
    assert not perms.admin("quiet")
    assert not perms.relay("quiet")


# ------------------------------------------------------------------ cache and reload


def test_cache_is_bounded() -> None:
    perms = Permissions({"keys": {"k": {"publish": ["#"]}}})
    for i in range(MAX_CACHE):
        assert perms.may("k", "publish", f"q{i}")
    assert len(perms._cache) == MAX_CACHE
    assert perms.may("k", "publish", "one.more")
    assert len(perms._cache) == 1
    assert perms.may("k", "publish", "q0")  # answers the same after clearing


def test_changed_names_added_removed_and_changed_keys() -> None:
    old = Permissions({"keys": {"same": {"publish": ["a.*"]}, "gone": {},
                                "more": {"consume": ["a"]}, "flag": {}}})
    new = Permissions({"keys": {"same": {"publish": ["a.*"], "admin": False},
                                "more": {"consume": ["a", "b"]}, "flag": {"relay": True},
                                "added": {}}})
    assert old.changed(new) == {"gone", "more", "flag", "added"}
    assert new.changed(old) == {"gone", "more", "flag", "added"}
    assert old.changed(old) == set()
    assert ALLOW_ALL.changed(Permissions(None)) == set()
    with pytest.raises(ValueError, match="allow-all"):
        old.changed(ALLOW_ALL)


# ------------------------------------------------------------------ MANAGE rights and check


def test_every_manage_operation_has_a_known_right() -> None:
    assert OPERATIONS.handlers
    for op in OPERATIONS.handlers:
        assert manage_right(op) in {*OPS, "admin", "none"}, op


@pytest.mark.parametrize(("op", "right"), [
    ("declare", "manage"), ("info", "manage"), ("pause", "manage"), ("resume", "manage"),
    ("purge", "manage"), ("delete", "manage"), ("redrive", "manage"), ("peek", "manage"),
    ("schedule_add", "manage"), ("schedule_ls", "admin"), ("schedule_rm", "admin"),
    ("list", "admin"), ("move", "admin"), ("move_status", "admin"), ("move_in", "admin"),
    ("cluster_config", "admin"), ("complete", "consume"), ("status", "publish"),
    ("wait", "publish"), ("sync", "none"), ("no_such_op", "admin"),
])
def test_manage_rights(op: str, right: str) -> None:
    assert manage_right(op) == right


def test_check_raises_forbidden(perms: Permissions) -> None:
    check(perms, "billing", "publish", "orders.eu")
    check(perms, "ops", "admin")
    check(perms, "edge", "relay")
    check(perms, "stranger", "none")
    with pytest.raises(Forbidden) as info:
        check(perms, "billing", "publish", "orders")
    assert info.value.message == "key 'billing' may not publish to queue 'orders'"
    assert info.value.code == 17
    assert info.value.attrs == {"right": "publish", "queue": "orders"}
    with pytest.raises(Forbidden, match="key 'billing' may not do admin operations"):
        check(perms, "billing", "admin")
    with pytest.raises(Forbidden, match="may not consume from queue 'orders'"):
        check(perms, "billing", "consume", "orders")
    with pytest.raises(Forbidden, match="may not manage queue 'invoices'"):
        check(perms, "billing", "manage", "invoices")
    with pytest.raises(Forbidden, match="may not relay"):
        check(perms, "billing", "relay")
    with pytest.raises(Forbidden, match="without a proven key"):
        check(perms, None, "consume", "invoices")


def test_check_refuses_misuse(perms: Permissions) -> None:
    with pytest.raises(ValueError, match="checked on a queue"):
        check(perms, "billing", "publish")
    with pytest.raises(ValueError, match="no right named"):
        check(perms, "billing", "delete", "q")
