"""Decisions a user may want to change, each behind a small interface.

A policy has a ``kind`` (one of KINDS) and a ``name``. ``load`` builds one by name: a
built-in, else a plugin registered as an entry point in the ``zq.policies`` group whose
entry-point name is the policy name and whose object is a class or zero-argument factory
with a matching ``kind``.

A plugin found once is remembered by kind and name for the life of the process, so
a later ``load`` of it (a queue's settings changing, say) builds an instance without
scanning the installed packages' entry points again. A name not found is not
remembered: a plugin installed later is still found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from zq.policies.backoff import BACKOFF_POLICIES, BackoffPolicy, Exponential, Fixed
from zq.policies.dispatch import DISPATCH_POLICIES, DispatchPolicy, LeastLoaded, RoundRobin
from zq.policies.overflow import OVERFLOW_POLICIES, DropOldest, OverflowPolicy, Reject
from zq.policies.scaling import SCALING_POLICIES, ScalingPolicy
from zq.policies.selection import SELECTION_POLICIES, Lane, SelectionPolicy, Strict, WeightedFair

__all__ = [
    "BACKOFF_POLICIES",
    "DISPATCH_POLICIES",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "OVERFLOW_POLICIES",
    "SCALING_POLICIES",
    "SELECTION_POLICIES",
    "BackoffPolicy",
    "DispatchPolicy",
    "DropOldest",
    "Exponential",
    "Fixed",
    "Lane",
    "LeastLoaded",
    "OverflowPolicy",
    "Reject",
    "RoundRobin",
    "ScalingPolicy",
    "SelectionPolicy",
    "Strict",
    "WeightedFair",
    "available",
    "check",
    "load",
    "make_dispatch",
    "preload",
]

KINDS = ("dispatch", "selection", "backoff", "overflow", "scaling")
ENTRY_POINT_GROUP = "zq.policies"

_BUILTINS: dict[str, Mapping[str, Callable[[], Any]]] = {
    "dispatch": DISPATCH_POLICIES,
    "selection": SELECTION_POLICIES,
    "backoff": BACKOFF_POLICIES,
    "overflow": OVERFLOW_POLICIES,
    "scaling": SCALING_POLICIES,
}


# Plugins found by ``load``: (kind, name) -> their entry point and factory.
_FOUND: dict[tuple[str, str], tuple[EntryPoint, Callable[[], Any]]] = {}


def load(kind: str, name: str) -> Any:
    """A new policy of ``kind`` called ``name``; ValueError if there is none."""
    builtins = _builtins(kind)
    if name in builtins:
        return builtins[name]()
    known = _FOUND.get((kind, name))
    if known is not None:
        policy, other = _checked(known[0], known[1], kind)
        if policy is None:
            raise ValueError(f"policy plugin {name!r} built a {other!r} policy, "
                             f"not a {kind!r} one")
        return policy
    return _scan(kind, name)


def preload() -> list[str]:
    """Find every installed plugin once, at start (the broker calls this before it
    serves), so that a queue declared with a plugin policy later loads it without
    scanning the installed packages inside frame handling (only a name that is no
    plugin at all is still looked for then, to be refused). Returns their names."""
    names: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = _factory(ep)
        except ValueError:
            continue  # reported when a queue asks for it
        kind = _kind_of(factory)
        if isinstance(kind, str) and kind in KINDS and (kind, ep.name) not in _FOUND:
            _FOUND[kind, ep.name] = (ep, factory)
            names.append(f"{kind}:{ep.name}")
    return names


def _scan(kind: str, name: str) -> Any:
    """``load`` for a name not seen yet: look through the entry points, remember it."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise ValueError(_unknown(kind, name))
    wrong: list[str] = []
    for ep in found:
        factory = _factory(ep)
        policy, other = _checked(ep, factory, kind)
        if policy is not None:
            _FOUND[kind, name] = (ep, factory)
            return policy
        wrong.append(f"{other!r} ({ep.value})")
    raise ValueError(f"policy plugin {name!r} is not of kind {kind!r}: it is {', '.join(wrong)}")


def make_dispatch(name: str) -> DispatchPolicy:
    """A new dispatch policy by name: a built-in or a plugin."""
    policy: DispatchPolicy = load("dispatch", name)
    return policy


def check(kind: str, name: str) -> None:
    """Raise the ValueError ``load`` would; builds and drops one instance."""
    load(kind, name)


def available(kind: str) -> list[str]:
    """Names of the policies of ``kind``: built-ins, then loadable plugins (sorted)."""
    return list(_builtins(kind)) + _plugins(kind)[0]


def _builtins(kind: str) -> Mapping[str, Callable[[], Any]]:
    try:
        return _BUILTINS[kind]
    except KeyError:
        raise ValueError(
            f"unknown policy kind {kind!r}; choose from {', '.join(KINDS)}"
        ) from None


def _kind_of(obj: object) -> object:
    return getattr(obj, "kind", None)


def _checked(ep: EntryPoint, factory: Callable[[], Any], kind: str) -> tuple[Any, object]:
    """(a new instance, None) if ``factory`` gives a ``kind`` policy, else (None, its kind)."""
    declared = _kind_of(factory)
    if declared is not None and declared != kind:
        return None, declared
    policy = _build(ep, factory)
    actual = _kind_of(policy)
    if actual != kind:
        return None, actual
    return policy, None


def _factory(ep: EntryPoint) -> Callable[[], Any]:
    try:
        obj = ep.load()
    except Exception as exc:
        raise ValueError(
            f"policy plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}"
        ) from exc
    if not callable(obj):
        raise ValueError(f"policy plugin {ep.name!r} ({ep.value}) is not a class or factory")
    factory: Callable[[], Any] = obj
    return factory


def _build(ep: EntryPoint, factory: Callable[[], Any]) -> Any:
    try:
        return factory()
    except Exception as exc:
        raise ValueError(
            f"policy plugin {ep.name!r} ({ep.value}) failed to build: {exc!r}"
        ) from exc


def _plugins(kind: str) -> tuple[list[str], list[str]]:
    """(names of plugins of ``kind``, errors of plugins that failed to load).

    Loads every plugin in the group, so it is only used to list them.
    """
    names: set[str] = set()
    broken: list[str] = []
    builtins = _builtins(kind)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in builtins or ep.name in names:
            continue
        try:
            factory = _factory(ep)
            declared = _kind_of(factory)
            if declared is None:
                declared = _kind_of(_build(ep, factory))
        except ValueError as exc:
            broken.append(str(exc))
            continue
        if declared == kind:
            names.add(ep.name)
    return sorted(names), broken


def _unknown(kind: str, name: str) -> str:
    names, broken = _plugins(kind)
    text = f"unknown {kind} policy {name!r}; choose from {', '.join([*_builtins(kind), *names])}"
    if broken:
        text += f"; plugins that failed to load: {'; '.join(broken)}"
    return text
