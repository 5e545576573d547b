"""Multi-NIC pods in IPv6 mode on the Linux datapath, in real network namespaces (upstream
v1.20+): the node has one link per network card above 0, each set up as an IPv6 ENI (its
table routes ``::/0`` through the VPC router ``fe80:ec2::1``); a pod gets one IPv6 interface
per card, each address from that card's /80, each routed through its card's table; ping6
works on each, and DEL leaves the node exactly as it was (links, addresses, routes, rules,
neighbour entries, nat tables of both families). Needs root and ``ip netns``."""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Iterator

import attrs
import pytest

from ipamcore.cards import attachment_if_name
from ipamcore.netspec import (
    EniNetwork,
    LiveNetwork,
    PodNetwork,
    attachment_tag,
    egress_v4_for,
    host_veth_name,
)
from tests.backends.test_datapath_linux import sh
from tests.backends.test_datapath_linux_ipv6 import NODE_V6, PREFIX_80, V6Harness, ping6, v6_node
from tests.backends.test_datapath_multinic import CARDS, card_link, plug_cards
from tests.backends.test_datapath_multinic import card_eni as ipv4_card_eni

pytestmark = [pytest.mark.root]

OFF_NODE = "2600:1f14:ffff::77"


def card_prefix(card: int) -> str:
    """Card N's /80 (card 0's is the harness's PREFIX_80, which the outside routes back)."""
    return f"2600:1f14:a0c:ce01:{card + 1}::"


def card_eni(card: int) -> EniNetwork:
    """Card N's ENI (device 1, as in the IPv4 test) set up as an IPv6 ENI."""
    return attrs.evolve(ipv4_card_eni(card), ipv6=True)


@pytest.fixture
def node() -> Iterator[V6Harness]:
    h = V6Harness()
    try:
        h.datapath.setup_node(v6_node(egress=True))
        plug_cards(h, {card: card_eni(card) for card in CARDS})
        yield h
    finally:
        h.close()


def interfaces(netns: str, container: str) -> list[PodNetwork]:
    """eth0 from card 0's /80 (with the IPv4 egress), mNicIf<N> from card N's, in its table."""
    out = []
    for index in range(1 + len(CARDS)):
        if_name = attachment_if_name("eth0", index)
        ipv6 = f"{PREFIX_80 if not index else card_prefix(index)}{len(container)}"
        out.append(
            PodNetwork(
                netns_path=netns, if_name=if_name, ipv4="", ipv6=ipv6,
                host_veth=host_veth_name("aws-cni", container, if_name),
                tag=attachment_tag("aws-cni", container, if_name),
                route_table=card_eni(index).route_table if index else None,
                attachment_index=index, egress_v4="" if index else egress_v4_for(ipv6),
            )
        )  # fmt: skip
    return out


def ping6_from(netns: str, source: str, dst: str) -> bool:
    argv = ["nsenter", f"--net={netns}", "ping", "-6", "-c", "1", "-W", "2", "-q", "-I", source,
            dst]  # fmt: skip
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_ipv6_card_enis_route_ipv6_through_the_vpc_router_and_tear_down(node: V6Harness) -> None:
    for card in CARDS:
        table = node.ip("-6", "route", "show", "table", str(card_eni(card).route_table))
        assert f"default via fe80:ec2::1 dev {card_link(card)}" in table, table
    node.datapath.teardown_eni(card_eni(1))
    assert node.ip("-6", "route", "show", "table", str(card_eni(1).route_table)).strip() == ""


def test_an_ipv6_multi_nic_pod_has_one_interface_per_card_and_leaves_nothing(
    node: V6Harness,
) -> None:
    h = node
    before = h.everything()
    single = interfaces(h.new_netns(), "c-one")[:1]
    multi_ns = h.new_netns()
    multi = interfaces(multi_ns, "c-multi-nic")
    for pod in (*single, *multi):
        h.datapath.setup_pod(pod)
    for pod in (*single, *multi):
        assert h.datapath.check_pod(pod) == [], pod.if_name

    links = h.in_ns(multi_ns, "ip", "-o", "link")
    assert "eth0" in links and "mNicIf1" in links and "mNicIf2" in links
    # ping6 on each interface: to the node, from the node, and to/from the other pod.
    for pod in multi:
        assert ping6_from(multi_ns, pod.ipv6, NODE_V6), pod.if_name
        assert ping6(h.host_path, pod.ipv6), pod.if_name
        assert ping6_from(single[0].netns_path, single[0].ipv6, pod.ipv6), pod.if_name
    # Off-node IPv6 from interface N leaves through card N's link, by card N's table.
    for pod in multi[1:]:
        card = pod.attachment_index
        way = h.ip("-6", "route", "get", OFF_NODE, "from", pod.ipv6, "iif", pod.host_veth)
        assert f"dev {card_link(card)} table {pod.route_table}" in way, way
        assert f"from {pod.ipv6} lookup {pod.route_table}" in h.ip("-6", "rule")
    # The first interface uses the main table (no IPv6 default there in this harness: the
    # node learns one by router advertisement): never a card's link.
    first_way = sh("ip", "-n", h.host, "-6", "route", "get", OFF_NODE, "from", multi[0].ipv6,
                   "iif", multi[0].host_veth, check=False)  # fmt: skip
    assert not any(card_link(c) in first_way for c in CARDS), first_way
    pod_rules = h.in_ns(multi_ns, "ip", "-6", "rule")
    for pod in multi[1:]:
        assert f"from {pod.ipv6} lookup {pod.attachment_index}" in pod_rules
    # The first interface keeps the main table's default (the others did not replace it).
    assert "default via fe80::1 dev eth0" in h.in_ns(multi_ns, "ip", "-6", "route")

    # A missing card rule is named by CHECK.
    h.ip("-6", "rule", "del", "from", multi[1].ipv6, "lookup", str(multi[1].route_table))
    assert h.datapath.check_pod(multi[1]) != []
    h.datapath.setup_pod(multi[1])  # a repeated ADD repairs it
    assert h.datapath.check_pod(multi[1]) == []

    for pod in (*single, *multi):
        h.datapath.teardown_pod(pod)
    after = h.everything()
    for part, was in before.items():
        now = after[part]
        assert now == was, (part, "\n".join(difflib.unified_diff(
            str(was).splitlines(), str(now).splitlines(), lineterm="")))  # fmt: skip
    assert "from" not in h.in_ns(multi_ns, "ip", "-6", "rule").replace("from all", "")
    assert "mNicIf" not in h.in_ns(multi_ns, "ip", "link")


def test_start_up_cleanup_removes_a_gone_ipv6_card_interfaces_rules_and_veths(
    node: V6Harness,
) -> None:
    """After a crash, the start's stale cleanup (no live pod) removes what the pod's IPv6
    interfaces left on the node, the card table's "from" rule included."""
    h = node
    before = h.everything()
    multi = interfaces(h.new_netns(), "c-gone")
    for pod in multi:
        h.datapath.setup_pod(pod)
    live = LiveNetwork(eni_ips=tuple(card_eni(card).primary_ip for card in CARDS))
    removed = h.datapath.remove_stale(live)
    card_rule = f"rule 1536: from {multi[1].ipv6} lookup {multi[1].route_table}"
    assert card_rule in removed, removed
    after = h.everything()
    for part, was in before.items():
        assert after[part] == was, part
