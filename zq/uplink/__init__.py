"""The uplink: an edge broker forwarding the messages of some of its queues to a
central cluster (``zq broker --uplink ENDPOINT --uplink-queues PATTERN``; docs/EDGE.md).

``settings`` checks the two settings (no I/O); the core's ``zq.core.uplink`` decides which
messages go in which PUBLISH frame and what a confirm or a refusal does to them (no
I/O); ``flight`` keeps the frames sent and not yet confirmed (no I/O); ``link`` is the
session with the centre (a DEALER socket, its heartbeats and reconnections).
"""
