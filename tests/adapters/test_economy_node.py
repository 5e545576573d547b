"""What the node tells an operator (issue 13): address, subnet, wait, throttle and prefix
metrics from a running daemon; the DescribeSubnets rate; /v1/subnets, /v1/fragmentation and
``ipamctl subnets`` / ``ipamctl fragmentation``."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from adapters.ipamctl.main import main as ipamctl_main
from adapters.ipamd.daemon import Daemon
from adapters.metrics import ECONOMY_NAMES, UPSTREAM_NAMES, SubnetWatch
from ipamcore.errors import FailureKind
from ipamcore.model import Subnet
from tests.adapters.harness import World, add_request, call, del_request, eventually
from tests.adapters.harness import until as harness_until


async def scrape(daemon: Daemon) -> str:
    assert daemon.metrics_server is not None
    url = f"http://127.0.0.1:{daemon.metrics_server.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


def value(text: str, sample: str) -> float:
    """The value of one sample line ``name{labels}`` (labels in any order)."""
    name, _, labels = sample.partition("{")
    want = set(re.findall(r'(\w+)="([^"]*)"', labels))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = set(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample}")


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_every_family_is_exposed_with_subnet_and_eni_labels(
    world: World, daemon: Daemon
) -> None:
    reply = await call(world.socket_path, add_request(1))
    eni = reply.result["eni_id"]
    await eventually(lambda: daemon.executor.effects_in_flight == 0)  # the pool as it stays
    text = await scrape(daemon)  # starts the first DescribeSubnets
    watch = daemon.executor.metrics.subnets
    assert watch is not None
    await until(lambda: bool(watch.described_at))
    text = await scrape(daemon)
    for name in UPSTREAM_NAMES + ECONOMY_NAMES:
        assert f"# TYPE {name} " in text, name
    subnet = world.subnet_id
    card = 'network_card="0"'
    assert value(text, f'awscni_assigned_ip_per_eni{{eni="{eni}",subnet="{subnet}",{card}}}') == 1
    stats = daemon.executor.stats()
    states = {
        s: value(text, f'awscni_ip_addresses{{subnet="{subnet}",eni="{eni}",state="{s}",{card}}}')
        for s in ("assigned", "available", "cooling", "leaving")
    }
    assert states["assigned"] == 1
    assert value(text, "awscni_available_ip_addresses") == stats.available
    free = world.cloud.free_addresses(subnet)
    labels = f'subnet="{subnet}",cidr="10.0.0.0/20",az="us-west-2a"'
    assert value(text, f"awscni_subnet_available_ip_addresses{{{labels}}}") == free
    assert value(text, f"awscni_subnet_usable_ip_addresses{{{labels}}}") == 4096 - 5
    assert value(text, f"awscni_subnet_node_ip_addresses{{{labels}}}") == stats.total + stats.enis
    assert value(text, "awscni_pods_waiting_for_ip") == 0


async def test_describe_subnets_once_per_interval_and_only_when_looked_at(
    world: World, daemon: Daemon
) -> None:
    watch = daemon.executor.metrics.subnets
    assert watch is not None and watch.calls == 0  # nobody looked yet: no call
    before = daemon.executor.calls.total("DescribeSubnets")
    for _ in range(5):
        await scrape(daemon)
        await until(lambda: not watch._busy)
    assert watch.calls == 1
    assert daemon.executor.calls.total("DescribeSubnets") == before + 1
    assert 540.0 <= watch.interval_s <= 600.0


def test_subnet_watch_refreshes_after_the_interval_and_keeps_errors() -> None:
    now = [1000.0]
    asked: list[tuple[str, ...]] = []
    fail = [False]

    def describe(ids: Any, _tag: str) -> list[Subnet]:
        asked.append(tuple(ids))
        if fail[0]:
            raise RuntimeError("RequestLimitExceeded")
        return [Subnet(i, "10.0.0.0/24", "az", 10) for i in ids]

    watch = SubnetWatch(describe, lambda: ["subnet-b", "subnet-a", "subnet-a"], interval_s=600,
                        clock=lambda: now[0], spawn=lambda fn: fn(), jitter=0.0)  # fmt: skip
    assert watch.current() == ([], {})  # the first look starts the call; figures next time
    subnets, _when = watch.current()
    assert [s.subnet_id for s in subnets] == ["subnet-a", "subnet-b"] and asked == [
        ("subnet-a", "subnet-b")]  # one call for all the node's subnets  # fmt: skip
    now[0] += 599
    watch.current()
    assert len(asked) == 1
    now[0] += 1
    fail[0] = True
    subnets, _ = watch.current()
    assert len(asked) == 2 and watch.error == "RequestLimitExceeded"
    assert [s.subnet_id for s in watch.current()[0]] == ["subnet-a", "subnet-b"]  # kept


async def test_waiting_pods_their_wait_histogram_and_throttles(world: World) -> None:
    daemon = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="30")
    await daemon.start()
    try:
        world.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.THROTTLED)
        task = asyncio.create_task(call(world.socket_path, add_request(1)))
        await eventually(lambda: daemon.executor.calls.total("AssignPrivateIpAddresses") >= 1)
        await eventually(lambda: daemon.executor.waiting == 1)
        text = await scrape(daemon)
        assert value(text, "awscni_pods_waiting_for_ip") == 1  # waiting now
        assert value(text, "awscni_ip_wait_seconds_count") == 0  # not served yet
        throttled = ('awscni_aws_api_error_count{api="AssignPrivateIpAddresses",'
                     'error="RequestLimitExceeded"}')  # fmt: skip
        assert value(text, throttled) == 1
        assert value(text, 'awscni_ec2api_error_count{fn="AssignPrivateIpAddresses"}') == 1
        await harness_until(task.done, world.clock, step=1.0)
        assert task.result().ok
        text = await scrape(daemon)
        assert value(text, "awscni_pods_waiting_for_ip") == 0
        assert value(text, "awscni_ip_wait_seconds_count") == 1
        waited = value(text, "awscni_ip_wait_seconds_sum")
        assert 1.0 <= waited <= 30.0  # virtual seconds: the throttle pause, then one call
        assert value(text, 'awscni_ip_wait_seconds_bucket{le="0.5"}') == 0
        assert value(text, 'awscni_ip_wait_seconds_bucket{le="+Inf"}') == 1
    finally:
        await daemon.stop()


async def test_pods_waiting_now_is_read_at_scrape_time(world: World, daemon: Daemon) -> None:
    node = daemon.executor.node
    node.waiting_adds = lambda: (3, None)  # type: ignore[method-assign]  # what the node counts
    try:
        assert value(await scrape(daemon), "awscni_pods_waiting_for_ip") == 3
    finally:
        del node.waiting_adds


async def test_prefix_fragmentation_metrics_and_ipamctl(world: World) -> None:
    daemon = world.daemon(ENABLE_PREFIX_DELEGATION="true", WARM_PREFIX_TARGET="1")
    await daemon.start()
    try:
        for n in range(1, 41):
            assert (await call(world.socket_path, add_request(n))).ok
        for n in range(17, 31):
            assert (await call(world.socket_path, del_request(n))).ok
        text = await scrape(daemon)
        subnet = world.subnet_id
        uses = {u: value(text, f'awscni_ipv4_prefixes_by_use{{subnet="{subnet}",use="{u}"}}')
                for u in ("empty", "sparse", "partial", "full")}  # fmt: skip
        assert sum(uses.values()) == daemon.executor.stats().prefixes
        assert uses["full"] >= 1 and uses["sparse"] >= 1
        freeable = value(text, f'awscni_ipv4_prefixes_freeable_by_repacking{{subnet="{subnet}"}}')
        assert freeable >= 1
        assert daemon.introspection is not None
        url = f"http://127.0.0.1:{daemon.introspection.port}"
        out = io.StringIO()
        code = await asyncio.to_thread(ipamctl_main, ["--introspection", url,
                                                      "fragmentation"], out)  # fmt: skip
        text = out.getvalue()
        assert code == 0 and "FREEABLE BY REPACKING" in text
        assert "Recommendation only: ipamd moves no pod" in text and "drain 10.0." in text
        assert "default/pod-" in text
        out = io.StringIO()
        code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "--json",
                                                      "fragmentation"], out)  # fmt: skip
        assert code == 0 and '"freeable"' in out.getvalue()
    finally:
        await daemon.stop()


async def test_ipamctl_subnets_shows_free_blocks_and_the_node_share(
    world: World, daemon: Daemon
) -> None:
    await call(world.socket_path, add_request(1))
    await eventually(lambda: daemon.executor.effects_in_flight == 0)
    assert daemon.introspection is not None
    url = f"http://127.0.0.1:{daemon.introspection.port}"
    out = io.StringIO()
    code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "subnets"], out)
    text = out.getvalue()
    assert code == 0, text
    row = next(line for line in text.splitlines() if line.startswith(world.subnet_id))
    free = world.cloud.free_addresses(world.subnet_id)
    blocks = min(free // 16, 4096 // 16 - 2)  # not the first or last /28: EC2 reserves there
    assert "10.0.0.0/20" in row and f"{free:,}" in row and f"  {blocks:,}  " in row
    assert "from DescribeSubnets" in text and "upper bound" in text
    out = io.StringIO()
    code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "--json",
                                                  "subnets"], out)  # fmt: skip
    assert code == 0 and '"node_share_of_used"' in out.getvalue()


async def test_fragmentation_without_prefixes_says_so(world: World, daemon: Daemon) -> None:
    assert daemon.introspection is not None
    url = f"http://127.0.0.1:{daemon.introspection.port}"
    out = io.StringIO()
    code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "fragmentation"], out)
    assert code == 0 and "prefix delegation is off" in out.getvalue()
