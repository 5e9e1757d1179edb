"""What the CLI prints of names and reasons that clients chose: one line each."""

from __future__ import annotations

from zq.cli.common import _clean


def test_control_characters_are_shown_escaped_not_acted_on() -> None:
    assert _clean("worker-1") == "worker-1"
    assert _clean("evil\nname\x1b[31m") == "evil\\nname\\x1b[31m"
    assert _clean("tab\there é") == "tab\\there é"
