"""The reaction to a failed effect, pair by pair: every (effect, failure kind) of
:data:`ipamcore.reactions.REACTIONS` is driven through a real Ipam and its reactions are
checked one by one (the stateful test in ``test_state_machine.py`` mixes them at random)."""

from __future__ import annotations

import itertools

import attrs
import pytest

from ipamcore.config import EniPlacement, PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind
from ipamcore.events import EffectFailed
from ipamcore.ipam import Ipam
from ipamcore.model import Subnet
from ipamcore.reactions import EFFECT_TYPES, REACTIONS, Reaction, reactions
from tests.core.builders import SUBNET, eni, key, node, pod

NOW = 1000.0
CONFIG = PoolConfig(warm_ip_target=2)


def test_the_table_covers_every_effect_and_failure_kind() -> None:
    pairs = set(itertools.product(EFFECT_TYPES, FailureKind))
    assert set(REACTIONS) == pairs
    assert all(REACTIONS[p] for p in pairs)  # no failure is silently ignored


def _in_flight(effect_type: type, config: PoolConfig) -> tuple[Ipam, Effect]:
    """A node with one effect of ``effect_type`` in flight, planned at NOW."""
    if effect_type is CreateEni:
        ipam = node("m5.large", config, enis=(eni(0, ips=9),))
        for i in range(8):
            ipam.assign(key(i), pod(i), 0.0)
    elif effect_type is AssignAddresses:
        ipam = node("m5.large", config, enis=(eni(0, ips=1),))
    elif effect_type is UnassignAddresses:
        ipam = node("m5.large", config, enis=(eni(0, ips=2), eni(1, ips=9)))
    else:
        ips = 6 if config.policy is PolicyName.ADAPTIVE else 2  # keeps 2 x low ready
        ipam = node("m5.large", config, enis=(eni(0, ips=ips), eni(1), eni(2)))
    (effect,) = [e for e in ipam.plan(NOW) if isinstance(e, effect_type)]
    return ipam, effect


def _discovery(config: PoolConfig) -> PoolConfig:
    return attrs.evolve(config, placement=EniPlacement(subnet_discovery=True))


@pytest.mark.parametrize(
    ("effect_type", "kind"), sorted(REACTIONS, key=lambda p: (p[0].__name__, p[1].value))
)
@pytest.mark.parametrize("policy", [PolicyName.UPSTREAM, PolicyName.ADAPTIVE])
def test_each_failure_has_exactly_its_listed_reactions(
    effect_type: type, kind: FailureKind, policy: PolicyName
) -> None:
    config = attrs.evolve(CONFIG, policy=policy)
    if policy is PolicyName.ADAPTIVE:
        no_boot_fill = attrs.evolve(config.adaptive, boot_hold_s=0.0, boot_idle_hold_s=0.0)
        config = attrs.evolve(config, adaptive=no_boot_fill)
    ipam, effect = _in_flight(effect_type, config)
    listed = reactions(effect, kind)
    before_views = {v.eni_id: v for v in ipam.eni_views(NOW)}
    ipam._last_shrink_at = -1.0  # (plan set it when the shrink effect started)
    ipam.apply(EffectFailed(effect.effect_id, kind), NOW)
    assert effect.effect_id not in ipam.in_flight  # answered, whatever the failure
    growth_paused = ipam._growth_paused_until > NOW
    pause = ipam._growth_paused_until - NOW
    if Reaction.PAUSE_GROWTH in listed:
        assert pause == config.throttle_pause_s
    elif Reaction.PAUSE_GROWTH_LONG in listed:
        assert pause == config.subnet_full_pause_s
    elif Reaction.BACK_OFF in listed:
        if policy is PolicyName.UPSTREAM:
            assert pause == config.throttle_pause_s
        else:  # per action, in the adaptive policy's own backoff
            assert not growth_paused and ipam._policy.wake_at(NOW) > NOW
    elif Reaction.AVOID_SUBNET in listed:  # subnet discovery off in CONFIG
        assert pause == config.subnet_full_pause_s
    else:
        assert not growth_paused
    assert (Reaction.SUSPECT_ENI in listed) == bool(ipam._suspect_enis)
    assert (Reaction.AVOID_ENI in listed) == bool(ipam._full_enis)
    assert (Reaction.SHRINK_LATER in listed) == (ipam._last_shrink_at == NOW)
    if isinstance(effect, UnassignAddresses):
        views = {v.eni_id: v for v in ipam.eni_views(NOW)}
        blocks = {b.block_id for b in views[effect.eni_id].blocks}
        gone = set(effect.ipv4_addresses) - blocks
        if Reaction.FORGET_BLOCKS in listed:
            assert gone == set(effect.ipv4_addresses)
        else:
            assert Reaction.RESTORE_BLOCKS in listed and not gone
            states = {a.state for b in views[effect.eni_id].blocks for a in b.addresses
                      if b.block_id in effect.ipv4_addresses}  # fmt: skip
            assert states == {"free"}
    if isinstance(effect, FreeEni):
        present = effect.eni_id in {v.eni_id for v in ipam.eni_views(NOW)}
        assert present == (Reaction.RESTORE_ENI in listed)
        if present:
            views = {v.eni_id: v for v in ipam.eni_views(NOW)}
            assert not views[effect.eni_id].leaving
        assert before_views[effect.eni_id].leaving
    if policy is PolicyName.ADAPTIVE and Reaction.HOLD_POOL in listed:
        assert ipam._policy.backoff.congested_until > NOW  # type: ignore[attr-defined]


def test_a_full_subnet_with_discovery_moves_growth_to_a_new_eni_in_another_subnet() -> None:
    """Upstream's TestIncreaseIPPoolSubnetDiscoveryUnfilledENI, as a reaction: the top-up of
    the primary fails for a full subnet, and the next plan creates an ENI elsewhere."""
    ipam, effect = _in_flight(AssignAddresses, _discovery(CONFIG))
    primary_subnet = Subnet(SUBNET, "10.0.0.0/16", "az-1", free_addresses=0)
    tagged = Subnet("subnet-b", "10.1.0.0/16", "az-1", 200, (("kubernetes.io/role/cni", "1"),))
    ipam.observe_subnets([primary_subnet, tagged], "az-1")
    assert reactions(effect, FailureKind.SUBNET_FULL) == (Reaction.AVOID_SUBNET,)
    ipam.apply(EffectFailed(effect.effect_id, FailureKind.SUBNET_FULL), NOW)
    assert ipam._growth_paused_until <= NOW  # no pause: growth goes on elsewhere
    (create,) = ipam.plan(NOW)
    assert isinstance(create, CreateEni) and create.subnet_id == "subnet-b"
