"""The node with several network cards in IPv6 mode (upstream v1.20+): card 1's ENI comes
with its own /80 after start; a multi-NIC ADD that arrives before it waits on that card, then
gets eth0 from card 0's /80 and mNicIf1 from card 1's, routed by card 1's table; DEL frees
both (no executor: the test answers the commands)."""

from __future__ import annotations

import ipaddress

import attrs

from ipamcore.config import PoolConfig
from ipamcore.effects import CreateEni
from ipamcore.events import EniCreated
from ipamcore.model import AllocationKey, InstanceIdentity, ObservedEni
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from tests.core.test_node import PRIMARY, Drive, key
from tests.core.test_node_cards import boot as cards_boot
from tests.core.test_node_cards import opened

# c6in.32xlarge: 2 cards, 8 ENIs each
IDENTITY = InstanceIdentity(
    "i-1", "c6in.32xlarge", "us-east-1a", "02:00:00:00:00:01",
    subnet_ipv6_cidrs=("2600:1f14:a0c:ce01::/64",),
)  # fmt: skip
PREFIX0 = "2600:1f14:a0c:ce01:1::/80"
PREFIX1 = "2600:1f14:a0c:ce01:2::/80"
V6_PRIMARY = attrs.evolve(PRIMARY, ipv4_addresses=(), ipv6_prefixes=(PREFIX0,))
CARD1_TABLE = 1 * 8 + 0 + 1


def boot() -> Drive:
    pool = PoolConfig(ipv6=True, ipv4=False, prefix_delegation=True, multi_nic=True)
    d, setups = cards_boot(enis=(V6_PRIMARY,), identity=IDENTITY, pool=pool)
    assert setups == []
    return d


def test_a_multi_nic_add_waits_for_card_1s_prefix_then_gets_an_interface_per_card() -> None:
    d = boot()
    d.tick()
    [create] = [x for x in opened(d, c.PerformEffect) if isinstance(x.effect, CreateEni)]
    d.open.remove(create)
    effect = create.effect
    assert (effect.network_card, effect.ipv6_prefix, effect.ipv4_count) == (1, True, 0)

    rid = d.add(1, multi_nic=True)
    assert rid not in d.replies  # card 1 has no /80 yet: the ADD waits, all or nothing
    assert d.node.card_waiting() == {1: 1}
    eni = ObservedEni(
        eni_id="eni-c1", mac="02:00:00:00:01:00", device_index=0, network_card=1,
        subnet_id="subnet-1", subnet_cidr="10.0.0.0/16", primary_ip="10.0.1.1",
        ipv6_prefixes=(PREFIX1,),
    )  # fmt: skip
    d.feed(i.EffectDone(d.now, create.cid, EniCreated(effect.effect_id, eni)))
    for _ in range(10):  # the new ENI: seen in metadata, set up with card 1's table
        if d.has(c.ReadMetadataEnis):
            d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (V6_PRIMARY, eni)))
        elif d.has(c.SetUpEni):
            setup = d.take(c.SetUpEni)
            assert setup.network.route_table == CARD1_TABLE and setup.network.ipv6
            d.feed(i.Done(d.now, setup.cid))
        else:
            break
    nets = sorted((s.network for s in opened(d, c.SetUpPod)), key=lambda n: n.attachment_index)
    assert [(n.if_name, n.route_table) for n in nets] == [("eth0", None), ("mNicIf1", CARD1_TABLE)]
    assert ipaddress.IPv6Address(nets[0].ipv6) in ipaddress.IPv6Network(PREFIX0)
    assert ipaddress.IPv6Address(nets[1].ipv6) in ipaddress.IPv6Network(PREFIX1)
    assert nets[0].egress_v4 and not nets[1].egress_v4 and not nets[1].ipv4
    d.settle()
    reply = d.replies[rid]
    assert not reply.error and len(reply.extra) == 1
    saved = {a.key: a.ipv6 for a in d.node.checkpoint().allocations}
    assert saved == {key(1): nets[0].ipv6, AllocationKey("aws-cni", "c1", "mNicIf1"): nets[1].ipv6}

    rid = d.delete(1)
    assert {x.network.if_name for x in opened(d, c.TearDownPod)} == {"eth0", "mNicIf1"}
    d.settle()
    assert d.node.core.allocations() == []
