"""The shipped alert rules and Grafana dashboard (deploy/monitoring/) against a running daemon:
every metric they name is exposed, ``promtool check rules`` accepts them, and each alert's
expression, evaluated by ``promtool test rules`` over series made from two scrapes of a real
daemon, fires for a node in trouble (subnet nearly full, pods waiting, EC2 throttling) and
stays quiet for a healthy one.

promtool comes with Debian's ``prometheus`` package (``./dev`` installs it as root); without
it the promtool tests are skipped, the others still run.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.ipamd.clock import VirtualClock
from adapters.ipamd.daemon import Daemon
from backends.fakecloud import FakeCloud
from ipamcore.errors import FailureKind
from tests.adapters.harness import (
    AutoFakeDatapath,
    World,
    add_request,
    call,
    eventually,
    settle_loop,
    until,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)
NAME = re.compile(r"\bawscni_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
INSTANCE = "node-1:61678"
COUNTERS = {"awscni_no_available_ip_addresses", "awscni_force_removed_enis",
            "awscni_force_removed_ips"}  # upstream's counters without a _count suffix


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables given values."""
    return expr.replace("$__rate_interval", "5m").replace('"$subnet"', '".*"')


# --------------------------------------------------------------------------- structure
def test_every_alert_has_severity_summary_description_and_a_duration() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]


def test_dashboard_is_grafana_json_with_targets() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in doc["panels"]]
    assert len(set(ids)) == len(ids)
    assert len(dashboard_exprs()) >= 12


# ------------------------------------------------------------------ against a daemon
async def scrape(daemon: Daemon) -> str:
    assert daemon.metrics_server is not None
    url = f"http://127.0.0.1:{daemon.metrics_server.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def scraped_twice(daemon: Daemon, between: Any) -> tuple[str, str]:
    """Two scrapes (the first also starts DescribeSubnets), ``between()`` awaited between."""
    await scrape(daemon)
    watch = daemon.executor.metrics.subnets
    assert watch is not None
    await eventually(lambda: bool(watch.described_at))
    first = await scrape(daemon)
    await between()
    return first, await scrape(daemon)


def test_every_metric_the_rules_and_dashboard_name_is_exposed(healthy: tuple[str, str]) -> None:
    exposed = set()
    for family in text_string_to_metric_families(healthy[1]):
        exposed.add(family.name)
        exposed |= {s.name for s in family.samples}
        if family.type == "histogram":
            exposed |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
    named = set()
    for expr in [r["expr"] for r in alert_rules()] + dashboard_exprs():
        named |= set(NAME.findall(expr))
    assert not sorted(named - exposed), sorted(named - exposed)


@needs_promtool
def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": concrete(e)}
        for i, e in enumerate(dashboard_exprs())]}]}  # fmt: skip
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(recorded))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------- evaluating the alert expressions
def series_from(first: str, second: str, minutes: int = 120) -> list[dict[str, str]]:
    """promtool input series: each sample of the scrapes, with the instance label, going
    from the first scrape's value by the difference to the second each minute (gauges that
    did not move stay flat); description times are taken as refreshed each minute."""
    def samples(text: str) -> dict[str, float]:
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                labels = dict(s.labels, instance=INSTANCE, job="aws-node")
                body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                out[f"{s.name}{{{body}}}"] = s.value
        return out

    a, b = samples(first), samples(second)
    series = []
    for key, v1 in b.items():
        name = key.partition("{")[0]
        if key.startswith("awscni_subnet_described_timestamp_seconds"):
            values = f"0+60x{minutes}"
        elif name.endswith(("_count", "_bucket", "_sum")) or name in COUNTERS:
            v0 = a.get(key, 0.0)  # a counter goes on growing as it did between the scrapes
            values = f"{v0:g}{(v1 - v0):+g}x{minutes}"
        else:
            values = f"{v1:g}x{minutes}"  # a gauge stays where the second scrape found it
        series.append({"series": key, "values": values})
    return series


def expected_to_fire(first: str, second: str, firing: set[str], tmp_path: Path) -> str:
    """Run promtool test rules: each alert's expression at 60 min, expected non-empty for the
    alerts in ``firing`` and empty for the others. The output of promtool."""
    assert PROMTOOL is not None
    tests = []
    for rule in alert_rules():
        expr = "clamp_max(count(" + rule["expr"].strip() + "), 1)"
        exp = [{"labels": "{}", "value": 1}] if rule["alert"] in firing else []
        tests.append({"expr": expr, "eval_time": "60m", "exp_samples": exp})
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series_from(first, second),
         "promql_expr_test": tests}]}  # fmt: skip
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(doc, width=1000))
    done = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def healthy() -> Iterator[tuple[str, str]]:
    """Two scrapes of a daemon doing well: pods come and get addresses at once."""

    async def run() -> tuple[str, str]:
        world = World.create("m5.xlarge")
        daemon = world.daemon()
        await daemon.start()
        try:
            for n in range(1, 4):
                assert (await call(world.socket_path, add_request(n))).ok

            async def more() -> None:
                for n in range(4, 8):
                    assert (await call(world.socket_path, add_request(n))).ok

            return await scraped_twice(daemon, more)
        finally:
            await daemon.stop()
            world.cleanup()

    yield asyncio.run(run())


def trouble_world() -> World:
    """A /27 subnet (27 usable addresses) that three other instances already use."""
    clock = VirtualClock()
    cloud = FakeCloud(throttling=False, clock=clock.now)
    subnet = cloud.add_subnet("10.0.0.0/27")
    for _ in range(3):
        cloud.launch_instance("m5.large", subnet)
    instance = cloud.launch_instance("m5.large", subnet)
    state_dir = tempfile.mkdtemp(prefix="ipamd-", dir="/tmp")
    return World(clock, cloud, instance, subnet, AutoFakeDatapath(), state_dir)


@pytest.fixture(scope="module")
def trouble() -> Iterator[tuple[str, str]]:
    """Two scrapes of a node in trouble: its subnet nearly full, pods waiting, EC2
    throttling its calls."""

    async def run() -> tuple[str, str]:
        world = trouble_world()
        daemon = world.daemon(IPAMD_ADD_WAIT_SECONDS="300")
        await daemon.start()
        waiting: list[asyncio.Task[Any]] = []
        try:
            for n in range(1, 10):
                assert (await call(world.socket_path, add_request(n))).ok
            # the warm pool's next ENI takes the subnet under 15 % free (4 of 27): wait for it
            await until(lambda: world.cloud.free_addresses(world.subnet_id) <= 4
                        and daemon.executor.effects_in_flight == 0, world.clock, step=1.0)
            world.cloud.fail_when(lambda *_a: True, FailureKind.THROTTLED,
                                  action="AssignPrivateIpAddresses")  # fmt: skip
            world.cloud.fail_when(lambda *_a: True, FailureKind.THROTTLED,
                                  action="CreateNetworkInterface")  # fmt: skip
            waiting = [asyncio.create_task(call(world.socket_path, add_request(n), 60.0))
                       for n in range(10, 40)]  # fmt: skip
            await eventually(lambda: daemon.executor.waiting >= 1)

            async def more_throttles() -> None:
                before = daemon.executor.calls.total(outcome="throttled")
                for _ in range(30):
                    await world.clock.advance(2.0)
                    await settle_loop()
                    await asyncio.sleep(0.002)
                    if daemon.executor.calls.total(outcome="throttled") > before:
                        break
                assert daemon.executor.calls.total(outcome="throttled") > before

            return await scraped_twice(daemon, more_throttles)
        finally:
            world.cloud.clear_faults()  # the waiting ADDs end (served, or out of time)
            await until(lambda: all(t.done() for t in waiting), world.clock, step=10.0)
            await asyncio.gather(*waiting, return_exceptions=True)
            await daemon.stop()
            world.cleanup()

    yield asyncio.run(run())


TROUBLE_FIRES = {
    "VpcCniSubnetAddressesLow",
    "VpcCniSubnetAddressesCritical",
    "VpcCniPodsWaitingForAddress",
    "VpcCniEc2Throttled",
    "VpcCniEc2Errors",
}


@needs_promtool
def test_alert_expressions_fire_for_a_node_in_trouble(
    trouble: tuple[str, str], tmp_path: Path
) -> None:
    expected_to_fire(*trouble, TROUBLE_FIRES, tmp_path)


@needs_promtool
def test_alert_expressions_stay_quiet_for_a_healthy_node(
    healthy: tuple[str, str], tmp_path: Path
) -> None:
    expected_to_fire(*healthy, set(), tmp_path)
