"""The node with several network cards: a multi-NIC pod (ADD, CHECK, DEL, GC, checkpoint)
gets one interface per card, each routed through its card's table (no executor: the test
answers the commands)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses
from ipamcore.events import AddressesAssigned
from ipamcore.model import AllocationKey, InstanceIdentity, ObservedEni
from ipamcore.node import NodeConfig, replies
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from tests.core.test_node import PRIMARY, Drive, key

MULTI = InstanceIdentity(
    "i-1", "c6in.32xlarge", "us-east-1a", "02:00:00:00:00:01"
)  # 2 cards, 8 ENIs
CARD1 = ObservedEni(
    eni_id="eni-c1", mac="02:00:00:00:01:01", device_index=1, network_card=1,
    subnet_id="subnet-1", subnet_cidr="10.0.0.0/16", primary_ip="10.0.1.1",
    ipv4_addresses=("10.0.1.10", "10.0.1.11"),
)  # fmt: skip
CARD1_TABLE = 1 * 8 + 1 + 1  # upstream: card * max ENIs per card + device + 1


def boot(
    multi_nic: bool = True,
    enis: tuple[ObservedEni, ...] = (PRIMARY, CARD1),
    identity: InstanceIdentity = MULTI,
    pool: PoolConfig | None = None,
) -> tuple[Drive, list[c.SetUpEni]]:
    pool = pool or PoolConfig(warm_eni_target=0, multi_nic=multi_nic)
    d = Drive(NodeConfig(pool=pool))
    d.feed(i.Start(d.now))
    d.feed(i.IdentityRead(d.now, d.take(c.ReadIdentity).cid, identity))
    d.feed(i.EnisDescribed(d.now, d.take(c.DescribeEnis).cid, enis))
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, enis))
    d.feed(i.LeakedEnisFound(d.now, d.take(c.FindLeakedEnis).cid, ()))
    d.feed(i.CheckpointRead(d.now, d.take(c.ReadCheckpoint).cid, None))
    d.feed(i.PendingDelsRead(d.now, d.take(c.ReadPendingDels).cid, ()))
    setups = [x for x in d.open if isinstance(x, c.SetUpEni)]
    while d.has(c.SetUpEni):
        d.done(c.SetUpEni)
    d.done(c.SetUpNode)
    if d.has(c.RemoveStale):
        d.feed(i.StaleRemoved(d.now, d.take(c.RemoveStale).cid, ()))
    d.done(c.Persist)
    assert d.ready
    return d, setups


def opened(d: Drive, kind: type) -> list[Any]:
    return [x for x in d.open if isinstance(x, kind)]


def test_the_card_eni_is_set_up_with_its_cards_table_only_with_multi_nic() -> None:
    _, setups = boot()
    assert [(s.network.mac, s.network.route_table) for s in setups] == [(CARD1.mac, CARD1_TABLE)]
    _, without = boot(multi_nic=False)
    assert without == []  # upstream leaves cards above 0 alone without ENABLE_MULTI_NIC


def test_a_multi_nic_pod_gets_one_interface_per_card_and_del_releases_both() -> None:
    d, _ = boot()
    rid = d.add(1, multi_nic=True)
    nets = sorted((s.network for s in opened(d, c.SetUpPod)), key=lambda n: n.attachment_index)
    assert [(n.if_name, n.route_table, n.gateway) for n in nets] == [
        ("eth0", None, "169.254.1.1"),
        ("mNicIf1", CARD1_TABLE, "169.254.1.2"),
    ]
    assert nets[1].ipv4 in CARD1.ipv4_addresses and nets[0].host_veth != nets[1].host_veth
    d.settle()
    reply = d.replies[rid]
    assert not reply.error and reply.allocation is not None and len(reply.extra) == 1
    extra, extra_net = reply.extra[0]
    assert extra.key == AllocationKey("aws-cni", "c1", "mNicIf1") and extra_net == nets[1]
    saved = {a.key: a.ipv4 for a in d.node.checkpoint().allocations}
    assert saved == {key(1): reply.allocation.ipv4, extra.key: extra.ipv4}
    # CHECK looks at both interfaces.
    d.feed(i.Check(d.now, 50, key(1), "/var/run/netns/n1"))
    checks = opened(d, c.CheckPod)
    assert {x.network.if_name for x in checks} == {"eth0", "mNicIf1"}
    for x in checks:
        d.open.remove(x)
        d.feed(i.PodChecked(d.now, x.cid, ("from rule",) if x.network.attachment_index else ()))
    assert d.replies[50].error == replies.DATAPATH_FAILED and "from rule" in d.replies[50].message
    # DEL tears both down and frees both addresses.
    rid = d.delete(1)
    assert {x.network.if_name for x in opened(d, c.TearDownPod)} == {"eth0", "mNicIf1"}
    d.settle()
    assert d.replies[rid].released == 1 and d.node.core.allocations() == []


def test_gc_keeps_the_card_interfaces_of_a_valid_container() -> None:
    d, _ = boot()
    d.add(1, multi_nic=True)
    d.settle()
    d.add(2)
    d.settle()
    d.feed(i.Gc(d.now, 60, "aws-cni", frozenset({("c1", "eth0")})))
    d.settle()
    assert d.replies[60].released == 1  # pod 2 only
    assert {a.key.if_name for a in d.node.core.allocations()} == {"eth0", "mNicIf1"}


def fill_card1(d: Drive) -> None:
    """Two multi-NIC pods take card 1's two addresses."""
    for n in (1, 2):
        d.add(n, multi_nic=True)
        d.settle()


def card1_growth(d: Drive) -> Any:
    """The open effect that grows card 1 (the policy has run)."""
    growth = [
        x for x in opened(d, c.PerformEffect)
        if getattr(x.effect, "eni_id", "") == "eni-c1"
        or getattr(x.effect, "network_card", 0) == 1
    ]  # fmt: skip
    assert len(growth) == 1, [x.effect for x in opened(d, c.PerformEffect)]
    d.open.remove(growth[0])
    return growth[0]


def test_a_card_without_a_ready_address_makes_the_add_wait_and_grows_that_card() -> None:
    """As a single-card ADD waits on card 0, a multi-NIC ADD waits on the card without an
    address: counted as waiting there, the policy grows that card, and the ADD is answered
    with every interface once the address comes."""
    d, _ = boot()
    fill_card1(d)
    rid = d.add(3, multi_nic=True)
    assert rid not in d.replies  # waiting, not pool_empty
    assert d.node.waiting == 1 and d.node.card_waiting() == {1: 1}
    assert d.node.wake_at == d.now  # the policy is kicked
    d.tick()
    grow = card1_growth(d)
    assert isinstance(grow.effect, AssignAddresses) and grow.effect.ipv4_count == 2  # warm + 1
    outcome = AddressesAssigned(grow.effect.effect_id, "eni-c1", ("10.0.1.12", "10.0.1.13"))
    d.feed(i.EffectDone(d.now, grow.cid, outcome))
    assert d.node.waiting == 0
    nets = sorted((s.network for s in opened(d, c.SetUpPod)), key=lambda n: n.attachment_index)
    assert [n.if_name for n in nets] == ["eth0", "mNicIf1"] and nets[1].ipv4 == "10.0.1.12"
    d.settle()
    reply = d.replies[rid]
    assert not reply.error and [a.ipv4 for a, _ in reply.extra] == ["10.0.1.12"]


def test_a_multi_nic_add_that_waits_in_vain_keeps_no_address_on_any_card() -> None:
    """All or nothing: the wait ends at add_wait_s with card 1 still dry; the card-0 address
    the ADD held meanwhile is given back, and the answer names the card."""
    d, _ = boot()
    fill_card1(d)
    before = {a.key for a in d.node.core.allocations()}
    rid = d.add(3, multi_nic=True)
    assert key(3) in {a.key for a in d.node.core.allocations()}  # card 0 held while waiting
    d.tick(d.now + d.node.config.add_wait_s)
    reply = d.replies[rid]
    assert reply.error == replies.POOL_EMPTY and "network card(s) 1" in reply.message
    assert {a.key for a in d.node.core.allocations()} == before
    assert not opened(d, c.SetUpPod) and d.node.waiting == 0
    saved = {a.key for a in d.node.checkpoint().allocations}
    d.settle()
    assert {a.key for a in d.node.checkpoint().allocations} == saved == before


def test_a_del_during_a_multi_nic_wait_cancels_it_and_frees_everything() -> None:
    d, _ = boot()
    fill_card1(d)
    rid = d.add(3, multi_nic=True)
    gone = d.delete(3)
    assert d.replies[rid].error == replies.POOL_EMPTY and "cancelled" in d.replies[rid].message
    d.settle()
    assert d.replies[gone].error == "" and d.node.waiting == 0
    assert key(3) not in {a.key for a in d.node.core.allocations()}


def test_a_retried_multi_nic_add_takes_the_waiting_ones_place() -> None:
    d, _ = boot()
    fill_card1(d)
    first = d.add(3, multi_nic=True)
    second = d.add(3, multi_nic=True)
    assert d.replies[first].error == replies.POOL_EMPTY and "superseded" in d.replies[first].message
    assert d.node.waiting == 1 and second not in d.replies
    d.tick()
    grow = card1_growth(d)
    outcome = AddressesAssigned(grow.effect.effect_id, "eni-c1", ("10.0.1.12",))
    d.feed(i.EffectDone(d.now, grow.cid, outcome))
    d.settle()
    assert d.replies[second].error == "" and len(d.replies[second].extra) == 1


def test_multi_nic_waiters_are_served_first_come_first_served_per_card() -> None:
    d, _ = boot()
    fill_card1(d)
    first, second = d.add(3, multi_nic=True), d.add(4, multi_nic=True)
    assert d.node.card_waiting() == {1: 2}
    d.tick()
    grow = card1_growth(d)
    assert grow.effect.ipv4_count == 3  # the warm address and both waiters
    one = AddressesAssigned(grow.effect.effect_id, "eni-c1", ("10.0.1.12",))
    d.feed(i.EffectDone(d.now, grow.cid, one))
    d.settle()
    assert d.replies[first].error == "" and second not in d.replies
    assert d.node.card_waiting() == {1: 1}


def test_without_enable_multi_nic_the_annotation_fails_the_add_as_upstream() -> None:
    d, _ = boot(multi_nic=False)
    rid = d.add(1, multi_nic=True)
    assert d.replies[rid].error == replies.INTERNAL and "ENABLE_MULTI_NIC" in d.replies[rid].message
    assert d.node.core.allocations() == []


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failed_interface_unwinds_every_interface(failing: int) -> None:
    d, _ = boot()
    rid = d.add(1, multi_nic=True)
    for x in sorted(opened(d, c.SetUpPod), key=lambda x: x.network.attachment_index):
        d.open.remove(x)
        if x.network.attachment_index == failing:
            d.feed(i.Failed(d.now, x.cid, "boom"))
        else:
            d.feed(i.Done(d.now, x.cid))
    d.done(c.Persist)
    torn = {x.network.attachment_index for x in opened(d, c.TearDownPod)}
    assert torn == {1 - failing}  # the one that was built
    d.settle()
    assert d.replies[rid].error == replies.DATAPATH_FAILED
    assert d.node.core.allocations() == []


def efa_only(card: int) -> ObservedEni:
    return ObservedEni(
        eni_id=f"eni-efa{card}", mac=f"02:00:00:00:0e:0{card}", device_index=0,
        network_card=card, subnet_id="subnet-1", subnet_cidr="10.0.0.0/16",
        primary_ip="", is_efa=True, is_efa_only=True,
    )  # fmt: skip


def test_efa_only_cards_get_no_interface_of_a_multi_nic_pod_nor_a_table() -> None:
    """p4d.24xlarge (4 cards) launched with an EFA-only interface on cards 2 and 3: those
    cards are skipped (upstream's markUnmanagedNetworkCards), so a multi-NIC pod gets
    interfaces on cards 0 and 1 only, and no EFA-only interface is set up."""
    p4d = attrs.evolve(MULTI, instance_type="p4d.24xlarge")
    card1 = attrs.evolve(CARD1, subnet_cidr="10.0.0.0/16")
    efa = [efa_only(card) for card in (2, 3)]
    d, setups = boot(enis=(PRIMARY, card1, *efa), identity=p4d)
    assert [s.network.mac for s in setups] == [CARD1.mac]
    assert d.node.core.multi_nic_cards == (0, 1)
    rid = d.add(1, multi_nic=True)
    assert sorted(s.network.if_name for s in opened(d, c.SetUpPod)) == ["eth0", "mNicIf1"]
    d.settle()
    assert d.replies[rid].error == "" and len(d.replies[rid].extra) == 1
    d.tick()
    cards_grown = {getattr(x.effect, "network_card", -1) for x in opened(d, c.PerformEffect)}
    assert not cards_grown & {2, 3}
