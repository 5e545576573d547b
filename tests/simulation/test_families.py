"""The simulator with IPv6 (single and dual stack) and several network cards
(``ENABLE_MULTI_NIC``): the core's decisions through the simulated cloud, the measures, and
``ipamctl simulate`` / ``recommend`` on them."""

from __future__ import annotations

import argparse
import importlib.util
import io
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.ipamctl.recommend import add_recommend_parser, run_recommend
from adapters.ipamctl.simulate import add_simulate_parser, run_simulate
from adapters.simulator import SCENARIOS, Cluster, PodEvent, SimConfig
from adapters.simulator.cluster import DEFAULT_LATENCIES
from ipamcore.cards import card_limits
from ipamcore.config import PoolConfig
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError
from ipamcore.limits import limits_for
from ipamcore.model import Allocation
from ipamcore.node import commands as c
from ipamcore.node import inputs as i

V6 = PoolConfig(ipv6=True, ipv4=False, prefix_delegation=True)
DUAL = PoolConfig(ipv6=True, ipv4=True)
MULTI = PoolConfig(multi_nic=True)
V6_SET = ["--set", "ENABLE_IPv6=true", "--set", "ENABLE_IPv4=false",
          "--set", "ENABLE_PREFIX_DELEGATION=true"]  # fmt: skip


def burst(pods: int, at: float, nodes: int = 1) -> list[PodEvent]:
    """``pods`` ADDs on each node, 10 ms apart, from ``at``."""
    return [PodEvent(at + k * 0.01, n, "add", f"n{n}-p{k}") for n in range(nodes)
            for k in range(pods)]  # fmt: skip


def replies_of(cluster: Cluster) -> list[list[c.Reply]]:
    """Each node's ADD replies that carry an address, collected while the cluster runs."""
    seen: list[list[c.Reply]] = [[] for _ in cluster.nodes]

    def watch(k: int) -> Callable[[i.Input, list[c.Command]], None]:
        def observe(_inp: i.Input, commands: list[c.Command]) -> None:
            seen[k] += [x for x in commands if isinstance(x, c.Reply) and x.pod is not None]

        return observe

    for k, node in enumerate(cluster.nodes):
        node.observe = watch(k)
    return seen


# ------------------------------------------------------------------------------ IPv6
def test_ipv6_burst_of_100_pods_is_one_prefix_call_a_node_and_no_wait_after_it() -> None:
    """benchmarks/burst.py's IPv6 point in the simulator: 100 pods on an empty node, the
    start's one AssignIpv6Addresses and no EC2 call after it; no pod waits."""
    cluster = Cluster(SimConfig(nodes=3, duration_s=120.0, pool=V6), burst(100, 30.0, 3))
    seen = replies_of(cluster)
    m = cluster.run()
    assert m.mutating_calls == {"AssignIpv6Addresses": 3}
    assert [n.mutating for n in cluster.nodes] == [{"AssignIpv6Addresses": 1}] * 3
    assert m.mutating_after_ipv6_prefix == 0 and m.ipv6_prefix_calls_max_per_node == 1
    assert (m.pods_served, m.pods_unserved) == (300, 0)
    assert m.wait_max_s == 0.0 and m.pods_waited_after_ipv6_prefix == 0
    assert m.pods_after_ipv6_prefix == 300
    assert (m.ipv6_prefixes_peak, m.ipv6_assigned_peak) == (3, 300)
    assert m.families == "ipv6" and m.peak_held == 0 and m.enis_created == 0
    for node, replies in zip(cluster.nodes, seen, strict=True):
        assert node.ipam is not None and node.ipam.v6 is not None
        found = node.ipam.v6.first()
        assert found is not None
        prefix = ipaddress.IPv6Network(found[1])
        assert prefix.prefixlen == 80
        addresses = [r.allocation.ipv6 for r in replies if r.allocation]
        assert len(set(addresses)) == 100  # never one address twice
        assert all(a is not None and ipaddress.IPv6Address(a) in prefix for a in addresses)
        assert all(r.allocation is not None and r.allocation.ipv4 is None for r in replies)
    # each node's prefix from its own subnet's /64 of the VPC's /56
    assert len({str(n.ipam.v6.first()) for n in cluster.nodes if n.ipam and n.ipam.v6}) == 3


def test_ipv6_pods_that_come_and_go_make_no_ec2_call_and_free_their_addresses() -> None:
    events = burst(40, 30.0) + [PodEvent(60.0 + k, 0, "del", f"n0-p{k}") for k in range(40)]
    events += [PodEvent(120.0 + k * 0.1, 0, "add", f"again{k}") for k in range(40)]
    cluster = Cluster(SimConfig(nodes=1, duration_s=300.0, pool=V6, sample_interval_s=1.0),
                      events)  # fmt: skip
    m = cluster.run()
    assert m.mutating_calls == {"AssignIpv6Addresses": 1} and m.wait_max_s == 0.0
    assert m.ipv6_assigned_peak == 40  # the 40 left before the next 40 came
    by_t = {s.t: s.ipv6_assigned for s in m.samples}
    assert by_t[100.0] == 0 and by_t[200.0] == 40


def test_dual_stack_pods_take_an_ipv4_from_the_pool_and_an_ipv6_from_the_prefix() -> None:
    events = [*burst(20, 30.0, 2), PodEvent(200.0, 0, "del", "n0-p0")]
    cluster = Cluster(SimConfig(nodes=2, duration_s=260.0, pool=DUAL, sample_interval_s=1.0),
                      events)  # fmt: skip
    seen = replies_of(cluster)
    m = cluster.run()
    assert m.families == "dual" and (m.pods_served, m.pods_unserved) == (40, 0)
    for replies in seen:
        got = [r.allocation for r in replies if r.allocation]
        assert len(got) == 20
        assert all(a.ipv4 and a.ipv6 for a in got)  # both families, one ADD
        assert len({a.ipv4 for a in got}) == len({a.ipv6 for a in got}) == 20
    # one /80 a node (at start), and the IPv4 warm pool grown through EC2 as without IPv6
    assert m.mutating_calls["AssignIpv6Addresses"] == 2
    assert m.mutating_calls.get("CreateNetworkInterface", 0) >= 2
    assert m.ipv6_prefixes_peak == 2 and m.ipv6_assigned_peak == 40
    assert m.peak_assigned == 40  # the IPv4 pool's addresses: one a pod
    last = m.samples[-1]
    assert last.assigned == last.ipv6_assigned == 39  # a DEL frees both families


def test_ipv6_subnets_get_their_own_64_and_ipv4_runs_get_none() -> None:
    v6 = Cluster(SimConfig(nodes=3, duration_s=10.0, pool=V6, nodes_per_subnet=1), [])
    cidrs = [v6.cloud.vpc.subnets[s].ipv6_network for s in v6.subnets]
    assert [str(n) for n in cidrs] == [
        "2600:1f14:a0c:ce00::/64", "2600:1f14:a0c:ce01::/64", "2600:1f14:a0c:ce02::/64"]
    v4 = Cluster(SimConfig(nodes=1, duration_s=10.0), [])
    assert v4.cloud.vpc.subnets[v4.subnets[0]].ipv6_network is None


# ------------------------------------------------------------------------- network cards
def test_multi_nic_pods_get_one_address_on_each_card() -> None:
    """trn1.32xlarge has 8 cards: an annotated pod's reply carries 7 more interfaces, each
    an address of an ENI on its own card above 0; a pod without the annotation gets one."""
    itype = "trn1.32xlarge"
    cards = sorted(card_limits(limits_for(itype)))
    assert len(cards) == 8
    events = [PodEvent(40.0 + k * 3.0, 0, "add", f"p{k}") for k in range(12)]
    cluster = Cluster(SimConfig(nodes=1, duration_s=400.0, instance_type=itype, pool=MULTI,
                                multi_nic_fraction=0.5, seed=3), events)  # fmt: skip
    seen = replies_of(cluster)
    m = cluster.run()
    node = cluster.nodes[0]
    ipam = node.ipam
    assert ipam is not None and node.multi_nic is not None
    annotated = {e.pod for e in events if node.multi_nic(e.pod)}
    assert 0 < len(annotated) < 12  # some of each
    assert (m.pods_served, m.pods_unserved) == (12, 0)
    by_pod = {r.allocation.pod.name: r for r in seen[0] if r.allocation}
    for name, reply in by_pod.items():
        if name not in annotated:
            assert reply.extra == ()
            continue
        every: list[Allocation] = [a for a, _net in reply.extra]
        assert reply.allocation is not None
        on_cards = [ipam.network_card_of(a) for a in [reply.allocation, *every]]
        assert on_cards == cards  # one interface per card, in card order
        for a in every:
            eni = node.cloud.vpc.enis[a.eni_id]
            assert eni.network_card == ipam.network_card_of(a) and a.ipv4 is not None
    assert m.multi_nic_pods == len(annotated)
    assert m.multi_nic_interfaces == 8 * len(annotated)
    assert set(m.by_card) == {str(k) for k in cards}
    assert all(m.by_card[str(k)]["assigned_peak"] >= len(annotated) for k in cards[1:])


def test_a_burst_of_multi_nic_pods_waits_for_its_cards_and_is_served_without_retries() -> None:
    """Each card above 0 keeps one address ready: the later multi-NIC pods of a burst find
    the cards dry and wait in the daemon, as single-card ADDs wait on card 0, counted as
    waiting on those cards, which grow for all of them at once: no ADD is refused, so
    kubelet never retries, and every pod is served sooner than one retry would take."""
    events = [PodEvent(40.0 + k * 0.01, 0, "add", f"p{k}") for k in range(6)]
    cfg = SimConfig(nodes=1, duration_s=300.0, instance_type="trn1.32xlarge", pool=MULTI,
                    multi_nic_fraction=1.0)  # fmt: skip
    m = Cluster(cfg, events).run()
    assert (m.pods_served, m.multi_nic_pods, m.pods_unserved) == (6, 6, 0)
    assert m.add_retries == 0  # waited in the daemon, never refused
    assert 0 < m.wait_max_s < cfg.kubelet_retry_s  # some waited; less than one retry


def test_per_card_eni_limits_hold_in_the_run_and_the_simulated_cloud_enforces_them() -> None:
    itype = "p5.48xlarge"  # 32 cards, 2 ENIs each
    limit = card_limits(limits_for(itype))
    events = [PodEvent(40.0 + k * 0.5, 0, "add", f"p{k}") for k in range(40)]
    cluster = Cluster(SimConfig(nodes=1, duration_s=600.0, instance_type=itype, pool=MULTI,
                                multi_nic_fraction=0.5), events)  # fmt: skip
    m = cluster.run()
    assert len(m.by_card) == 32
    assert all(f["enis_node_peak"] <= limit[int(k)] for k, f in m.by_card.items())
    assert "limit_exceeded" not in m.failed_effects
    inst = cluster.cloud.vpc.instance(cluster.nodes[0].instance_id)
    per_card = {k: sum(card == k for card, _d in inst.devices) for k in limit}
    assert all(per_card[k] <= limit[k] for k in limit)
    # The simulated cloud refuses an ENI beyond card 1's own limit, not card 2's.
    port = cluster.cloud.port(cluster.nodes[0].instance_id)
    subnet = cluster.subnets[0]
    for _ in range(limit[1] - per_card[1]):
        port.create_eni(inst.instance_id, CreateEni(0, subnet, (), ipv4_count=1, network_card=1))
    with pytest.raises(CloudError, match="network card 1"):
        port.create_eni(inst.instance_id, CreateEni(0, subnet, (), ipv4_count=1, network_card=1))
    port.create_eni(inst.instance_id, CreateEni(0, subnet, (), ipv4_count=1, network_card=2))


def test_multi_nic_runs_are_deterministic() -> None:
    events = [PodEvent(40.0 + k * 0.7, k % 2, "add", f"p{k}") for k in range(30)]
    cfg = SimConfig(nodes=2, duration_s=400.0, instance_type="trn1.32xlarge", pool=MULTI,
                    multi_nic_fraction=0.3, seed=7)  # fmt: skip
    one, two = Cluster(cfg, events).run(), Cluster(cfg, events).run()
    assert one.to_dict() == two.to_dict() and one.multi_nic_pods > 0


# ------------------------------------------------------------------------ ipamctl simulate
Command = tuple[Callable[[argparse.ArgumentParser], object],
                Callable[[argparse.Namespace, io.StringIO], int]]  # fmt: skip


def command_cli(name: str, command: Command, argv: list[str]) -> tuple[int, str]:
    """Run ``ipamctl NAME ARGV --no-progress``: (exit code, stdout)."""
    add, run = command
    parser = argparse.ArgumentParser(prog="ipamctl")
    parser.add_argument("--json", action="store_true")
    add(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    return run(parser.parse_args([name, *argv, "--no-progress"]), out), out.getvalue()


def simulate_cli(argv: list[str]) -> tuple[int, str]:
    return command_cli("simulate", (add_simulate_parser, run_simulate), argv)


def test_simulate_ipv6_prints_the_ipv6_rows_and_says_warm_targets_are_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = simulate_cli(["--scenario", "burst", "--nodes", "2", *V6_SET,
                              "--set", "WARM_IP_TARGET=5"])  # fmt: skip
    assert code == 0
    rows = dict(line.split("  ", 1) for line in out.splitlines() if "  " in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["IP families"] == "IPv6 single stack"
    assert rows["AssignIpv6Addresses calls (busiest node)"] == "1"
    assert rows["EC2 mutating calls after each node's first /80"] == "0"
    assert rows["EC2 mutating calls"] == "2 (AssignIpv6Addresses 2)"
    err = capsys.readouterr().err
    assert "ignored (as upstream)" in err and "WARM_IP_TARGET" in err


def test_simulate_json_carries_the_ipv6_and_card_figures() -> None:
    code, out = simulate_cli(["--scenario", "burst", "--nodes", "1", "--json", *V6_SET])
    doc = json.loads(out)
    assert code == 0 and doc["pool"]["ipv6"] is True and doc["pool"]["ipv4"] is False
    assert doc["measures"]["families"] == "ipv6"
    assert doc["measures"]["ipv6_prefixes_peak"] == 1
    code, out = simulate_cli(["--scenario", "burst", "--nodes", "1", "--json",
                              "--instance-type", "trn1.32xlarge", "--set",
                              "ENABLE_MULTI_NIC=true", "--multi-nic-fraction", "0.2"])
    doc = json.loads(out)
    assert code == 0 and sorted(doc["measures"]["by_card"], key=int) == [str(k) for k in range(8)]
    assert doc["measures"]["multi_nic_pods"] > 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--instance-type", "m4.large", "--set", "ENABLE_IPv6=true"],
         "m4.large is not a Nitro instance type"),
        (["--set", "ENABLE_IPv6=true", "--set", "ENABLE_IPv4=false"],
         "needs ENABLE_PREFIX_DELEGATION=true"),
        (["--instance-type", "trn1.32xlarge", "--multi-nic-fraction", "0.2"],
         "needs --set ENABLE_MULTI_NIC=true"),
        (["--instance-type", "trn1.32xlarge", "--multi-nic-fraction", "0.2", "--set",
          "ENABLE_MULTI_NIC=true", "--set", "ENABLE_IPv6=true"],
         "cannot be combined with dual stack"),
        (["--multi-nic-fraction", "1.5"], "from 0 to 1"),
        (["--set", "ENABLE_IPv4=false"], "both false"),
    ],
)  # fmt: skip
def test_simulate_refuses_impossible_family_settings(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = simulate_cli(["--scenario", "burst", *argv])
    assert code == 2 and out == ""
    assert says in capsys.readouterr().err


def test_simulate_runs_multi_nic_pods_in_ipv6_mode() -> None:
    """Upstream v1.20+: one ENI with a /80 on each card above 0 (created with its prefix in
    one call), every multi-NIC pod served with one interface per card, none retried."""
    code, out = simulate_cli(["--scenario", "burst", "--nodes", "1", "--json",
                              "--instance-type", "trn1.32xlarge", *V6_SET, "--set",
                              "ENABLE_MULTI_NIC=true", "--multi-nic-fraction", "0.2"])
    m = json.loads(out)["measures"]
    assert code == 0 and m["families"] == "ipv6" and m["multi_nic_pods"] > 0
    assert m["multi_nic_interfaces"] == 8 * m["multi_nic_pods"]  # trn1.32xlarge: 8 cards
    assert m["pods_unserved"] == 0 and m["add_retries"] == 0 and m["failed_effects"] == {}
    assert m["mutating_calls"]["CreateNetworkInterface"] == 7 == m["ipv6_prefixes_peak"] - 1
    assert m["mutating_calls"]["AssignIpv6Addresses"] == 1  # card 0's /80 only
    by_card = m["by_card"]
    assert all(by_card[str(k)]["enis_peak"] == 1 for k in range(1, 8))
    assert all(by_card[str(k)]["assigned_peak"] > 0 for k in range(8))


def test_simulate_warns_of_multi_nic_on_a_type_with_one_card(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out = simulate_cli(["--scenario", "burst", "--nodes", "1", "--set",
                               "ENABLE_MULTI_NIC=true", "--multi-nic-fraction", "0.5"])
    assert code == 0
    assert "m5.xlarge has one network card" in capsys.readouterr().err


# ------------------------------------------------------------------------ ipamctl recommend
def recommend_cli(argv: list[str]) -> tuple[int, str]:
    return command_cli("recommend", (add_recommend_parser, run_recommend), argv)


def test_recommend_on_ipv6_sweeps_nothing_and_says_why() -> None:
    code, out = recommend_cli(["--scenario", "burst", "--nodes", "2", "--json",
                               "--set", "ENABLE_IPv6=true", "--set", "ENABLE_IPv4=false"])
    doc = json.loads(out)
    assert code == 0 and doc["swept"] is False and doc["recommendation"] is None
    assert "ignore WARM_ENI_TARGET" in doc["reasons"][0]
    assert doc["measures"]["mutating_calls"] == {"AssignIpv6Addresses": 2}
    code, out = recommend_cli(["--scenario", "burst", "--nodes", "1",
                               "--set", "ENABLE_IPv6=true", "--set", "ENABLE_IPv4=false"])
    assert code == 0 and "nothing to recommend" in out and "recommended:" not in out


def test_recommend_dual_stack_sweeps_the_ipv4_knobs_with_ipv6_on_every_setting() -> None:
    code, out = recommend_cli(["--scenario", "burst", "--nodes", "2", "--json",
                               "--set", "ENABLE_IPv6=true", "--candidate", "WARM_IP_TARGET=2"])
    doc = json.loads(out)
    assert code in (0, 1) and len(doc["candidates"]) == 2
    # each setting ran dual stack: one /80 a node besides its IPv4 calls
    for cand in doc["candidates"]:
        assert cand["mutating_calls"] > 2


@pytest.mark.parametrize(
    ("knobs", "says"),
    [
        (["--set", "WARM_IP_TARGET=3"], "sweeps the warm-pool knobs itself"),
        (["--set", "ENABLE_PREFIX_DELEGATION=true"], "sweeps prefix delegation itself"),
        (["--instance-type", "c4.large", "--set", "ENABLE_IPv6=true"], "not a Nitro"),
    ],
)
def test_recommend_refuses_what_it_cannot_take(
    knobs: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = recommend_cli(["--scenario", "burst", *knobs])
    assert code == 2 and out == ""
    assert says in capsys.readouterr().err


def test_dual_stack_grows_the_ipv4_pool_exactly_as_ipv4_does_but_for_the_prefix() -> None:
    """With the start-up /80 taking no time (so the nodes' policy beat is not shifted) dual
    stack's waits and IPv4 calls are the IPv4 run's; the /80 is one call more a node."""
    scenario = SCENARIOS["burst"]
    events = scenario.events(4, 900.0, 0)
    lat = tuple((a, 0.0 if a == "AssignIpv6Addresses" else v) for a, v in DEFAULT_LATENCIES)
    runs = [
        Cluster(SimConfig(nodes=4, duration_s=900.0, pool=pool, latencies=lat,
                          boot_spread_s=scenario.boot_spread_s(4)), events).run()
        for pool in (PoolConfig(), DUAL)
    ]  # fmt: skip
    v4, dual = runs
    assert dual.waits == v4.waits and dual.wait_max_s > 0  # some pods waited, the same ones
    assert dual.idle_address_hours == v4.idle_address_hours
    calls = dict(dual.mutating_calls)
    assert calls.pop("AssignIpv6Addresses") == 4 and calls == v4.mutating_calls
    assert dual.ipv6_assigned_peak == v4.peak_assigned > 0


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")
@pytest.mark.parametrize(
    "argv",
    [V6_SET, ["--set", "ENABLE_IPv6=true"],
     ["--instance-type", "trn1.32xlarge", "--set", "ENABLE_MULTI_NIC=true",
      "--multi-nic-fraction", "0.2"]],
)  # fmt: skip
def test_simulate_draws_ipv6_and_multi_nic_pictures(tmp_path: Path, argv: list[str]) -> None:
    png = tmp_path / "run.png"
    code, _out = simulate_cli(["--scenario", "burst", "--nodes", "2", *argv, "--plot", str(png)])
    assert code == 0 and png.read_bytes().startswith(b"\x89PNG")


def test_a_fleet_booting_at_once_is_throttled_on_its_prefixes_and_each_node_gets_one() -> None:
    """AssignIpv6Addresses draws on the account's mutating bucket (50, 5 a second): 120 IPv6
    nodes booting within a second are throttled, retry with the start's backoff, and each
    ends with one /80 before its pod comes."""
    nodes = 120
    cfg = SimConfig(nodes=nodes, duration_s=200.0, pool=V6, boot_spread_s=1.0)
    m = Cluster(cfg, burst(1, 120.0, nodes)).run()
    ok = m.mutating_calls["AssignIpv6Addresses"] - m.throttled_calls["AssignIpv6Addresses"]
    assert m.throttled_calls["AssignIpv6Addresses"] > 0 and ok == nodes
    assert m.ipv6_prefixes_peak == nodes and m.ipv6_prefix_calls_max_per_node > 1
    assert m.mutating_after_ipv6_prefix == 0
    assert (m.pods_served, m.wait_max_s) == (nodes, 0.0)
