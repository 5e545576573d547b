"""The whole node on this machine: moto_server, the metadata server, vpc-ipamd with the EC2
backend over HTTP and the pyroute2 datapath, pods made through the CNI plugin in real network
namespaces. Needs root (skipped otherwise)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.localnode import LocalNode, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]


@pytest.fixture
def node() -> Iterator[LocalNode]:
    # c5.4xlarge: 29 secondary IPs on the primary ENI, enough for 20 pods with MAX_ENI=1
    with local_node(real=True, instance_type="c5.4xlarge",
                    extra_env={"WARM_IP_TARGET": "5", "IPAMD_POLICY_INTERVAL_SECONDS": "1"}) as n:
        yield n


def host_state(node: LocalNode) -> dict[str, str]:
    ns = ["ip", "-n", node.node_netns]
    return {
        what: subprocess.run([*ns, *cmd], capture_output=True, text=True, check=True).stdout
        for what, cmd in {
            "links": ["-o", "link", "show"],
            "rules": ["rule", "show"],
            "routes": ["route", "show", "table", "all"],
        }.items()
    }


def test_twenty_pods_reach_each_other_and_leave_nothing_behind(node: LocalNode) -> None:
    primary_ip = node_primary_ip(node)
    before = host_state(node)
    pods = [node.add_pod(f"p{i}") for i in range(20)]
    ips = [p.ip for p in pods]
    assert len(set(ips)) == 20
    for a, b in zip(pods, pods[1:] + pods[:1], strict=True):
        assert node.ping(a, b.ip), f"{a.name} cannot reach {b.name}"
    assert node.ping(pods[0], primary_ip), "pod cannot reach the host"
    for p in pods:
        node.check_pod(p.name)
    listing = node.ipamctl("pods")
    for p in pods:
        assert p.ip in listing
    for p in pods:
        node.del_pod(p.name)
    after = host_state(node)
    for what in before:
        gone = set(before[what].splitlines()) - set(after[what].splitlines())
        extra = set(after[what].splitlines()) - set(before[what].splitlines())
        assert (sorted(gone), sorted(extra)) == ([], []), what


def node_primary_ip(node: LocalNode) -> str:
    out = subprocess.run(
        ["ip", "-n", node.node_netns, "-4", "-o", "addr", "show", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split("inet ")[1].split("/")[0]


def test_sigkill_mid_burst_keeps_acknowledged_and_leaks_nothing(node: LocalNode) -> None:
    names = [f"k{i}" for i in range(12)]
    netns = {n: node.make_netns(n) for n in names}
    acked: dict[str, str] = {}

    def add(name: str) -> tuple[str, str | None]:
        try:
            result = node.plugin("ADD", name, netns[name], f"c{name}{os.getpid()}")
            return name, str(result["ips"][0]["address"]).split("/")[0]
        except Exception:
            return name, None

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(add, n) for n in names]
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            name, ip = future.result()
            if ip is not None:
                acked[name] = ip
            if done == 5 and node.daemon is not None:
                node.daemon.send_signal(signal.SIGKILL)
                node.daemon.wait()
                node.daemon = None
    assert acked, "no ADD was acknowledged before the kill"
    node.start_daemon()
    listing = node.ipamctl("--json", "pods")
    held = {row["IP"] for row in _rows(listing)}
    for name, ip in acked.items():
        assert ip in held, f"acknowledged {name} ({ip}) lost"
    assert len(held) == len(_rows(listing)), "an address is held twice"
    # the runtime DELs every pod whose ADD failed; then only acknowledged pods hold addresses
    for name in names:
        if name not in acked:
            node.plugin("DEL", name, netns[name], f"c{name}{os.getpid()}")
    assert len(_rows(node.ipamctl("--json", "pods"))) == len(acked)


def _rows(listing: str) -> list[dict[str, Any]]:
    """``ipamctl --json pods``: one object per pod interface, keyed by ns/name/ifname."""
    doc: dict[str, dict[str, Any]] = json.loads(listing)
    return list(doc.values())


def test_del_while_the_daemon_is_down_frees_the_address_after_restart(node: LocalNode) -> None:
    pod = node.add_pod("down")
    node.stop_daemon(signal.SIGKILL)
    node.plugin("DEL", "down", pod.netns, pod.container_id, pod.result)
    node.pods.pop("down")
    node.start_daemon()
    assert pod.ip not in node.ipamctl("pods")
