"""``zq router``: the router of a zq cluster (PROTOCOL.md section 17).

Clients connect to a router as to a broker; it forwards each PUBLISH, and each MANAGE
that names a queue, to the broker that holds the queue, over one link per broker.

* :mod:`zq.router.config`: ``RouterConfig``, the process's settings;
* :mod:`zq.router.core`: ``RouterCore``, every rule, with no I/O (built on
  :mod:`~zq.router.state`, :mod:`~zq.router.clients`, :mod:`~zq.router.links` and
  :mod:`~zq.router.stats`);
* :mod:`zq.router.process`: the asyncio shell around it, and ``serve`` (its sockets in
  :mod:`~zq.router.sockets`).

Nothing is imported here, so that importing the core loads no I/O module.
"""
