"""The zq Python SDK."""

from zq.client.client import Client, default_endpoint
from zq.client.consumer import Consumer, Message

__all__ = ["Client", "Consumer", "Message", "default_endpoint"]
