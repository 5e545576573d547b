"""Network cards in IPv6 mode (upstream v1.20+'s createSecondaryIPv6ENIs): with
ENABLE_MULTI_NIC, each card above 0 gets one ENI with an IPv6 /80, and a multi-NIC pod's
interface on that card takes its address from that /80."""

from __future__ import annotations

import ipaddress

import attrs
import pytest

from ipamcore import cards
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect
from ipamcore.errors import ConfigError, FailureKind, PoolExhausted
from ipamcore.events import AddressesAssigned, EffectFailed, EniCreated
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, ObservedEni, PodRef

T0 = 1_700_000_000.0
THREE_CARDS = InstanceLimits(
    instance_type="x.multi6", max_enis=3, ipv4_per_eni=4, network_cards=((0, 3), (1, 2), (2, 2)),
)  # fmt: skip
V6_MULTI = PoolConfig(ipv6=True, ipv4=False, prefix_delegation=True, multi_nic=True)
PREFIX0 = "2600:1f14:aaaa:bbbb:0:0::/80"
POD = PodRef("default", "p")
BASE = AllocationKey("aws-cni", "c1", "eth0")


def primary() -> ObservedEni:
    return ObservedEni(
        eni_id="eni-p", mac="02:00:00:00:00:01", device_index=0, subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/16", primary_ip="10.0.0.5", is_primary=True,
        security_groups=("sg-1",), ipv6_prefixes=(PREFIX0,),
    )  # fmt: skip


def card_prefix(card: int) -> str:
    return f"2600:1f14:aaaa:bbbb:{card}:0::/80"


def created(effect: CreateEni, prefixes: tuple[str, ...]) -> ObservedEni:
    card = effect.network_card
    return ObservedEni(
        eni_id=f"eni-card{card}", mac=f"02:00:00:00:{card:02x}:00", device_index=0,
        network_card=card, subnet_id=effect.subnet_id, subnet_cidr="10.0.0.0/16",
        primary_ip=f"10.0.{card}.9", ipv6_prefixes=prefixes,
    )  # fmt: skip


def ready_node(config: PoolConfig = V6_MULTI) -> tuple[Ipam, list[Effect]]:
    """A node whose cards above 0 each got their ENI and /80 (the effects planned first)."""
    core = Ipam(config, THREE_CARDS)
    core.load([primary()], T0)
    first = core.plan(T0)
    for effect in first:
        assert isinstance(effect, CreateEni)
        eni = created(effect, (card_prefix(effect.network_card),))
        core.apply(EniCreated(effect.effect_id, eni), T0)
    return core, first


def test_ipv6_mode_plans_one_eni_with_a_prefix_on_each_card_above_0() -> None:
    core, first = ready_node()
    assert [(type(e), e.network_card) for e in first if isinstance(e, CreateEni)] == [
        (CreateEni, 1), (CreateEni, 2),
    ]  # fmt: skip
    for effect in first:
        assert isinstance(effect, CreateEni)
        # the /80 in the same call; no IPv4 beyond the ENI's primary one
        assert effect.ipv6_prefix and (effect.ipv4_count, effect.prefix_count) == (0, 0)
        assert (effect.subnet_id, effect.security_groups, effect.device_index) == (
            "subnet-1", ("sg-1",), 0,
        )  # fmt: skip
    assert core.plan(T0 + 1) == []  # every card holds its /80: nothing more
    assert core.multi_nic_cards == (0, 1, 2)


def test_a_multi_nic_pod_takes_one_address_from_each_cards_prefix_and_gives_them_back() -> None:
    core, _ = ready_node()
    first = core.assign(BASE, POD, T0)
    extras = [
        core.assign_on_card(cards.attachment_key(BASE, n), POD, card, T0)
        for n, card in enumerate((1, 2), 1)
    ]
    assert ipaddress.IPv6Address(first.ipv6 or "") in ipaddress.IPv6Network(PREFIX0)
    assert first.ipv4 is None
    for card, extra in zip((1, 2), extras, strict=True):
        assert extra.ipv4 is None and extra.eni_id == f"eni-card{card}"
        assert ipaddress.IPv6Address(extra.ipv6 or "") in ipaddress.IPv6Network(card_prefix(card))
        info = core.eni(extra.eni_id)
        assert info is not None and core.route_table_of(info) == card * 3 + 0 + 1
    # the same key again: the same address
    assert core.assign_on_card(cards.attachment_key(BASE, 1), POD, 1, T0) == extras[0]
    assert core.stats(T0).assigned == 1
    assert {c: (s.assigned, s.prefixes) for c, s in core.card_stats(T0).items()} == {
        1: (1, 1), 2: (1, 1),
    }  # fmt: skip
    for n in (1, 2):
        released = core.release(cards.attachment_key(BASE, n), T0 + 1)
        assert released is not None and released.ipv6 == extras[n - 1].ipv6
    assert core.release(BASE, T0 + 1) == first
    assert core.allocations() == []
    assert {c: s.assigned for c, s in core.card_stats(T0).items()} == {1: 0, 2: 0}
    assert core.stats(T0).assigned == 0


def test_a_card_without_its_prefix_yet_has_no_address_and_card_0_never_lends_one() -> None:
    core = Ipam(V6_MULTI, THREE_CARDS)
    core.load([primary()], T0)
    with pytest.raises(PoolExhausted):
        core.assign_on_card(cards.attachment_key(BASE, 1), POD, 1, T0)
    assert core.allocations() == []


def test_an_existing_card_eni_without_a_prefix_gets_one_and_none_is_created() -> None:
    core = Ipam(V6_MULTI, THREE_CARDS)
    bare = attrs.evolve(created(CreateEni(0, "subnet-1", (), network_card=1), ()), eni_id="eni-b")
    core.load([primary(), bare], T0)
    effects = core.plan(T0)
    on_1 = [e for e in effects if not isinstance(e, CreateEni) or e.network_card == 1]
    assert on_1 == [AssignAddresses(on_1[0].effect_id, "eni-b", ipv6_prefix_count=1)]
    core.apply(AddressesAssigned(on_1[0].effect_id, "eni-b", ipv6_prefixes=(card_prefix(1),)), T0)
    extra = core.assign_on_card(cards.attachment_key(BASE, 1), POD, 1, T0)
    assert extra.eni_id == "eni-b"


def test_a_failed_card_call_pauses_that_card_only_then_is_tried_again() -> None:
    core = Ipam(V6_MULTI, THREE_CARDS)
    core.load([primary()], T0)
    first = core.plan(T0)
    on_1 = next(e for e in first if isinstance(e, CreateEni) and e.network_card == 1)
    on_2 = next(e for e in first if isinstance(e, CreateEni) and e.network_card == 2)
    core.apply(EffectFailed(on_1.effect_id, FailureKind.OTHER, "subnet has no IPv6 CIDR"), T0)
    core.apply(EniCreated(on_2.effect_id, created(on_2, (card_prefix(2),))), T0)
    assert core.plan(T0 + 1) == []  # card 1 paused: no retry storm
    assert any("network card 1" in n for n in core.notices)
    wake = core.next_wake_at(T0 + 1)
    assert wake == T0 + V6_MULTI.throttle_pause_s
    again = core.plan(wake)
    assert [(type(e), e.network_card) for e in again if isinstance(e, CreateEni)] == [
        (CreateEni, 1)
    ]
    assert core.primary_eni() is not None and core.v6 is not None
    assert core.v6.first(0) == ("eni-p", PREFIX0)  # card 0's prefix untouched


def test_card_addresses_survive_a_restart_on_their_cards() -> None:
    core, _ = ready_node()
    core.assign(BASE, POD, T0)
    extra = core.assign_on_card(cards.attachment_key(BASE, 1), POD, 1, T0)
    saved = core.checkpoint()

    again = Ipam(V6_MULTI, THREE_CARDS)
    enis = [primary(), *(created(CreateEni(0, "subnet-1", (), network_card=c), (card_prefix(c),))
                        for c in (1, 2))]  # fmt: skip
    again.load(enis, T0 + 5)
    report = again.restore(saved, T0 + 5)
    assert len(report.restored) == 2 and report.dropped == ()
    restored = again.get(cards.attachment_key(BASE, 1))
    assert restored is not None and (restored.ipv6, restored.eni_id) == (extra.ipv6, "eni-card1")
    assert again.card_stats(T0 + 5)[1].assigned == 1 and again.stats(T0 + 5).assigned == 1
    other = cards.attachment_key(AllocationKey("n", "c2", "eth0"), 1)
    nxt = again.assign_on_card(other, POD, 1, T0)
    assert nxt.ipv6 != extra.ipv6  # the counter moved past the restored address
    assert again.release(cards.attachment_key(BASE, 1), T0 + 6) is not None
    assert again.card_stats(T0 + 6)[1].assigned == 1


def test_without_multi_nic_cards_above_0_get_nothing_in_ipv6_mode() -> None:
    core = Ipam(attrs.evolve(V6_MULTI, multi_nic=False), THREE_CARDS)
    core.load([primary()], T0)
    assert core.plan(T0) == []


def test_dual_stack_with_multi_nic_is_still_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as caught:
        PoolConfig(multi_nic=True, ipv6=True, ipv4=True, prefix_delegation=True)
    assert caught.value.setting == "ENABLE_MULTI_NIC" and "ENABLE_IPv4" in caught.value.message
    assert PoolConfig(multi_nic=True, ipv6=True, ipv4=False, prefix_delegation=True).multi_nic
