"""The running daemon: the node's executor started, socket server, HTTP endpoints, orderly stop.

:meth:`Daemon.stop` (SIGTERM) stops accepting requests, lets the requests in flight finish,
stops the node (no new effects), waits (bounded) for cloud effects in flight, writes the
checkpoint and returns; ``main`` then exits 0.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import Any

from adapters.introspection import HttpServer, make_app, make_metrics_app
from adapters.ipamd.clock import Clock
from adapters.ipamd.executor import NodeExecutor, Ports
from adapters.ipamd.server import SocketServer
from adapters.ipamd.settings import Settings
from adapters.metrics import Metrics
from backends.observe import CallCounter, CallRecord


def fan_out(calls: CallCounter, metrics: Metrics) -> Callable[[CallRecord], None]:
    """One CallObserver feeding both /stats (the counter) and Prometheus."""

    def observe(record: CallRecord) -> None:
        calls(record)
        metrics.observe_call(record)

    return observe


class Daemon:
    def __init__(
        self,
        settings: Settings,
        ports: Ports,
        clock: Clock,
        log: Any,
        env: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        calls: CallCounter | None = None,
    ) -> None:
        self.settings = settings
        self.executor = NodeExecutor(settings, ports, clock, log, metrics, calls)
        self.log = log
        self.env = dict(env or {})
        self.rng = rng or random.Random()
        self.server = SocketServer(
            self.executor, settings.socket_path, allowed_uids=settings.socket_allowed_uids
        )
        self.introspection: HttpServer | None = None
        self.metrics_server: HttpServer | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Start the node (to ready), then serve the socket and HTTP endpoints."""
        await self.executor.start()
        await self.server.start()
        settings = self.settings
        if settings.introspection_enabled:
            self.introspection = HttpServer(make_app(self.executor, self.env))
            port = await self.introspection.start(
                settings.introspection.host,
                settings.introspection.port,
                allow_non_loopback=settings.introspection_allow_non_loopback,
            )
            self.log.info("introspection serving", host=settings.introspection.host, port=port)
        if settings.metrics_enabled:
            self.metrics_server = HttpServer(make_metrics_app(self.executor.metrics.exposition))
            port = await self.metrics_server.start(settings.metrics.host, settings.metrics.port)
            self.log.info("metrics serving", host=settings.metrics.host, port=port)
        self.executor.serve()
        self.log.info("serving", socket=settings.socket_path)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Orderly stop; safe to call twice."""
        if self.executor.stopping:
            await self._stopped.wait()
            return
        self.log.info("stopping")
        await self.server.stop()  # no new requests; those in flight finish
        for http in (self.introspection, self.metrics_server):
            if http is not None:
                await http.stop()
        try:
            await self.executor.stop()  # effects in flight drained, checkpoint written
        except Exception as exc:
            self.log.error("final checkpoint write failed", error=str(exc))
            self.executor.close()
            raise
        self.executor.close()
        self.log.info("stopped")
        self._stopped.set()
