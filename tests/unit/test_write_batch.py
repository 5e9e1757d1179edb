"""WriteBatch.skip_deleted_updates: attempt updates of messages the same batch
deletes are left out, and the stored end state is the same as without that."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zq.persistence.base import Rewrite, Update, WriteBatch


def apply(b: WriteBatch, rows: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """What a store ends with: updates in order, then deletes (sql.statements' order)."""
    out = dict(rows)
    for u in b.updates:
        if isinstance(u, Rewrite):
            out[u.id] = (u.attempts, -1)
        else:
            ids, attempts, _, state = u
            for i, a in zip(ids, attempts, strict=True):
                out[i] = (a, state)
    for i in b.deletes:
        out.pop(i, None)
    return out


def test_updates_of_deleted_messages_are_left_out() -> None:
    rw = Rewrite(7, "q.dlq", 2, 0.0, None, None)
    b = WriteBatch(updates=[([1, 2, 3], [1, 1, 1], 0.0, 1), ([4, 5], [2, 2], 0.0, 1), rw,
                            ([6], [1], 0.0, 1)],
                   deletes=[2, 4, 5, 7, 9])
    b.skip_deleted_updates()
    assert b.updates == [([1, 3], [1, 1], 0.0, 1), rw, ([6], [1], 0.0, 1)]
    assert b.deletes == [2, 4, 5, 7, 9]


def test_without_deletes_nothing_changes() -> None:
    u: Update = ([1], [1], 0.0, 1)
    b = WriteBatch(updates=[u])
    b.skip_deleted_updates()
    assert b.updates == [u]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5)), max_size=8),
                max_size=8),
       st.lists(st.integers(1, 30), max_size=15),
       st.lists(st.integers(1, 30), max_size=3))
def test_the_stored_end_state_is_the_same(frames: list[list[tuple[int, int]]],
                                          deletes: list[int], rewrites: list[int]) -> None:
    updates: list[Update | Rewrite] = [([i for i, _ in fr], [a for _, a in fr], 0.0, k % 3)
                                       for k, fr in enumerate(frames)]
    for n, i in enumerate(rewrites):
        updates.insert(n * 2, Rewrite(i, "q", 9, 0.0, None, None))
    rows = {i: (0, 0) for i in range(1, 31)}
    b = WriteBatch(updates=list(updates), deletes=list(deletes))
    before = apply(b, rows)
    b.skip_deleted_updates()
    assert apply(b, rows) == before
    gone = set(deletes)
    assert not any(i in gone for u in b.updates if not isinstance(u, Rewrite) for i in u[0])
