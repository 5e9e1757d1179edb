"""Benchmarks for zq, run against real processes.

``python -m perf throughput`` starts a real ``zq broker``, drives it with producer
and consumer processes that use the zq SDK, then sends the same traffic through
a minimal pyzmq ROUTER relay (the *baseline*: what pyzmq alone costs for this
traffic shape) and prints both rates and their ratio. ``latency``, ``backlog``,
``recovery``, ``fanin``, ``queues`` and ``idle`` measure the other figures, and
``suite`` runs them all and prints one summary against the targets. See
``perf/RESULTS.md``.
"""
