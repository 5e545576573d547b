"""Multi-NIC pods on the Linux datapath in real network namespaces: a node namespace with
one link per network card, a pod with one interface and a pod with one interface per card;
traffic flows on every interface, each leaves through its own card, and DEL leaves the node
exactly as it was. Needs root and ``ip netns`` (skipped otherwise)."""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Iterator

import pytest

from ipamcore.cards import attachment_if_name, route_table
from ipamcore.netspec import EniNetwork, NodeNetwork, PodNetwork, attachment_tag, host_veth_name
from tests.backends.test_datapath_linux import (
    PRIMARY_IP,
    VPC,
    LinuxHarness,
    linux_harness,
    ping,
)

pytestmark = [pytest.mark.root]
__all__ = ["linux_harness"]  # the fixture, used by name

MAX_ENIS = 8  # per card, as on c6in.32xlarge
CARDS = (1, 2)


def card_link(card: int) -> str:
    return f"nc{card}"


def card_eni(card: int) -> EniNetwork:
    table = route_table(card, 1, MAX_ENIS)
    assert table is not None
    return EniNetwork(
        mac=f"02:00:00:00:{card:02x}:01", primary_ip=f"10.0.{card}.5", subnet_cidr="10.0.0.0/16",
        gateway="10.0.0.1", route_table=table, mtu=9001,
    )  # fmt: skip


@pytest.fixture
def node(linux_harness: LinuxHarness) -> Iterator[LinuxHarness]:
    """The harness's host namespace plus one hot-plugged link per card above 0, set up as
    the daemon sets up an ENI on that card (its own table)."""
    h = linux_harness
    h.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC))
    plug_cards(h, {card: card_eni(card) for card in CARDS})
    yield h


def plug_cards(h: LinuxHarness, enis: dict[int, EniNetwork]) -> None:
    """A hot-plugged link per card (``nc<N>``, the ENI's MAC), set up as the daemon does."""
    for card, eni in enis.items():
        h.ip("link", "add", card_link(card), "address", eni.mac, "type", "veth",
             "peer", "name", f"{card_link(card)}p")  # fmt: skip
        h.ip("link", "set", f"{card_link(card)}p", "up")
        h.datapath.setup_eni(eni)


def pod_interfaces(netns: str, container: str, count: int) -> list[PodNetwork]:
    """The interfaces a multi-NIC pod gets: eth0 on card 0, mNicIf<N> on card N."""
    out = []
    for index in range(count):
        if_name = attachment_if_name("eth0", index)
        table = route_table(index, 1, MAX_ENIS) if index else None
        out.append(
            PodNetwork(
                netns_path=netns, if_name=if_name, ipv4=f"10.0.{100 + index}.{len(container)}",
                host_veth=host_veth_name("aws-cni", container, if_name),
                tag=attachment_tag("aws-cni", container, if_name), route_table=table,
                attachment_index=index,
            )
        )  # fmt: skip
    return out


def settled(h: LinuxHarness) -> str:
    """The node's links, rules and routes, without the IPv6 link-local addresses the kernel
    adds on its own once duplicate address detection ends on the links just made."""
    text = "\n".join(str(part) for part in h.host_snapshot())
    return "\n".join(line for line in text.splitlines() if "local fe80::" not in line)


def ping_from(netns: str, source: str, dst: str) -> bool:
    argv = ["nsenter", f"--net={netns}", "ping", "-c", "1", "-W", "1", "-q", "-I", source, dst]
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_one_interface_per_card_traffic_on_each_and_nothing_left_after_del(
    node: LinuxHarness,
) -> None:
    h = node
    before = settled(h)
    single = pod_interfaces(h.new_netns(), "c-single", 1)
    multi_ns = h.new_netns()
    multi = pod_interfaces(multi_ns, "c-multi-nic", 1 + len(CARDS))
    for pod in (*single, *multi):
        h.datapath.setup_pod(pod)
    for pod in (*single, *multi):
        assert h.datapath.check_pod(pod) == [], pod.if_name

    # Traffic on each interface: host <-> pod, pod <-> pod, from each source address.
    for pod in multi:
        assert ping(h, h.host_path, pod.ipv4), pod.if_name
        assert ping_from(multi_ns, pod.ipv4, PRIMARY_IP), pod.if_name
        assert ping_from(single[0].netns_path, single[0].ipv4, pod.ipv4), pod.if_name
    assert ping(h, multi_ns, single[0].ipv4)

    # Off-node traffic from interface N leaves through card N's link (its table), only: the
    # kernel's route for it, and the ARP for the card's gateway the ping makes on that link.
    for pod in multi[1:]:
        card = pod.attachment_index
        way = h.ip("route", "get", "10.0.77.77", "from", pod.ipv4, "iif", pod.host_veth)
        assert f"dev {card_link(card)} table {pod.route_table}" in way, way
        ping_from(multi_ns, pod.ipv4, "10.0.77.77")  # no such host: only the way out counts
        asked = {c: "10.0.0.1 " in h.ip("neigh", "show", "dev", card_link(c)) for c in CARDS}
        assert asked[card], f"{pod.if_name} did not leave through card {card}"
        assert not any(asked[c] for c in CARDS if c > card), (pod.if_name, asked)
    first_way = h.ip("route", "get", "10.0.77.77", "from", multi[0].ipv4, "iif", multi[0].host_veth)
    assert not any(card_link(c) in first_way for c in CARDS), first_way
    pod_rules = h.in_ns(multi_ns, "ip", "rule")
    for pod in multi[1:]:
        assert f"from {pod.ipv4} lookup {pod.attachment_index}" in pod_rules

    # DEL: every interface's pieces go; the node is exactly as before the pods.
    for pod in (*single, *multi):
        h.datapath.teardown_pod(pod)
    after = settled(h)
    assert after == before, "\n".join(
        difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="")
    )
    assert all(f"from {pod.ipv4}" not in h.in_ns(multi_ns, "ip", "rule") for pod in multi)
    assert "mNicIf" not in h.in_ns(multi_ns, "ip", "link")


def test_check_names_a_missing_pod_rule_of_a_card_interface(node: LinuxHarness) -> None:
    h = node
    netns = h.new_netns()
    first, second = pod_interfaces(netns, "c-check", 2)
    h.datapath.setup_pod(first)
    h.datapath.setup_pod(second)
    h.in_ns(netns, "ip", "rule", "del", "from", second.ipv4, "lookup", "1")
    missing = h.datapath.check_pod(second)
    assert len(missing) == 1 and "multi-NIC" in missing[0]
    assert h.datapath.check_pod(first) == []
    h.datapath.teardown_pod(second)
    h.datapath.teardown_pod(first)
