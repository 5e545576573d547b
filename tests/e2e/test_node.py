"""The whole node on this machine: moto_server, the metadata server, vpc-ipamd with the EC2
backend over HTTP and the pyroute2 datapath, and pods made by a real CNI runtime library
(libcni, ``tests/cni/runner``) with the shipped conflist (vpc-cni chained with portmap) in
real network namespaces. ENIs that the daemon attaches are hot-plugged into the node namespace
by the harness (``tests/rigs/eni_hotplug.py``), so an m5.large's 3 ENIs x 10 addresses are all
used. Needs root, go, golang-github-appc-cni-dev and /usr/lib/cni/portmap (skipped otherwise).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipamcore.netspec import route_table_for_device
from tests.rigs.cni_runtime import SYSTEM_CNI_DIR, CniError
from tests.rigs.localnode import LocalNode, Pod, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]

SUBNET_GATEWAY = "10.0.0.1"  # first address of localnode.SUBNET_CIDR


@pytest.fixture
def node(libcni_runner: Path) -> Iterator[LocalNode]:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR} (apt-get install containernetworking-plugins)")
    # m5.large: 3 ENIs x 10 addresses (9 for pods each), so 20 pods need all three ENIs.
    with local_node(
        real=True,
        instance_type="m5.large",
        libcni_runner=str(libcni_runner),
        extra_env={"WARM_IP_TARGET": "5", "IPAMD_POLICY_INTERVAL_SECONDS": "1"},
    ) as n:
        yield n


def node_ip(node: LocalNode, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", node.node_netns, *args], capture_output=True, text=True, check=True
    ).stdout


def host_state(node: LocalNode) -> dict[str, list[str]]:
    return {
        "links": [
            # the name and MAC only: counters and flags of a link change with traffic
            " ".join(line.split()[1:2] + line.split("link/ether")[1:2]).strip()
            for line in node_ip(node, "-o", "link", "show").splitlines()
        ],
        "rules": node_ip(node, "rule", "show").splitlines(),
        "routes": node_ip(node, "route", "show", "table", "all").splitlines(),
    }


def mentions(line: str, ip: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d.])", line) is not None


def pod_rows(node: LocalNode) -> dict[str, dict[str, Any]]:
    """``ipamctl --json pods`` by pod name."""
    doc: dict[str, dict[str, Any]] = json.loads(node.ipamctl("--json", "pods"))
    return {row["Name"]: row for row in doc.values()}


def node_primary_ip(node: LocalNode) -> str:
    return node_ip(node, "-4", "-o", "addr", "show", "eth0").split("inet ")[1].split("/")[0]


def test_twenty_pods_across_three_enis_reach_each_other_and_leave_nothing_behind(
    node: LocalNode,
) -> None:
    before = host_state(node)
    pods = [node.add_pod(f"p{i}") for i in range(20)]
    ips = [p.ip for p in pods]
    assert len(set(ips)) == 20

    # The pods span the three ENIs; the daemon found each hot-plugged device by its MAC.
    rows = pod_rows(node)
    device_of = {p.name: int(rows[p.name]["DeviceNumber"]) for p in pods}
    assert {rows[p.name]["IP"] for p in pods} == set(ips)
    assert sorted(set(device_of.values())) == [0, 1, 2], device_of
    assert node.hotplug is not None
    plugged = {link.device_index: link.link for link in node.hotplug.plugged.values()}
    assert sorted(plugged) == [1, 2]
    for device, link in plugged.items():
        table = route_table_for_device(device)
        routes = node_ip(node, "route", "show", "table", str(table))
        assert f"default via {SUBNET_GATEWAY} dev {link}" in routes, (link, routes)

    # Pods on secondary ENIs leave through their ENI's table; pods on the primary do not.
    rules = node_ip(node, "rule", "show").splitlines()
    for p in pods:
        table = route_table_for_device(device_of[p.name])
        from_rules = [r for r in rules if f"from {p.ip} " in r + " "]
        expected = [] if table is None else [f"1536:\tfrom {p.ip} lookup {table}"]
        assert from_rules == expected, (p.name, device_of[p.name])
        assert f"512:\tfrom all to {p.ip} lookup main" in rules

    # Every pod reaches the next one (across ENIs) and the host.
    primary_ip = node_primary_ip(node)
    for a, b in zip(pods, pods[1:] + pods[:1], strict=True):
        assert node.ping(a, b.ip), f"{a.name} (device {device_of[a.name]}) cannot reach {b.name}"
    for device in (0, 1, 2):
        first = next(p for p in pods if device_of[p.name] == device)
        assert node.ping(first, primary_ip), f"a pod on device {device} cannot reach the host"

    for p in pods:
        assert node.check_pod(p.name) == {}
    listing = node.ipamctl("pods")
    for p in pods:
        assert p.ip in listing and p.name in listing

    for p in pods:
        node.del_pod(p.name)
    assert pod_rows(node) == {}
    after = host_state(node)
    # Nothing of any pod is left: no veth, rule or route naming a pod address.
    assert not [link for link in after["links"] if link.startswith("eni")]
    for what, lines in after.items():
        assert not [line for line in lines for ip in ips if mentions(line, ip)], what
    # Nothing that was there is gone; what was added belongs to the two hot-plugged ENIs
    # (their links, their tables, their "from <ENI address>" rules), which stay attached.
    eni_marks = [f"{link}" for link in plugged.values()]
    eni_marks += [f"uplink{device}" for device in plugged]
    eni_marks += [f"lookup {route_table_for_device(d)}" for d in plugged]
    for what in before:
        gone = sorted(set(before[what]) - set(after[what]))
        extra = sorted(
            line
            for line in set(after[what]) - set(before[what])
            if not any(re.search(rf"\b{re.escape(mark)}\b", line) for mark in eni_marks)
        )
        assert (gone, extra) == ([], []), what


def test_sigkill_mid_burst_keeps_acknowledged_and_leaks_nothing(node: LocalNode) -> None:
    names = [f"k{i}" for i in range(16)]
    netns = {n: node.make_netns(n) for n in names}
    container = {n: f"c{n}{node.tag.replace('-', '')}" for n in names}
    acked: dict[str, str] = {}

    def add(name: str) -> tuple[str, str | None]:
        try:
            result = node.plugin("ADD", name, netns[name], container[name])
        except CniError:
            return name, None
        return name, str(result["ips"][0]["address"]).split("/")[0]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(add, n) for n in names]
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            name, ip = future.result()
            if ip is not None:
                acked[name] = ip
            if done == 6 and node.daemon is not None:
                node.daemon.send_signal(signal.SIGKILL)
                node.daemon.wait()
                node.daemon = None
    assert acked, "no ADD was acknowledged before the kill"
    assert len(acked) < len(names), "every ADD finished before the kill: no burst was cut"
    node.start_daemon()

    rows = pod_rows(node)
    held = [row["IP"] for row in rows.values()]
    assert len(held) == len(set(held)), "an address is held twice"
    for name, ip in acked.items():
        assert name in rows and rows[name]["IP"] == ip, f"acknowledged {name} ({ip}) lost"
    # The runtime DELs every pod whose ADD failed; then only acknowledged pods hold addresses.
    for name in names:
        if name not in acked:
            node.plugin("DEL", name, netns[name], container[name])
    assert {n: r["IP"] for n, r in pod_rows(node).items()} == acked
    # and the acknowledged pods still reach each other
    first, *others = sorted(acked)
    pinger = Pod(first, container[first], netns[first], {"ips": [{"address": acked[first]}]})
    for other in others:
        assert node.ping(pinger, acked[other]), f"{first} cannot reach {other}"


def test_del_while_the_daemon_is_down_frees_the_address_after_restart(node: LocalNode) -> None:
    pod = node.add_pod("down")
    node.stop_daemon(signal.SIGKILL)
    node.plugin("DEL", "down", pod.netns, pod.container_id)  # libcni: exit 0
    node.pods.pop("down")
    pending = os.listdir(node.env["IPAMD_PENDING_DEL_DIR"])
    assert pending, "the DEL left no record for the daemon"
    node.start_daemon()
    assert "down" not in pod_rows(node)
    assert pod.ip not in node.ipamctl("pods")
    assert os.listdir(node.env["IPAMD_PENDING_DEL_DIR"]) == []
    state = host_state(node)
    assert not [line for lines in state.values() for line in lines if mentions(line, pod.ip)]


def test_the_flight_record_of_a_real_run_replays_bit_for_bit(node: LocalNode) -> None:
    """Issue 17 section 4: the daemon (moto's EC2, the real datapath) records every input of
    its node; ``ipamctl replay``, another process, gives every command again."""
    for name in ("fr-a", "fr-b", "fr-c"):
        node.add_pod(name)
    node.del_pod("fr-b")
    assert node.stop_daemon() == 0
    state_dir = os.path.dirname(node.env["AWS_VPC_K8S_CNI_BACKING_STORE"])
    record = os.path.join(state_dir, "flight.log")
    replay = node.ipamctl("replay", record)
    assert "commands reproduced bit for bit" in replay, replay
    story = node.ipamctl("explain", "--log", record, "--pod", "demo/fr-c")
    assert "reply: 10." in story, story
    node.start_daemon()  # the fixture's clean-up talks to a running daemon
