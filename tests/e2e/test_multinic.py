"""Issue 12, multiple network cards, on the whole node: the real daemon with
``ENABLE_MULTI_NIC=true`` on a two-card instance type (c6in.32xlarge) against moto through
the hot-plug proxy (which plays the hypervisor: one link per ENI, on its card), the pyroute2
datapath in network namespaces, and libcni with the shipped conflist. A pod annotated
``k8s.amazonaws.com/nicConfig: multi-nic-attachment`` (handed to the plugin in runtimeConfig,
as containerd does, never read from an API server) gets one interface per card; traffic
flows on each; CHECK and DEL cover every interface and leave the node as it was. Needs root,
go and the CNI packages (skipped otherwise)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_attachments import node_ip, primary_ip
from tests.rigs.cni_runtime import SYSTEM_CNI_DIR
from tests.rigs.localnode import LocalNode, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]

MULTI_NIC = {"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"}
CARD1_TABLE = 1 * 8 + 0 + 1  # upstream: card * max ENIs (8) + device (0: the first on card 1) + 1


@pytest.fixture
def node(libcni_runner: Path) -> Iterator[LocalNode]:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR} (apt-get install containernetworking-plugins)")
    with local_node(
        real=True, instance_type="c6in.32xlarge", libcni_runner=str(libcni_runner),
        extra_env={"ENABLE_MULTI_NIC": "true"},
    ) as n:  # fmt: skip
        yield n


def settled(node: LocalNode) -> str:
    """The node's links, rules and routes (kernel-made IPv6 link-local entries left out)."""
    text = "\n".join(
        node_ip(node, *args)
        for args in (["-d", "link"], ["rule"], ["route", "show", "table", "all"])
    )
    return "\n".join(line for line in text.splitlines() if "fe80::" not in line)


def enis(node: LocalNode) -> dict[str, Any]:
    with urllib.request.urlopen(node.introspection_url + "/v1/enis", timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)["ENIs"]
    return doc


def wait_for_card_eni(node: LocalNode, timeout: float = 60.0) -> dict[str, Any]:
    """The daemon creates an ENI on card 1 at start (upstream's warm address per card): wait
    for it to be attached, its link plugged and its table set up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        on_card = [e for e in enis(node).values() if e.get("NetworkCard") == 1]
        routes = subprocess.run(
            ["ip", "-n", node.node_netns, "route", "show", "table", str(CARD1_TABLE)],
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip (the table exists only once set up)
        if on_card and "default via" in routes:
            return on_card[0]
        time.sleep(0.2)
    raise AssertionError(f"no ENI on card 1 within {timeout:.0f} s: {enis(node)}")


def add(
    node: LocalNode, pod: str, annotations: dict[str, str] | None = None
) -> tuple[str, str, dict[str, Any]]:
    """ADD through libcni, once: a multi-NIC ADD that finds a card without an address waits
    in the daemon for the card to grow (no retry needed)."""
    container = f"c{pod.replace('-', '')}{node.tag.replace('-', '')}"
    netns = node.make_netns(pod)
    return container, netns, node.plugin("ADD", pod, netns, container, annotations=annotations)


def ping_from(netns: str, source: str, dst: str) -> bool:
    argv = ["ip", "netns", "exec", os.path.basename(netns), "ping", "-c", "1", "-W", "2",
            "-I", source, dst]  # fmt: skip
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_a_multi_nic_pod_through_libcni_gets_an_interface_per_card(node: LocalNode) -> None:
    card_eni = wait_for_card_eni(node)
    assert card_eni["DeviceNumber"] == 0 and not card_eni["IsPrimary"]  # upstream: device 0 first
    host = primary_ip(node)
    before = settled(node)

    single_c, single_ns, single = add(node, "web-0")
    # Two multi-NIC pods at once while card 1 holds one warm address: one of them finds the
    # card dry and waits in the daemon until the card grows; both succeed on the first ADD.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = [pool.submit(add, node, name, MULTI_NIC) for name in ("trainer-0", "trainer-9")]
        (multi_c, multi_ns, multi), (other_c, other_ns, other) = [f.result() for f in both]
    assert len(other["ips"]) == 2 and other["ips"][1]["address"] != multi["ips"][1]["address"]

    assert len(single["ips"]) == 1
    names = [i["name"] for i in multi["interfaces"] if i.get("sandbox")]
    assert names == ["eth0", "mNicIf1"]
    addresses = [ip["address"].split("/")[0] for ip in multi["ips"]]
    assert len(addresses) == 2 and [ip["interface"] for ip in multi["ips"]] == [1, 3]
    assert [ip["gateway"] for ip in multi["ips"]] == ["169.254.1.1", "169.254.1.2"]
    # Each address is from its card's ENIs.
    by_card = {
        e.get("NetworkCard", 0): {c.split("/")[0] for c in e["AvailableIPv4Cidrs"]}
        for e in enis(node).values()
    }
    assert addresses[1] in by_card[1] and addresses[0] not in by_card[1]
    # Traffic on each interface: to the node, and to the single-interface pod and back.
    single_ip = single["ips"][0]["address"].split("/")[0]
    for address in addresses:
        assert ping_from(multi_ns, address, host), address
        assert ping_from(single_ns, single_ip, address), address
    # Interface 1 routes through card 1's table on the node.
    assert f"from {addresses[1]} lookup {CARD1_TABLE}" in node_ip(node, "rule")
    rules_in_pod = subprocess.run(
        ["ip", "netns", "exec", os.path.basename(multi_ns), "ip", "rule"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"from {addresses[1]} lookup 1" in rules_in_pod
    # ipamctl shows the second attachment and its card.
    pods = node.ipamctl("pods")
    assert "mNicIf1" in pods and addresses[1] in pods

    node.plugin("CHECK", "trainer-0", multi_ns, multi_c, annotations=MULTI_NIC)
    node.plugin("DEL", "trainer-0", multi_ns, multi_c, annotations=MULTI_NIC)
    node.plugin("DEL", "trainer-9", other_ns, other_c, annotations=MULTI_NIC)
    node.plugin("DEL", "web-0", single_ns, single_c)
    assert settled(node) == before
    assert "mNicIf1" not in node.ipamctl("pods")


def test_a_multi_nic_pod_survives_a_daemon_kill_and_its_del_frees_every_card(
    node: LocalNode,
) -> None:
    """Both interfaces are in the checkpoint (one entry each, upstream's format): after
    SIGKILL and a restart the daemon still holds them, CHECK passes, DEL frees both."""
    wait_for_card_eni(node)
    before = settled(node)
    container, netns, result = add(node, "trainer-1", MULTI_NIC)
    addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
    host = primary_ip(node)
    node.stop_daemon(signal.SIGKILL)
    node.start_daemon()
    pods = node.ipamctl("pods")
    assert all(a in pods for a in addresses) and "mNicIf1" in pods, pods
    node.plugin("CHECK", "trainer-1", netns, container, annotations=MULTI_NIC)
    for address in addresses:
        assert ping_from(netns, address, host), address
    node.plugin("DEL", "trainer-1", netns, container, annotations=MULTI_NIC)
    assert settled(node) == before
    assert not any(a in node.ipamctl("pods") for a in addresses)
