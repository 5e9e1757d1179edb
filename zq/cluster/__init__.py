"""Cluster membership and placement, with no I/O but reading the cluster file.

``config`` reads and validates ``cluster.toml`` (the brokers, their weights and
states, the pins); ``placement`` decides which broker a new queue name goes to.
"""

from zq.cluster.config import BrokerEntry, ClusterConfig, load
from zq.cluster.placement import place, spread

__all__ = ["BrokerEntry", "ClusterConfig", "load", "place", "spread"]
