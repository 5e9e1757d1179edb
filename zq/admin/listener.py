"""Starting the admin listener of a broker or a router (``--admin-bind``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zq.admin import settings
from zq.admin.broker_views import BrokerViews
from zq.admin.http import AdminServer
from zq.admin.metrics import BrokerCollector, RouterCollector, exposition
from zq.admin.router_views import RouterViews
from zq.admin.routes import PUBLIC, Routes

if TYPE_CHECKING:
    from zq.broker import Broker
    from zq.router.process import Router

log = logging.getLogger("zq.admin")


async def _serve(routes: Routes, bind: str, token_file: str, what: str) -> AdminServer:
    host, port = settings.address(bind)
    server = AdminServer(routes, token=settings.read_token(token_file),
                         public=PUBLIC.__contains__)
    address = await server.start(host, port)
    log.info("%s admin listener on %s/ (metrics at %s/metrics)", what, address, address,
             extra={"event": "admin_listening", "address": address})
    return server


async def broker_listener(broker: Broker) -> tuple[AdminServer, BrokerViews]:
    """Listen for ``broker`` (its cfg.admin_bind); ``views.ready`` is set once it has
    recovered (``/health`` answers 503 until then)."""
    views = BrokerViews(broker)
    routes = Routes(views.table(), metrics=exposition(BrokerCollector(views)),
                    health=views.health, queue=views.queue, explain=views.explain)
    server = await _serve(routes, broker.cfg.admin_bind, broker.cfg.admin_token, "broker")
    return server, views


async def router_listener(router: Router) -> tuple[AdminServer, RouterViews]:
    views = RouterViews(router)
    routes = Routes(views.table(), metrics=exposition(RouterCollector(router)),
                    health=views.health)
    server = await _serve(routes, router.cfg.admin_bind, router.cfg.admin_token, "router")
    return server, views
