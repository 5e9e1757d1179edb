"""Scaling policy plugins for the ``zq node`` tests (tests/system/test_node.py and
tests/unit/test_scaling.py).

The tests copy this package next to a generated ``zq_test_scaling-0.1.dist-info``
(its ``entry_points.txt`` names the classes below in the ``zq.policies`` group) in a
temporary folder and put that folder on the node's PYTHONPATH, as pip would leave a
separate distribution: the node finds them by ``--policy NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from zq.policies.scaling import Decision, NodeFigures, QueueFigures

WANTED_FILE = "scaling-wanted"  # in $ZQ_TEST_DIR: the number ``from-file`` asks for


class AlwaysTwo:
    """Two workers, whatever the queues hold."""

    kind: ClassVar[str] = "scaling"
    name: ClassVar[str] = "always-two"

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision:
        ready = sum(q.ready for q in queues)
        return Decision(2, f"always-two wants 2 worker(s) (ready {ready}, running "
                           f"{node.workers})")


class FromFile:
    """As many workers as the file ``$ZQ_TEST_DIR/scaling-wanted`` says (``--min``
    while there is none): a test steers the node with it."""

    kind: ClassVar[str] = "scaling"
    name: ClassVar[str] = "from-file"

    def decide(self, queues: Sequence[QueueFigures], node: NodeFigures) -> Decision:
        try:
            text = (Path(os.environ["ZQ_TEST_DIR"]) / WANTED_FILE).read_text().strip()
            wanted = int(text)
        except (KeyError, OSError, ValueError):
            return Decision(node.min, f"from-file: no number yet, {node.min} worker(s)")
        return Decision(wanted, f"from-file says {wanted} worker(s)")
