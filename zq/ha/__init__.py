"""High availability (issue 15): one broker id served by a primary and a synchronous
standby, the primary chosen by a lease in etcd. Optional: ``pip install 'zq[ha]'``.

Built so far: :mod:`zq.ha.lease` (the leader lease, its term, the ``sync`` key) and
:mod:`zq.ha.keeper` (renewals, and the loss said at once), :mod:`zq.ha.wire` (a
committed batch as the primary ships it) and :mod:`zq.ha.stream` (the order of shipped
batches on both sides), both without I/O. Replication, fencing
in the broker and ``zq broker --ha`` come next; docs/HA.md says what is promised.
"""
