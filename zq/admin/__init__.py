"""The admin listener: an HTTP server beside a broker's or a router's ZeroMQ socket,
off by default, serving ``/metrics`` (Prometheus), ``/health``, a JSON API and the
dashboard (docs/MANAGEMENT.md). It reads the process's state in its event loop.

Importing this package imports nothing heavy: :mod:`zq.admin.listener` does, when a
listener is started.
"""
