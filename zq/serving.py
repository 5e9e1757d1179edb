"""``zq broker``'s process: signals, the ready line, and the exit code around a
:class:`~zq.broker.Broker` (or, with ``--ha``, a replicated node: :mod:`zq.ha.node`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

import zmq

from zq.broker import Broker, run_loop
from zq.config import BrokerConfig
from zq.errors import ZqError
from zq.security.guard import raise_fd_limit

if TYPE_CHECKING:
    from zq.ha.node import Node

log = logging.getLogger("zq.broker")


def serve(cfg: BrokerConfig, *, print_ready: bool = True) -> int:
    """Run a broker until SIGTERM or SIGINT; return the process exit code."""

    async def main() -> None:
        # Queued messages are long-lived objects in reference cycles (a message
        # points at its queue), so the default GC thresholds make the collector
        # rescan a large backlog again and again. Collect young objects less often.
        gc.set_threshold(50_000, 50, 100)
        loop = asyncio.get_running_loop()
        if cfg.ha:  # a replicated node: etcd's client is imported only then
            try:
                from zq.ha.node import Node
            except ImportError as exc:
                raise ZqError(f"--ha needs the HA extra: pip install 'zq[ha]' ({exc})") from None
            runner: Broker | Node = Node(cfg)
        else:
            runner = Broker(cfg)
        loop.add_signal_handler(signal.SIGHUP, runner.reload)
        raise_fd_limit()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.request_stop)

        def ready(endpoint: str) -> None:
            gc.freeze()  # what start-up and recovery built is never garbage: stop scanning it
            if print_ready:
                sys.stdout.write(f"ZQ READY {endpoint}\n")
                sys.stdout.flush()

        await runner.run(ready)

    try:
        run_loop(main())
    except zmq.ZMQError as exc:
        log.error("cannot start broker on %s: %s", cfg.bind, exc)
        return 2
    except ZqError as exc:  # the store could not open: locked, not WAL, unreadable
        log.error("cannot start broker: %s", exc)
        return 2
    except (ValueError, OSError) as exc:  # the cluster file or the broker id
        log.error("cannot start broker: %s", exc)
        return 2
    return 0
