"""IPv6 pods, dual-stack pods and the egress SNAT in real network namespaces (issue 12).

The harness's "host" namespace plays the node (eth0 with 10.0.0.10/16 and an IPv6 address of
the subnet's /64); the other end of eth0 is moved into an "outside" namespace that plays the
VPC beyond the node (10.0.0.1 and 2600:1f14:a0c:ce01::1), which has no route to the pods'
node-local egress ranges, so a reply reaches a pod only through the node's SNAT.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from backends.datapath import errors as E
from ipamcore.netspec import (
    EGRESS_V4_RANGE,
    NodeNetwork,
    PodNetwork,
    attachment_tag,
    egress_v4_for,
    egress_v6_for,
    host_veth_name,
)
from tests.backends.test_datapath_linux import LinuxHarness, ping, sh
from tests.contract.datapath_contract import PRIMARY_IF, PRIMARY_IP, VPC

pytestmark = [pytest.mark.root]

NODE_V6 = "2600:1f14:a0c:ce01::a"
OUTSIDE_V4 = "10.0.0.1"
OUTSIDE_V6 = "2600:1f14:a0c:ce01::1"
PREFIX_80 = "2600:1f14:a0c:ce01:1::"
_ids = itertools.count(1)


class V6Harness(LinuxHarness):
    def __init__(self) -> None:
        super().__init__()
        outside = self._add("out")
        self.outside_path = f"/var/run/netns/{outside}"
        self.ip("addr", "add", f"{NODE_V6}/64", "dev", PRIMARY_IF, "nodad")
        self.ip("link", "set", "uplink", "netns", outside)
        o = ("ip", "-n", outside)
        sh(*o, "link", "set", "lo", "up")
        sh(*o, "addr", "add", f"{OUTSIDE_V4}/16", "dev", "uplink")
        sh(*o, "addr", "add", f"{OUTSIDE_V6}/64", "dev", "uplink", "nodad")
        sh(*o, "link", "set", "uplink", "up")
        # The VPC routes the /80 delegated to the node's ENI to the node (EC2 does it in
        # its fabric; here a route in the outside namespace).
        sh(*o, "-6", "route", "add", f"{PREFIX_80}/80", "via", NODE_V6, "dev", "uplink")
        # The kernel's own link-local addresses of eth0 and uplink finish duplicate address
        # detection before the test starts (neighbour discovery needs them).
        deadline = time.monotonic() + 10
        while "tentative" in self.ip("-6", "addr") + sh(*o, "-6", "addr"):
            assert time.monotonic() < deadline, "link-local addresses still tentative"
            time.sleep(0.05)

    def pod(self, ipv4: str = "", ipv6: str = "", egress: bool = True) -> PodNetwork:
        n = next(_ids)
        return PodNetwork(
            netns_path=self.new_netns(),
            if_name="eth0",
            host_veth=host_veth_name("v6", f"c{n}", "eth0"),
            tag=attachment_tag("v6", f"c{n}", "eth0"),
            ipv4=ipv4,
            ipv6=ipv6,
            egress_v4=egress_v4_for(ipv6) if egress and ipv6 and not ipv4 else "",
            egress_v6=egress_v6_for(ipv4) if egress and ipv4 and not ipv6 else "",
        )

    def everything(self) -> dict[str, object]:
        """Links, addresses, routes, rules, neighbour entries (state aside) and the nat
        tables of both families, on the host."""

        def neigh(family: str) -> set[str]:
            """Neighbours, state aside, but the uplink's: the outside's own traffic (its
            neighbour discovery towards the pods' /80) adds to those."""
            out = self.ip(family, "neigh", "show")
            return {
                " ".join(line.split()[:3])
                for line in out.splitlines()
                if line.strip() and f" dev {PRIMARY_IF} " not in f"{line} "
            }

        def nat(tool: str) -> list[str]:
            saved = self.in_ns(self.host_path, f"{tool}-save", "-t", "nat")
            # packet counters and comments of the save header vary: keep the rules only
            return sorted(ln for ln in saved.splitlines() if ln.startswith(("-A", ":")))

        return {
            "links": re.sub(r"\d+ bytes|\d+ packets", "", self.ip("-d", "link")),
            "addr": self.ip("addr"),
            "rules4": self.ip("rule"),
            "rules6": self.ip("-6", "rule"),
            "routes4": self.ip("route", "show", "table", "all"),
            "routes6": self.ip("-6", "route", "show", "table", "all"),
            "neigh4": neigh("-4"),
            "neigh6": neigh("-6"),
            "nat4": nat("iptables"),
            "nat6": nat("ip6tables"),
        }


@pytest.fixture
def v6() -> Iterator[V6Harness]:
    h = V6Harness()
    try:
        yield h
    finally:
        h.close()


def ping6(from_ns: str, dst: str) -> bool:
    argv = ["nsenter", f"--net={from_ns}", "ping", "-6", "-c", "1", "-W", "2", "-q", dst]
    return subprocess.run(argv, capture_output=True).returncode == 0


def v6_node(egress: bool) -> NodeNetwork:
    """An IPv6 single-stack node: no VPC SNAT chain; the egress chain when ``egress``."""
    return NodeNetwork(
        PRIMARY_IP, VPC, ipv6=True, ipv4=False, egress_v4_snat_to=PRIMARY_IP if egress else ""
    )


def test_ipv6_pods_reach_each_other_the_host_and_ipv4_through_the_egress_snat(
    v6: V6Harness,
) -> None:
    v6.datapath.setup_node(v6_node(egress=False))
    assert v6.sysctl("net/ipv6/conf/all/forwarding") == "1"
    assert v6.sysctl(f"net/ipv6/conf/{PRIMARY_IF}/accept_ra") == "2"
    assert v6.sysctl("net/ipv6/conf/all/disable_ipv6") == "0"
    # IPv6 only: no SNAT for IPv6, and no VPC SNAT chain for IPv4 either
    assert not [r for r in v6.everything()["nat4"] if "AWS-SNAT-CHAIN-0" in str(r)]
    assert not v6.everything()["nat6"] or "SNAT" not in str(v6.everything()["nat6"])
    a = v6.pod(ipv6=f"{PREFIX_80}1")
    b = v6.pod(ipv6=f"{PREFIX_80}2")
    v6.datapath.setup_pod(a)
    v6.datapath.setup_pod(b)
    assert v6.datapath.check_pod(a) == [] and v6.datapath.check_pod(b) == []
    routes = v6.in_ns(a.netns_path, "ip", "-6", "route")
    assert "default via fe80::1 dev eth0" in routes and "fe80::1 dev eth0" in routes
    assert "PERMANENT" in v6.in_ns(a.netns_path, "ip", "-6", "neigh", "show", "fe80::1")
    assert f"{a.ipv6} dev {a.host_veth}" in v6.ip("-6", "route")
    assert ping6(a.netns_path, b.ipv6) and ping6(b.netns_path, a.ipv6)
    assert ping6(a.netns_path, NODE_V6) and ping6(v6.host_path, a.ipv6)
    assert ping6(a.netns_path, OUTSIDE_V6)  # the VPC beyond the node: routed, not SNATed
    # IPv4 from an IPv6 pod: its node-local address, which the outside cannot answer ...
    assert a.egress_v4 in v6.in_ns(a.netns_path, "ip", "-4", "addr", "show", "eth0")
    assert not ping(v6, a.netns_path, OUTSIDE_V4)
    # ... until the node SNATs the egress range to its own address
    v6.datapath.setup_node(v6_node(egress=True))
    assert any(EGRESS_V4_RANGE in r for r in v6.everything()["nat4"])  # type: ignore[attr-defined]
    assert ping(v6, a.netns_path, OUTSIDE_V4)
    assert ping(v6, b.netns_path, OUTSIDE_V4)


def test_ipv6_pod_teardown_leaves_nothing_behind(v6: V6Harness) -> None:
    v6.datapath.setup_node(v6_node(egress=True))
    assert ping(v6, v6.host_path, OUTSIDE_V4) and ping6(v6.host_path, OUTSIDE_V6)  # warm ARP/ND
    before = v6.everything()
    pods = [v6.pod(ipv6=f"{PREFIX_80}{n:x}") for n in range(1, 4)]
    dual = v6.pod(ipv4="10.0.100.7", ipv6=f"{PREFIX_80}10")
    for pod in (*pods, dual):
        v6.datapath.setup_pod(pod)
    for pod in pods:
        assert ping6(pod.netns_path, NODE_V6) and ping(v6, pod.netns_path, OUTSIDE_V4)
    assert ping6(dual.netns_path, pods[0].ipv6) and ping(v6, dual.netns_path, PRIMARY_IP)
    assert v6.everything() != before
    for pod in (*pods, dual):
        v6.datapath.teardown_pod(pod)
        v6.datapath.teardown_pod(pod)  # a second DEL finds nothing and fails nothing
    after = v6.everything()
    for key in before:
        assert after[key] == before[key], key
    neighbours = v6.ip("neigh") + v6.ip("-6", "neigh")
    assert not [p.ipv6 for p in (*pods, dual) if p.ipv6 in neighbours]


def test_dual_stack_pod_is_routed_and_checked_in_both_families(v6: V6Harness) -> None:
    v6.datapath.setup_node(
        NodeNetwork(PRIMARY_IP, VPC, ipv6=True)  # dual stack: the VPC SNAT chain stays
    )
    pod = v6.pod(ipv4="10.0.100.9", ipv6=f"{PREFIX_80}9")
    other = v6.pod(ipv6=f"{PREFIX_80}a", egress=False)
    v6.datapath.setup_pod(pod)
    v6.datapath.setup_pod(other)
    assert v6.datapath.check_pod(pod) == []
    assert ping(v6, pod.netns_path, PRIMARY_IP) and ping(v6, v6.host_path, pod.ipv4)
    assert ping6(pod.netns_path, other.ipv6) and ping6(v6.host_path, pod.ipv6)
    assert "512:\tfrom all to 10.0.100.9 lookup main" in v6.ip("rule")
    assert f"from all to {pod.ipv6} lookup main" in v6.ip("-6", "rule")
    v6.ip("-6", "route", "del", f"{pod.ipv6}/128")
    assert v6.datapath.check_pod(pod) == [E.HOST_ROUTE]
    v6.in_ns(pod.netns_path, "ip", "-6", "route", "del", "default")
    assert E.POD_DEFAULT_ROUTE in v6.datapath.check_pod(pod)


def test_ipv4_pod_reaches_ipv6_through_the_v6_egress_snat(v6: V6Harness) -> None:
    """ENABLE_V6_EGRESS: an IPv4 pod gets a node-local IPv6 address; the node SNATs it to
    its own IPv6 address (ip6tables), so the pod reaches an IPv6-only address."""
    node = NodeNetwork(PRIMARY_IP, VPC, ipv6=True)
    v6.datapath.setup_node(node)
    assert ping(v6, v6.host_path, OUTSIDE_V4) and ping6(v6.host_path, OUTSIDE_V6)  # warm ARP/ND
    before = v6.everything()
    pod = v6.pod(ipv4="10.0.100.11")
    v6.datapath.setup_pod(pod)
    assert v6.datapath.check_pod(pod) == []
    assert pod.egress_v6 in v6.in_ns(pod.netns_path, "ip", "-6", "addr", "show", "eth0")
    assert ping(v6, pod.netns_path, PRIMARY_IP)
    assert not ping6(pod.netns_path, OUTSIDE_V6)  # no way back to fd00::ac00:... without SNAT
    v6.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC, ipv6=True, egress_v6_snat_to=NODE_V6))
    assert ping6(pod.netns_path, OUTSIDE_V6)
    v6.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC, ipv6=True, egress_v6_snat_to=NODE_V6))
    nat6 = v6.everything()["nat6"]
    assert sum("-A POSTROUTING" in r for r in nat6) == 1  # type: ignore[attr-defined]
    v6.datapath.teardown_pod(pod)
    after = v6.everything()
    for key in before:
        if key != "nat6":  # the node's egress chain, added meanwhile, stays
            assert after[key] == before[key], key
