"""The edge broker's producer id at the centre, kept in the data folder's ``uplink-id``.

The centre tells a resent frame from a new one by producer id and seq, and the seqs are
this broker's message ids. So the id must stay the same across restarts (a frame sent
again after a crash is then known), and must change if the database goes back in time:
restored from a backup, its ids would be given again to new messages, whose frames the
centre would take for old ones and confirm without storing them. The file holds a random
part and the highest id sent so far (written at most once a second, and at the stop);
a database whose next id is not above it is older than what was sent: the random part
is made anew, and what was forwarded since the backup goes again (at least once,
never lost). ``zq backup`` does not copy the file, so a restored folder gets a new one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("zq.uplink")

ID_FILE = "uplink-id"
EVERY = 1.0  # seconds between writes of the highest id sent


class Identity:
    """The producer id and the record of the highest id sent under it."""

    def __init__(self, data: str, broker_id: str, next_id: int) -> None:
        self.path = Path(data) / ID_FILE
        nonce, high = self._read()
        if nonce and next_id <= high:
            log.warning("the database holds ids up to %d only, and this edge sent up to %d: "
                        "it is older than what was forwarded (restored from a backup?). A "
                        "new producer id, so that the centre takes no new message for an "
                        "old one; what was forwarded since goes again.", next_id - 1, high)
            nonce = ""
        if not nonce:
            nonce, high = os.urandom(8).hex(), 0
            self._write(nonce, 0)
        self.nonce = nonce
        self.written = high
        self.high = high  # the highest id sent so far
        self.at = 0.0  # when it was last written
        self.producer = (f"{broker_id}/{nonce}" if broker_id else nonce).encode()[:64]

    def sent(self, last_id: int) -> None:
        if last_id > self.high:
            self.high = last_id

    def save(self, now: float, force: bool = False) -> None:
        """Write the highest id sent, if it moved (at most every EVERY s unless forced)."""
        if self.high > self.written and (force or now - self.at >= EVERY):
            self._write(self.nonce, self.high)
            self.written, self.at = self.high, now

    def _read(self) -> tuple[str, int]:
        try:
            lines = self.path.read_text(encoding="ascii").split()
        except (FileNotFoundError, UnicodeDecodeError):
            return "", 0
        nonce = lines[0] if lines else ""
        if not (8 <= len(nonce) <= 32 and all(c in "0123456789abcdef" for c in nonce)):
            return "", 0
        high = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else 0
        return nonce, high

    def _write(self, nonce: str, high: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{nonce}\n{high}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
