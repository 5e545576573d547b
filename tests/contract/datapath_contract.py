"""The DatapathPort contract, run against every datapath backend.

A test module subclasses :class:`DatapathContract` and provides a ``harness`` fixture
(see :class:`DatapathHarness`): the backend under test plus ways to make namespaces, look
at the host's state and break pieces behind the backend's back.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import attrs
import pytest

from backends.datapath import errors as E
from backends.datapath.snat import chain_rules
from backends.datapath.sysctls import IP_FORWARD
from ipamcore.netspec import (
    EniNetwork,
    LiveNetwork,
    NodeNetwork,
    PodNetwork,
    attachment_tag,
    host_veth_name,
    legacy_host_veth_name,
)

PRIMARY_IP = "10.0.0.10"  # on the harness's primary host interface
PRIMARY_IF = "eth0"
VPC = ("10.0.0.0/16", "100.64.0.0/16")
ENI_MAC = "02:00:00:00:00:01"
BREAKABLE = (
    E.NETNS,
    E.HOST_VETH,
    E.HOST_VETH_UP,
    E.HOST_VETH_MTU,
    E.HOST_ROUTE,
    E.RULE_TO,
    E.RULE_FROM,
    E.POD_LO_UP,
    E.POD_IF_UP,
    E.POD_ADDRESS,
    E.POD_GATEWAY_ROUTE,
    E.POD_DEFAULT_ROUTE,
    E.POD_GATEWAY_NEIGH,
)
_ids = itertools.count(1)


class DatapathHarness(Protocol):
    datapath: Any  # a DatapathPort with fail_next(operation, step=None)

    def new_netns(self) -> str: ...  # a fresh pod namespace's path
    def remove_netns(self, path: str) -> None: ...
    def netns_exists(self, path: str) -> bool: ...
    def missing_netns_path(self) -> str: ...  # a path that does not exist
    def host_snapshot(self) -> object: ...  # links, rules, routes of the host
    def break_piece(self, pod: PodNetwork, piece: str) -> None: ...
    def add_eni_link(self, mac: str) -> None: ...
    def eni_configured(self, eni: EniNetwork) -> bool: ...
    def nat(self, chain: str) -> tuple[int, list[str]]: ...  # (jumps to chain, its rules)
    def sysctl(self, key: str) -> str | None: ...
    def rules(self, ip: str) -> list[str]: ...  # the host's rules that name ``ip``


def make_pod(h: DatapathHarness, route_table: int | None = None, mtu: int = 9001) -> PodNetwork:
    n = next(_ids)
    return PodNetwork(
        netns_path=h.new_netns(),
        if_name="eth0",
        host_veth=host_veth_name("contract", f"c{n}", "eth0"),
        tag=attachment_tag("contract", f"c{n}", "eth0"),
        ipv4=f"10.0.{100 + n // 250}.{n % 250 + 1}",
        mtu=mtu,
        route_table=route_table,
    )


def eni(route_table: int = 3) -> EniNetwork:
    return EniNetwork(
        mac=ENI_MAC,
        primary_ip="10.0.32.10",
        subnet_cidr="10.0.32.0/19",
        gateway="10.0.32.1",
        route_table=route_table,
    )


class DatapathContract:
    # ------------------------------------------------------------- ADD / CHECK / DEL

    def test_setup_builds_every_piece(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness)
        harness.datapath.setup_pod(pod)
        assert harness.datapath.check_pod(pod) == []

    def test_check_before_setup_names_everything(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, route_table=3)
        missing = harness.datapath.check_pod(pod)
        assert {E.HOST_VETH, E.POD_IF, E.RULE_TO, E.RULE_FROM} <= set(missing)

    def test_pod_present_follows_lifecycle(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness)
        assert not harness.datapath.pod_present(pod.netns_path, pod.host_veth)
        harness.datapath.setup_pod(pod)
        assert harness.datapath.pod_present(pod.netns_path, pod.host_veth)
        harness.datapath.teardown_pod(pod)
        assert not harness.datapath.pod_present(pod.netns_path, pod.host_veth)

    def test_pod_present_false_when_netns_gone(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness)
        harness.datapath.setup_pod(pod)
        harness.remove_netns(pod.netns_path)
        assert not harness.datapath.pod_present(pod.netns_path, pod.host_veth)

    @pytest.mark.parametrize("route_table", [None, 3])
    def test_teardown_restores_host_exactly(
        self, harness: DatapathHarness, route_table: int | None
    ) -> None:
        pod = make_pod(harness, route_table=route_table)
        before = harness.host_snapshot()
        harness.datapath.setup_pod(pod)
        assert harness.host_snapshot() != before
        harness.datapath.teardown_pod(pod)
        assert harness.host_snapshot() == before

    def test_teardown_twice_and_without_setup(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, route_table=3)
        before = harness.host_snapshot()
        harness.datapath.teardown_pod(pod)
        harness.datapath.setup_pod(pod)
        harness.datapath.teardown_pod(pod)
        harness.datapath.teardown_pod(pod)
        assert harness.host_snapshot() == before

    def test_teardown_after_netns_gone(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, route_table=3)
        before = harness.host_snapshot()
        harness.datapath.setup_pod(pod)
        harness.remove_netns(pod.netns_path)
        harness.datapath.teardown_pod(pod)
        harness.datapath.teardown_pod(pod)
        assert harness.host_snapshot() == before
        assert not harness.netns_exists(pod.netns_path)

    @pytest.mark.parametrize("piece", BREAKABLE)
    def test_check_names_a_piece_deleted_behind_its_back(
        self, harness: DatapathHarness, piece: str
    ) -> None:
        pod = make_pod(harness, route_table=3)
        harness.datapath.setup_pod(pod)
        harness.break_piece(pod, piece)
        assert piece in harness.datapath.check_pod(pod)
        harness.datapath.teardown_pod(pod)  # and DEL still copes

    def test_setup_again_repairs(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, route_table=3)
        harness.datapath.setup_pod(pod)
        harness.break_piece(pod, E.RULE_FROM)
        harness.break_piece(pod, E.POD_DEFAULT_ROUTE)
        harness.datapath.setup_pod(pod)
        assert harness.datapath.check_pod(pod) == []

    def test_readd_after_teardown(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, route_table=3)
        harness.datapath.setup_pod(pod)
        harness.datapath.teardown_pod(pod)
        harness.datapath.setup_pod(pod)
        assert harness.datapath.check_pod(pod) == []

    def test_two_pods_are_independent(self, harness: DatapathHarness) -> None:
        a, b = make_pod(harness), make_pod(harness, route_table=4)
        harness.datapath.setup_pod(a)
        harness.datapath.setup_pod(b)
        assert harness.datapath.check_pod(a) == []
        assert harness.datapath.check_pod(b) == []
        harness.datapath.teardown_pod(a)
        assert harness.datapath.check_pod(b) == []
        assert E.HOST_VETH in harness.datapath.check_pod(a)

    def test_mtu_is_applied(self, harness: DatapathHarness) -> None:
        pod = make_pod(harness, mtu=1400)
        harness.datapath.setup_pod(pod)
        assert harness.datapath.check_pod(pod) == []
        assert E.POD_IF_MTU in harness.datapath.check_pod(
            PodNetwork(pod.netns_path, pod.if_name, pod.host_veth, pod.ipv4, mtu=9001)
        )

    # ------------------------------------------------------------- failures

    def test_missing_netns_is_an_error_and_not_created(self, harness: DatapathHarness) -> None:
        path = harness.missing_netns_path()
        pod = PodNetwork(path, "eth0", host_veth_name("contract", "ghost", "eth0"), "10.0.99.9")
        before = harness.host_snapshot()
        with pytest.raises(E.NetnsNotFound):
            harness.datapath.setup_pod(pod)
        assert not harness.netns_exists(path)
        assert harness.host_snapshot() == before
        assert E.NETNS in harness.datapath.check_pod(pod)
        assert not harness.netns_exists(path)
        harness.datapath.teardown_pod(pod)
        assert not harness.datapath.pod_present(path, pod.host_veth)
        assert not harness.netns_exists(path)

    @pytest.mark.parametrize("step", E.SETUP_POD_STEPS)
    def test_failure_midway_removes_what_was_built(
        self, harness: DatapathHarness, step: str
    ) -> None:
        pod = make_pod(harness, route_table=3)
        before = harness.host_snapshot()
        harness.datapath.fail_next("setup_pod", step)
        with pytest.raises(E.DatapathError):
            harness.datapath.setup_pod(pod)
        assert harness.host_snapshot() == before
        assert {E.HOST_VETH, E.POD_IF} <= set(harness.datapath.check_pod(pod))
        harness.datapath.setup_pod(pod)  # the fault was one-shot
        assert harness.datapath.check_pod(pod) == []

    def test_failure_keeps_other_pods(self, harness: DatapathHarness) -> None:
        a, b = make_pod(harness), make_pod(harness)
        harness.datapath.setup_pod(a)
        harness.datapath.fail_next("setup_pod", "rules")
        with pytest.raises(E.DatapathError):
            harness.datapath.setup_pod(b)
        assert harness.datapath.check_pod(a) == []

    # ------------------------------------------------------------- ENI, node

    def test_setup_eni_is_idempotent(self, harness: DatapathHarness) -> None:
        harness.add_eni_link(ENI_MAC)
        harness.datapath.setup_eni(eni())
        assert harness.eni_configured(eni())
        once = harness.host_snapshot()
        harness.datapath.setup_eni(eni())
        assert harness.host_snapshot() == once

    def test_setup_eni_unknown_mac(self, harness: DatapathHarness) -> None:
        with pytest.raises(E.DatapathError):
            harness.datapath.setup_eni(eni())

    def test_setup_node_snat_is_idempotent(self, harness: DatapathHarness) -> None:
        node = NodeNetwork(PRIMARY_IP, VPC)
        harness.datapath.setup_node(node)
        harness.datapath.setup_node(node)
        jumps, rules = harness.nat(node.snat_chain)
        assert jumps == 1
        assert rules == chain_rules(node.snat_chain, PRIMARY_IP, VPC)

    def test_setup_node_follows_new_cidrs(self, harness: DatapathHarness) -> None:
        harness.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC))
        harness.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC[:1]))
        assert harness.nat("AWS-SNAT-CHAIN-0") == (
            1,
            chain_rules("AWS-SNAT-CHAIN-0", PRIMARY_IP, VPC[:1]),
        )

    def test_external_snat_adds_none_and_removes_ours(self, harness: DatapathHarness) -> None:
        external = NodeNetwork(PRIMARY_IP, VPC, external_snat=True)
        harness.datapath.setup_node(external)
        assert harness.nat(external.snat_chain) == (0, [])
        harness.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC))
        harness.datapath.setup_node(external)
        assert harness.nat(external.snat_chain) == (0, [])

    def test_setup_node_sysctls(self, harness: DatapathHarness) -> None:
        harness.datapath.setup_node(NodeNetwork(PRIMARY_IP, VPC))
        assert harness.sysctl(IP_FORWARD) == "1"
        assert harness.sysctl(f"net/ipv4/conf/{PRIMARY_IF}/rp_filter") == "2"

    # ------------------------------------------------------------- attachments (issue 16)

    def test_sandboxes_of_one_pod_get_their_own_veth(self, harness: DatapathHarness) -> None:
        """A recreated sandbox (same pod, new container id): neither setup nor the old one's
        teardown touches the other's network."""
        old = make_pod(harness, route_table=3)
        new = attrs.evolve(
            make_pod(harness, route_table=3),
            host_veth=host_veth_name("contract", "new-sandbox", "eth0"),
            tag=attachment_tag("contract", "new-sandbox", "eth0"),
        )
        assert new.host_veth != old.host_veth
        harness.datapath.setup_pod(old)
        harness.datapath.setup_pod(new)
        assert harness.datapath.check_pod(old) == []
        harness.datapath.teardown_pod(old)
        assert harness.datapath.check_pod(new) == []

    def test_setup_never_takes_over_another_attachments_veth(
        self, harness: DatapathHarness
    ) -> None:
        first = make_pod(harness, route_table=3)
        harness.datapath.setup_pod(first)
        thief = attrs.evolve(make_pod(harness), host_veth=first.host_veth)
        with pytest.raises(E.VethTaken):
            harness.datapath.setup_pod(thief)
        assert harness.datapath.check_pod(first) == []

    def test_teardown_leaves_a_veth_of_the_same_name_that_is_not_its_own(
        self, harness: DatapathHarness
    ) -> None:
        """Named the upstream way (no tag): the old sandbox's DEL finds a veth of its name that
        routes another address (the new sandbox's) and leaves it."""
        name = legacy_host_veth_name("default", "web-0")
        new = attrs.evolve(make_pod(harness), host_veth=name, tag="")
        harness.datapath.setup_pod(new)
        old = attrs.evolve(make_pod(harness), host_veth=name, tag="")
        harness.datapath.teardown_pod(old)
        assert harness.datapath.check_pod(new) == []
        harness.datapath.teardown_pod(new)  # and its own teardown removes it (by its route)
        assert E.HOST_VETH in harness.datapath.check_pod(new)
        assert not harness.datapath.pod_present(new.netns_path, name)

    def test_pod_present_finds_an_untagged_veth_by_its_route(
        self, harness: DatapathHarness
    ) -> None:
        pod = attrs.evolve(make_pod(harness), host_veth=legacy_host_veth_name("d", "p"), tag="")
        harness.datapath.setup_pod(pod)
        renamed = host_veth_name("contract", "other", "eth0")
        assert harness.datapath.pod_present(pod.netns_path, renamed, pod.ipv4)
        assert not harness.datapath.pod_present(pod.netns_path, renamed)

    def test_a_second_attachment_in_one_pod_is_refused(self, harness: DatapathHarness) -> None:
        first = make_pod(harness, route_table=3)
        harness.datapath.setup_pod(first)
        second = PodNetwork(
            first.netns_path, "eth1", host_veth_name("contract", "x", "eth1"), "10.0.98.1",
            tag=attachment_tag("contract", "x", "eth1"),
        )  # fmt: skip
        before = harness.host_snapshot()
        with pytest.raises(E.SecondAttachment, match="eth0"):
            harness.datapath.setup_pod(second)
        assert harness.host_snapshot() == before
        assert harness.datapath.check_pod(first) == []
        harness.datapath.teardown_pod(second)
        assert harness.datapath.check_pod(first) == []

    def test_teardown_eni_removes_its_rule_and_routes(self, harness: DatapathHarness) -> None:
        harness.add_eni_link(ENI_MAC)
        harness.datapath.setup_eni(eni())
        harness.datapath.teardown_eni(eni())
        assert not harness.eni_configured(eni())
        assert harness.rules(eni().primary_ip) == []
        harness.datapath.teardown_eni(eni())  # idempotent
        harness.datapath.setup_eni(eni())
        assert harness.eni_configured(eni())

    def test_remove_stale_keeps_exactly_what_live_allocations_need(
        self, harness: DatapathHarness
    ) -> None:
        live, gone = make_pod(harness, route_table=3), make_pod(harness, route_table=3)
        harness.add_eni_link(ENI_MAC)
        harness.datapath.setup_eni(eni())
        harness.datapath.setup_pod(live)
        harness.datapath.setup_pod(gone)
        harness.remove_netns(gone.netns_path)  # the pod vanished while the daemon was down
        removed = harness.datapath.remove_stale(
            LiveNetwork(pods=(live,), eni_ips=(eni().primary_ip,))
        )
        # gone's two rules, and its veth unless the kernel already took it with its netns
        # (a namespace is destroyed asynchronously after its last reference goes)
        assert [r for r in removed if r.startswith("rule")] == [
            f"rule 512: to {gone.ipv4} lookup 254", f"rule 1536: from {gone.ipv4} lookup 3",
        ], removed  # fmt: skip
        assert all(r.startswith(("rule", f"veth {gone.host_veth}")) for r in removed), removed
        assert harness.rules(gone.ipv4) == []
        assert harness.datapath.check_pod(live) == []
        assert harness.eni_configured(eni())
        assert harness.datapath.remove_stale(
            LiveNetwork(pods=(live,), eni_ips=(eni().primary_ip,))
        ) == []
        harness.datapath.remove_stale(LiveNetwork())  # the ENI freed, the pod gone too
        assert harness.rules(eni().primary_ip) == [] and harness.rules(live.ipv4) == []
        assert E.HOST_VETH in harness.datapath.check_pod(live)
