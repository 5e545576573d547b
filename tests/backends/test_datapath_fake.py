"""The datapath contract against the in-memory FakeDatapath, plus fake-only behaviour."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from backends.datapath import errors as E
from backends.datapath.fake import MAIN, FakeDatapath
from ipamcore.netspec import POD_GATEWAY, EniNetwork, NodeNetwork, PodNetwork
from tests.contract.datapath_contract import (
    PRIMARY_IF,
    PRIMARY_IP,
    DatapathContract,
    make_pod,
)

_ns = itertools.count(1)


class FakeHarness:
    def __init__(self) -> None:
        self.datapath = FakeDatapath()
        self.datapath.add_link(PRIMARY_IF, "02:00:00:00:00:aa", (f"{PRIMARY_IP}/16",))

    def new_netns(self) -> str:
        path = f"/var/run/netns/fake-{next(_ns)}"
        self.datapath.add_netns(path)
        return path

    def remove_netns(self, path: str) -> None:
        self.datapath.remove_netns(path)

    def netns_exists(self, path: str) -> bool:
        return path in self.datapath.namespaces

    def missing_netns_path(self) -> str:
        return f"/var/run/netns/fake-missing-{next(_ns)}"

    def host_snapshot(self) -> object:
        return self.datapath.snapshot()

    def break_piece(self, pod: PodNetwork, piece: str) -> None:
        dp = self.datapath
        ns = dp.namespaces.get(pod.netns_path)
        host = dp.links[pod.host_veth]
        if piece == E.NETNS:
            dp.remove_netns(pod.netns_path)
        elif piece == E.HOST_VETH:
            dp._del_host_link(pod.host_veth)
        elif piece == E.HOST_VETH_UP:
            host.up = False
            dp.routes = {r for r in dp.routes if r[2] != pod.host_veth}
        elif piece == E.HOST_VETH_MTU:
            host.mtu = 1400
        elif piece == E.HOST_ROUTE:
            dp.routes.discard((MAIN, f"{pod.ipv4}/32", pod.host_veth, None))
        elif piece in (E.RULE_TO, E.RULE_FROM):
            prio = 512 if piece == E.RULE_TO else 1536
            dp.rules = {r for r in dp.rules if r[0] != prio}
        elif piece == E.POD_LO_UP:
            assert ns is not None
            ns.lo_up = False
        elif piece == E.POD_IF_UP:
            assert ns is not None
            ns.links[pod.if_name].up = False
            ns.routes = {r for r in ns.routes if r[1] != pod.if_name}
        elif piece == E.POD_ADDRESS:
            assert ns is not None
            ns.links[pod.if_name].addresses.clear()
        elif piece == E.POD_GATEWAY_ROUTE:
            assert ns is not None
            ns.routes.discard((f"{POD_GATEWAY}/32", pod.if_name, None))
        elif piece == E.POD_DEFAULT_ROUTE:
            assert ns is not None
            ns.routes.discard(("0.0.0.0/0", pod.if_name, POD_GATEWAY))
        elif piece == E.POD_GATEWAY_NEIGH:
            assert ns is not None
            ns.neigh.clear()
        else:
            raise AssertionError(piece)

    def add_eni_link(self, mac: str) -> None:
        self.datapath.add_link("eth1", mac)

    def eni_configured(self, eni: EniNetwork) -> bool:
        dp = self.datapath
        return (
            (32765, f"from {eni.primary_ip}/32", eni.route_table) in dp.rules
            and (eni.route_table, "0.0.0.0/0", "eth1", eni.gateway) in dp.routes
            and dp.links["eth1"].up
        )

    def nat(self, chain: str) -> tuple[int, list[str]]:
        jumps = sum(r.endswith(f"-j {chain}") for r in self.datapath.nat["POSTROUTING"])
        return jumps, list(self.datapath.nat.get(chain, []))

    def sysctl(self, key: str) -> str | None:
        return self.datapath.sysctls.get(key)

    def rules(self, ip: str) -> list[str]:
        return sorted(f"{r[0]}: {r[1]} {r[2]}" for r in self.datapath.rules if f" {ip}/" in r[1])


class TestFakeDatapath(DatapathContract):
    @pytest.fixture
    def harness(self) -> Iterator[Any]:
        yield FakeHarness()


def test_fail_next_without_step_fails_whole_operation() -> None:
    h = FakeHarness()
    pod = make_pod(h)
    h.datapath.fail_next("setup_node")
    with pytest.raises(E.InjectedFault):
        h.datapath.setup_node(NodeNetwork(PRIMARY_IP, ("10.0.0.0/16",)))
    h.datapath.fail_next("teardown_pod", error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        h.datapath.teardown_pod(pod)
    h.datapath.teardown_pod(pod)
    assert list(h.datapath.calls) == ["setup_node", "teardown_pod", "teardown_pod"]


def test_deleting_host_veth_takes_pod_end_with_it() -> None:
    h = FakeHarness()
    pod = make_pod(h)
    h.datapath.setup_pod(pod)
    h.break_piece(pod, E.HOST_VETH)
    assert E.POD_IF in h.datapath.check_pod(pod)


def test_failed_setup_restores_the_namespace_of_a_replaced_host_veth() -> None:
    """A setup of the same attachment (its tag) in another namespace first deletes its old pair
    (the pod end lives in the other namespace); when the setup then fails, that namespace is
    restored too."""
    h = FakeHarness()
    first = make_pod(h)
    h.datapath.setup_pod(first)
    before = h.host_snapshot()
    old_ns = copy.deepcopy(h.datapath.namespaces[first.netns_path])
    second = attrs.evolve(make_pod(h), host_veth=first.host_veth, tag=first.tag)
    h.datapath.fail_next("setup_pod", "rules")
    with pytest.raises(E.InjectedFault):
        h.datapath.setup_pod(second)
    assert h.host_snapshot() == before
    assert h.datapath.namespaces[first.netns_path] == old_ns
    assert h.datapath.check_pod(first) == []
    assert h.datapath.namespaces[second.netns_path].links == {}


# ---------------------------------------------------------------------- SNAT rules text

SAVED = """*nat
:POSTROUTING ACCEPT [0:0]
:AWS-SNAT-CHAIN-0 - [0:0]
-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0
-A AWS-SNAT-CHAIN-0 -d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN
COMMIT
"""


def test_restore_text_adds_the_jump_only_when_missing() -> None:
    from backends.datapath.snat import has_jump, restore_text

    assert has_jump(SAVED, "AWS-SNAT-CHAIN-0")
    assert not has_jump(SAVED.replace("-j AWS-SNAT-CHAIN-0\n", "-j OTHER\n"), "AWS-SNAT-CHAIN-0")
    text = restore_text("AWS-SNAT-CHAIN-0", "10.0.0.10", ("10.0.0.0/16",), with_jump=False)
    assert "-A POSTROUTING" not in text
    assert text.splitlines()[:3] == ["*nat", ":AWS-SNAT-CHAIN-0 - [0:0]", "-F AWS-SNAT-CHAIN-0"]
    assert text.rstrip().endswith("COMMIT")
    assert "-j SNAT --to-source 10.0.0.10 --random-fully" in text
    with_jump = restore_text("AWS-SNAT-CHAIN-0", "10.0.0.10", ("10.0.0.0/16",), with_jump=True)
    assert '-A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0' in with_jump


def test_removal_text_deletes_jump_and_chain() -> None:
    from backends.datapath.snat import removal_text

    assert removal_text(SAVED, "AWS-SNAT-CHAIN-0").splitlines() == [
        "*nat",
        '-D POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0',
        "-F AWS-SNAT-CHAIN-0",
        "-X AWS-SNAT-CHAIN-0",
        "COMMIT",
    ]
