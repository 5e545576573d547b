"""Introspection HTTP API (aiohttp), in upstream's shapes, plus the metrics endpoint server.

Endpoints (GET): ``/v1/enis`` (upstream's ENI datastore dump, container ids blanked as
upstream v1.23.0 does), ``/v1/pods``, ``/v1/ipamd-env-settings``,
``/v1/networkutils-env-settings``, ``/stats`` (pool figures and EC2 calls by action and
outcome), and the project's ``/v1/subnets`` (the node's subnets as EC2 last described them,
free /28 blocks at most, this node's share; ``ipamctl subnets``) and ``/v1/fragmentation``
(the node's /28 prefixes by use and what repacking would free; ``ipamctl fragmentation``).
The server refuses a non-loopback address unless explicitly allowed: the dump
names every pod on the node.

The daemon's state is read through the small :class:`IntrospectionSource` protocol, so this
module does not depend on the daemon package.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from adapters.redact import redact_setting
from backends.observe import CallCounter
from ipamcore import economy
from ipamcore.views import AddressView, EniView, PoolStats

GO_ZERO_TIME = "0001-01-01T00:00:00Z"

IPAMD_ENV = (
    "WARM_ENI_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET", "WARM_PREFIX_TARGET",
    "ENABLE_PREFIX_DELEGATION", "ENABLE_MULTI_NIC", "MAX_ENI", "IP_COOLDOWN_PERIOD",
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "ENI_CONFIG_SUBNET", "ENI_CONFIG_SECURITY_GROUPS",
    "ENABLE_SUBNET_DISCOVERY", "CLUSTER_NAME", "ADDITIONAL_ENI_TAGS",
    "AWS_VPC_K8S_CNI_BACKING_STORE", "INTROSPECTION_BIND_ADDRESS", "DISABLE_INTROSPECTION",
    "DISABLE_METRICS", "DISABLE_LEAKED_ENI_CLEANUP", "ENI_DELETE_ON_TERMINATION",
    "AWS_VPC_K8S_CNI_LOGLEVEL",
    "AWS_EC2_ENDPOINT", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "IPAMD_SOCKET",
    "IPAMD_PENDING_DEL_DIR", "IPAMD_DATAPATH", "IPAMD_CLOUD", "AWS_REGION", "IPAMD_HOST_NETNS",
    "MY_NODE_NAME", "MY_POD_NAME", "MY_POD_NAMESPACE", "CLUSTER_ENDPOINT", "ANNOTATE_POD_IP",
    "ENABLE_POD_ENI", "ENI_CONFIG_LABEL_DEF", "ENI_CONFIG_ANNOTATION_DEF",
    "IPAMD_KUBE_START_WAIT_SECONDS", "IPAMD_KUBE_EVENT_THROTTLED_SECONDS",
    "IPAMD_KUBE_EVENT_WAITING_SECONDS", "IPAMD_KUBE_EVENT_INTERVAL_SECONDS",
)  # fmt: skip
NETWORKUTILS_ENV = (
    "AWS_VPC_K8S_CNI_EXTERNALSNAT", "AWS_VPC_K8S_CNI_RANDOMIZESNAT", "AWS_VPC_ENI_MTU",
    "POD_MTU", "AWS_VPC_K8S_CNI_VETHPREFIX", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
)  # fmt: skip


class IntrospectionSource(Protocol):
    """What introspection reads from the daemon."""

    def eni_views(self) -> list[EniView]: ...

    def stats(self) -> PoolStats: ...

    @property
    def calls(self) -> CallCounter: ...


def go_time(seconds: float | None) -> str:
    """RFC 3339 with nanoseconds, UTC (Go's time.Time JSON); Go's zero time for None."""
    if seconds is None:
        return GO_ZERO_TIME
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def go_cidr(cidr: str) -> dict[str, str]:
    """Go's net.IPNet in JSON: IP as text, Mask as base64 bytes."""
    net = ipaddress.ip_network(cidr, strict=False)
    return {
        "IP": str(net.network_address),
        "Mask": base64.b64encode(net.netmask.packed).decode(),
    }


def _address_entry(a: AddressView) -> dict[str, Any]:
    key, pod = a.key, a.pod
    return {
        "Address": a.address,
        "IPAMKey": {
            "networkName": key.network_name if key else "",
            "containerID": "",
            "ifName": key.if_name if key else "",
        },
        "IPAMMetadata": {
            "k8sPodNamespace": pod.namespace if pod else "",
            "k8sPodName": pod.name if pod else "",
        },
        "AssignedTime": go_time(a.assigned_at),
        "UnassignedTime": go_time(a.released_at),
    }


def enis_document(views: list[EniView]) -> dict[str, Any]:
    """Upstream's ``/v1/enis`` document."""
    enis: dict[str, Any] = {}
    total = assigned = 0
    for view in views:
        cidrs: dict[str, Any] = {}
        for block in view.blocks:
            cidr = block.block_id if "/" in block.block_id else f"{block.block_id}/32"
            shown = [a for a in block.addresses if a.state == "assigned" or a.released_at]
            cidrs[cidr] = {
                "Cidr": go_cidr(cidr),
                "IPAddresses": {a.address: _address_entry(a) for a in shown},
                "IsPrefix": block.is_prefix,
                "AddressFamily": "4",
            }
        if not view.excluded:
            total += view.total
            assigned += view.assigned
        enis[view.eni_id] = {
            "ID": view.eni_id,
            "IsPrimary": view.is_primary,
            "IsTrunk": view.is_trunk,
            "IsEFA": view.is_efa,
            "DeviceNumber": view.device_index,
            "AvailableIPv4Cidrs": cidrs,
            "IPv6Cidrs": {
                block.block_id: {
                    "Cidr": go_cidr(block.block_id),
                    "IPAddresses": {a.address: _address_entry(a) for a in block.addresses},
                    "IsPrefix": True,
                    "AddressFamily": "6",
                }
                for block in view.ipv6_blocks
            },
        }
        if view.network_card:  # only then: upstream's shape stays as is on card 0
            enis[view.eni_id]["NetworkCard"] = view.network_card
    return {"TotalIPs": total, "AssignedIPs": assigned, "ENIs": enis}


def container_tag(container_id: str) -> str:
    """A short tag of a container id that does not reveal it (12 hex digits of its sha256):
    enough to tell two sandboxes of one pod apart, or to match a known id."""
    return hashlib.sha256(container_id.encode()).hexdigest()[:12]


def pods_document(views: list[EniView]) -> dict[str, Any]:
    """Every allocation, by ``network/container tag/ifname`` (two sandboxes of one pod, or
    pods without Kubernetes names, are rows of their own): pod, address, ENI, device, and
    the container's tag (:func:`container_tag`; ids themselves stay hidden)."""
    pods: dict[str, Any] = {}
    for view in views:
        for block in view.blocks:
            for a in block.addresses:
                if a.state != "assigned" or a.key is None:
                    continue
                ns, name = (a.pod.namespace, a.pod.name) if a.pod else ("", "")
                tag = container_tag(a.key.container_id)
                pods[f"{a.key.network_name}/{tag}/{a.key.if_name}"] = {
                    "Namespace": ns, "Name": name, "Container": tag,
                    "NetworkName": a.key.network_name, "IfName": a.key.if_name,
                    "IP": a.address, "ENI": view.eni_id, "DeviceNumber": view.device_index,
                    "NetworkCard": view.network_card,
                    "AssignedTime": go_time(a.assigned_at),
                }  # fmt: skip
        for block in view.ipv6_blocks:
            for a in block.addresses:
                if a.key is None:
                    continue
                tag = container_tag(a.key.container_id)
                row = pods.get(f"{a.key.network_name}/{tag}/{a.key.if_name}")
                if row is not None:  # dual stack: the IPv4 row gets the IPv6 address
                    row["IPv6"] = a.address
                    continue
                ns, name = (a.pod.namespace, a.pod.name) if a.pod else ("", "")
                pods[f"{a.key.network_name}/{tag}/{a.key.if_name}"] = {
                    "Namespace": ns, "Name": name, "Container": tag,
                    "NetworkName": a.key.network_name, "IfName": a.key.if_name,
                    "IP": a.address, "IPv6": a.address, "ENI": view.eni_id,
                    "DeviceNumber": view.device_index, "NetworkCard": view.network_card,
                    "AssignedTime": go_time(a.assigned_at),
                }  # fmt: skip
    return pods


def stats_document(stats: PoolStats, calls: CallCounter) -> dict[str, Any]:
    by_action: dict[str, dict[str, int]] = {}
    for (action, outcome), n in sorted(calls.counts.items()):
        by_action.setdefault(action, {})[outcome] = n
    return {
        "enis": stats.enis, "max_enis": stats.max_enis, "total": stats.total,
        "assigned": stats.assigned, "cooling": stats.cooling, "available": stats.available,
        "leaving": stats.leaving, "prefixes": stats.prefixes, "pending": stats.pending,
        "in_flight": stats.in_flight, "max_pods": stats.max_pods,
        "ec2_calls": by_action, "ec2_calls_total": calls.total(),
    }  # fmt: skip


def subnets_document(views: list[EniView], watch: Any, now: float) -> dict[str, Any]:
    """The node's subnets (``watch``: an ``adapters.metrics.SubnetWatch`` or None) and what
    this node holds in each."""
    subnets, when = watch.current() if watch is not None else ([], {})
    rows = []
    for u in economy.subnet_uses(subnets, views, when):
        rows.append({
            "subnet_id": u.subnet_id, "cidr": u.cidr, "availability_zone": u.availability_zone,
            "usable": u.usable, "available": u.available if u.described_at else None,
            "free_prefixes_at_most": u.free_prefixes_at_most if u.described_at else None,
            "node_taken": u.node_taken, "node_idle": u.node_idle,
            "node_share_of_used": round(u.node_share_of_used, 4) if u.described_at else None,
            "described_at": go_time(u.described_at) if u.described_at else None,
            "age_s": round(now - u.described_at, 1) if u.described_at else None,
        })  # fmt: skip
    return {
        "subnets": rows,
        "refresh_interval_s": round(watch.interval_s, 1) if watch is not None else None,
        "describe_calls": watch.calls if watch is not None else 0,
        "error": watch.error if watch is not None else "subnet figures are not bound",
    }


def fragmentation_document(views: list[EniView]) -> dict[str, Any]:
    """Prefixes by use and the repacking plan, by subnet, with the pods to move."""
    pods: dict[str, list[str]] = {}
    for v in views:
        for b in v.blocks:
            if b.is_prefix:
                pods[b.block_id] = sorted(
                    f"{a.pod.namespace}/{a.pod.name}" for a in b.addresses
                    if a.state == "assigned" and a.pod is not None
                )  # fmt: skip
    out = []
    for f in economy.fragmentation(views):
        out.append({
            "subnet_id": f.subnet_id, "prefixes": f.prefixes, "assigned": f.assigned,
            "by_use": f.by_use, "needed": f.needed, "freeable": f.freeable,
            "addresses_freed": f.addresses_freed, "pods_to_move": f.pods_to_move,
            "drain": [{"prefix": p.prefix, "eni": p.eni_id, "assigned": p.assigned,
                       "pods": pods.get(p.prefix, [])} for p in f.drain],
        })  # fmt: skip
    return {"subnets": out, "prefix_mode": any(b.is_prefix for v in views for b in v.blocks)}


async def _subnets_when_described(source: Any, wait_s: float) -> dict[str, Any]:
    """``/v1/subnets``; with ``?wait=SECONDS`` wait (up to 10 s) for a refresh started now."""
    watch = getattr(getattr(source, "metrics", None), "subnets", None)
    doc = subnets_document(source.eni_views(), watch, time.time())
    deadline = time.monotonic() + min(wait_s, 10.0)
    while (watch is not None and time.monotonic() < deadline and not watch.error
           and any(r["described_at"] is None for r in doc["subnets"])):  # fmt: skip
        await asyncio.sleep(0.05)
        doc = subnets_document(source.eni_views(), watch, time.time())
    return doc


def env_subset(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The listed settings, redacted (see :func:`redact_setting`)."""
    return {name: redact_setting(name, env[name]) for name in names if name in env}


def make_app(
    source: IntrospectionSource,
    env: Mapping[str, str],
    kube: Callable[[], dict[str, object]] | None = None,
) -> web.Application:
    """``kube``: the Kubernetes API's state (``/v1/kube``: per kind its resourceVersion,
    whether its watch is up, LIST/WATCH/error counts; the Events posted)."""
    env = dict(env)

    def route(build: Callable[[], Any]) -> Callable[[web.Request], Any]:
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(build())

        return handler

    app = web.Application()
    app.router.add_get("/v1/enis", route(lambda: enis_document(source.eni_views())))
    app.router.add_get("/v1/pods", route(lambda: pods_document(source.eni_views())))
    app.router.add_get("/v1/ipamd-env-settings", route(lambda: env_subset(env, IPAMD_ENV)))
    app.router.add_get(
        "/v1/networkutils-env-settings", route(lambda: env_subset(env, NETWORKUTILS_ENV))
    )
    app.router.add_get("/stats", route(lambda: stats_document(source.stats(), source.calls)))
    if kube is not None:
        app.router.add_get("/v1/kube", route(kube))
    app.router.add_get(
        "/v1/fragmentation", route(lambda: fragmentation_document(source.eni_views()))
    )

    async def subnets(request: web.Request) -> web.Response:
        try:
            wait_s = float(request.query.get("wait", "0"))
        except ValueError:
            wait_s = 0.0
        return web.json_response(await _subnets_when_described(source, max(wait_s, 0.0)))

    app.router.add_get("/v1/subnets", subnets)
    return app


def make_metrics_app(exposition: Callable[[], tuple[bytes, str]]) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HEADER_TIMEOUT_S = 10.0  # a connection must have sent a whole request by then
MAX_CONNECTIONS = 128  # open at once, per server; more are closed at once


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a cap and a deadline: past the server's
    connection cap it is closed at once; one that has not sent a whole request within the
    header timeout is closed. One request per connection (the answer closes it), so an idle
    or half-sent connection never holds a descriptor for long."""

    def __init__(self, owner: HttpServer, inner: asyncio.Protocol) -> None:
        self._owner = owner
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        owner = self._owner
        if len(owner.connections) >= owner.max_connections:
            owner.refused += 1
            transport.abort()
            return
        self._counted = True
        owner.connections[transport] = self
        self._timer = asyncio.get_running_loop().call_later(owner.header_timeout_s, self._expired)
        self._inner.connection_made(transport)

    def request_started(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._owner.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._counted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._counted else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self.request_started()
        self._owner.connections.pop(self._transport, None)  # type: ignore[arg-type]
        self._inner.connection_lost(exc)


class HttpServer:
    """An aiohttp app on host:port (port 0: any free port, see :attr:`port`), hardened for
    a port that anyone on the network may reach (the metrics port listens on every address
    by default): at most ``max_connections`` open connections, a whole request within
    ``header_timeout_s`` of connecting, one request per connection."""

    def __init__(
        self,
        app: web.Application,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        app.middlewares.append(self._one_request)
        self._runner = web.AppRunner(app, access_log=None)
        self._server: asyncio.AbstractServer | None = None
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.connections: dict[asyncio.BaseTransport, _Guarded] = {}
        self.refused = 0  # connections closed at once: over the cap
        self.timed_out = 0  # connections closed: no whole request in time
        self.port = 0

    @web.middleware
    async def _one_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        guarded = self.connections.get(request.transport)  # type: ignore[arg-type]
        if guarded is not None:
            guarded.request_started()
        response: web.StreamResponse = await handler(request)
        response.force_close()
        return response

    async def start(self, host: str, port: int, allow_non_loopback: bool = True) -> int:
        if not allow_non_loopback and not is_loopback(host):
            raise ValueError(
                f"refusing to serve introspection on non-loopback {host}; "
                "set INTROSPECTION_ALLOW_NON_LOOPBACK=true to allow it"
            )
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(self, handlers()), host or None, port, reuse_address=True
        )
        sockets = self._server.sockets or ()
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self.connections):
            transport.abort()
        await self._runner.cleanup()
