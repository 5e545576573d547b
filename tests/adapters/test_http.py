"""Introspection endpoints (upstream shapes) and Prometheus metrics (upstream names)."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from adapters.introspection import HttpServer, go_cidr, make_app
from adapters.ipamd.daemon import Daemon
from adapters.metrics import UPSTREAM_NAMES
from tests.adapters.harness import World, add_request, call


async def get(port: int, path: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        if path == "/metrics":
            return await response.text()
        return await response.json()


async def test_enis_in_upstream_shape(world: World, daemon: Daemon) -> None:
    reply = await call(world.socket_path, add_request(1))
    ip = reply.result["ipv4"]
    assert daemon.introspection is not None
    doc = await get(daemon.introspection.port, "/v1/enis")
    assert doc["AssignedIPs"] == 1 and doc["TotalIPs"] == daemon.executor.stats().total
    eni = doc["ENIs"][reply.result["eni_id"]]
    assert set(eni) == {"ID", "IsPrimary", "IsTrunk", "IsEFA", "DeviceNumber",
                        "AvailableIPv4Cidrs", "IPv6Cidrs"}  # fmt: skip
    assert eni["IPv6Cidrs"] == {}  # upstream's field, empty without IPv6
    cidr = eni["AvailableIPv4Cidrs"][f"{ip}/32"]
    assert cidr["Cidr"] == {"IP": ip, "Mask": "/////w=="}
    assert cidr["IsPrefix"] is False and cidr["AddressFamily"] == "4"
    entry = cidr["IPAddresses"][ip]
    assert entry["IPAMKey"] == {"networkName": "aws-cni", "containerID": "", "ifName": "eth0"}
    assert entry["IPAMMetadata"] == {"k8sPodNamespace": "default", "k8sPodName": "pod-1"}
    assert entry["AssignedTime"].endswith("Z") and entry["UnassignedTime"].startswith("0001")


async def test_pods_stats_and_env(world: World, daemon: Daemon) -> None:
    await call(world.socket_path, add_request(1))
    assert daemon.introspection is not None
    port = daemon.introspection.port
    pods = await get(port, "/v1/pods")
    ((key, row),) = pods.items()
    assert key == f"aws-cni/{row['Container']}/eth0" and len(row["Container"]) == 12
    assert (row["Namespace"], row["Name"]) == ("default", "pod-1")
    stats = await get(port, "/stats")
    assert stats["assigned"] == 1 and stats["enis"] >= 1
    assert stats["ec2_calls"]["AssignPrivateIpAddresses"]["ok"] >= 1
    env = await get(port, "/v1/ipamd-env-settings")
    assert env["IPAMD_CLOUD"] == "fake"
    assert await get(port, "/v1/networkutils-env-settings") == {}


async def test_metrics_have_upstream_names(world: World, daemon: Daemon) -> None:
    await call(world.socket_path, add_request(1))
    await call(world.socket_path, add_request(1))
    assert daemon.metrics_server is not None
    text = await get(daemon.metrics_server.port, "/metrics")
    for name in UPSTREAM_NAMES:
        assert f"# TYPE {name} " in text, name
    assert "awscni_add_ip_req_count 2.0" in text
    assert 'awscni_assigned_ip_addresses{network_card="0"} 1.0' in text
    assert 'awscni_ec2api_req_count{fn="AssignPrivateIpAddresses"}' in text
    assert "awscni_ipamd_add_latency_seconds_bucket" in text


async def test_two_daemons_keep_separate_registries() -> None:
    worlds = [World.create(), World.create()]
    daemons = [w.daemon() for w in worlds]
    try:
        for d in daemons:
            await d.start()
        await call(worlds[0].socket_path, add_request(1))
        assert daemons[0].executor.metrics.add_req._value.get() == 1
        assert daemons[1].executor.metrics.add_req._value.get() == 0
    finally:
        for d in daemons:
            await d.stop()
        for w in worlds:
            w.cleanup()


async def test_refuses_non_loopback_unless_allowed(daemon: Daemon) -> None:
    server = HttpServer(make_app(daemon.executor, {}))
    with pytest.raises(ValueError, match="INTROSPECTION_ALLOW_NON_LOOPBACK"):
        await server.start("0.0.0.0", 0, allow_non_loopback=False)


def test_go_cidr_mask_is_base64() -> None:
    assert go_cidr("10.0.0.16/28") == {
        "IP": "10.0.0.16", "Mask": base64.b64encode(bytes([255, 255, 255, 240])).decode(),
    }  # fmt: skip


# ---------------------------------------------------------------- issue 16, item 11


async def _closed_by_server(reader: Any) -> bool:
    """Whether the server closes (EOF or reset) the connection: waits on the socket, not a
    timer of its own."""
    import asyncio

    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


async def test_http_server_caps_connections_and_closes_half_sent_requests() -> None:
    import asyncio

    from aiohttp import web

    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/", hello)
    server = HttpServer(app, header_timeout_s=0.2, max_connections=4)
    port = await server.start("127.0.0.1", 0)
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        held[0][1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        over = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(over[0])  # past the cap: closed at once
        for reader, _writer in held:  # idle or half-sent: closed after the header timeout
            assert await _closed_by_server(reader)
        assert server.refused >= 1 and server.timed_out == 4
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hi")
        for _reader, w in [*held, over, (reader, writer)]:
            w.close()
    finally:
        await server.stop()


def test_loop_errors_are_logged_once_per_interval() -> None:
    from adapters.ipamd.logs import LoopErrorLog

    lines: list[dict[str, Any]] = []

    class Log:
        def error(self, event: str, **kw: Any) -> None:
            lines.append({"event": event, **kw})

    now = [0.0]
    handler = LoopErrorLog(Log(), interval_s=10.0, now=lambda: now[0])
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24)}
    for _ in range(1000):
        handler(None, context)
    now[0] = 11.0
    handler(None, context)
    assert [line["suppressed_since_last"] for line in lines] == [0, 999]
    assert all(line["exception"] == "OSError" for line in lines)
