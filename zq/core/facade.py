"""The broker core's facade: the class the shell runs. No I/O.

``Core`` is every layer of ``zq.core`` together (see the package's docstring). It
takes the MANAGE operations as a table (``zq.core.api.Operations``); ``zq.core.default``
wires zq's own table in.
"""

from __future__ import annotations

from zq.core.sessions import Sessions


class Core(Sessions):
    """The broker's decisions for one broker process."""
