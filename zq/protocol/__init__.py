"""The zq wire protocol: frames, codec, credit window and session state. No I/O here."""

from zq.protocol.codec import DEFAULT_LIMITS, Limits, decode, encode
from zq.protocol.credit import CreditWindow
from zq.protocol.frames import VERSION

__all__ = ["DEFAULT_LIMITS", "VERSION", "CreditWindow", "Limits", "decode", "encode"]
