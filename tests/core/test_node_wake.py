"""When the node asks to be called (:attr:`Node.wake_at`): at the times the core says a
decision can change (:meth:`Ipam.next_wake_at`), not on a fixed beat. A test plays the
executor and its clock: it ticks the node exactly at each ``wake_at`` and nowhere else, as
the daemon's timer and the simulator's clock do, so a decision that needs an earlier call is
missed here as it would be there."""

from __future__ import annotations

import itertools

import pytest

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses
from ipamcore.node import NodeConfig
from ipamcore.node import commands as c
from tests.core.test_node import T0, Drive, eni


def run_until(d: Drive, end: float) -> list[float]:
    """Tick at every ``wake_at`` up to ``end`` (answering pod and checkpoint commands at
    once); the times the node was called."""
    calls = []
    while (wake := d.node.wake_at) is not None and wake <= end:
        assert wake >= d.now, "the node asked for a time already past"
        d.tick(wake)
        d.settle()
        calls.append(wake)
    d.now = end
    return calls


def test_an_idle_node_is_not_called_on_a_fixed_beat() -> None:
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=0)))
    d.boot()
    calls = run_until(d, T0 + 600.0)
    # The first pass at once, the ENI's minimum age, then reconciliation every minute: not a
    # pass every policy_interval_s (120 calls in these ten minutes).
    assert calls[0] == T0
    assert len(calls) <= 12, calls
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(calls[1:])), calls


def test_a_waiting_add_gets_the_address_the_moment_its_cooldown_ends() -> None:
    config = NodeConfig(
        pool=PoolConfig(warm_eni_target=0, max_eni=1, cooldown_s=33.0),
        add_wait_s=120.0,
    )  # fmt: skip
    d = Drive(config)
    d.boot()  # the primary ENI's 9 addresses, no room for more
    for n in range(9):
        d.add(n)
    d.settle()
    run_until(d, T0 + 3.0)
    d.now = released_at = T0 + 3.25
    d.delete(4)
    d.settle()
    rid = d.add(100)
    assert d.node.waiting == 1
    calls = run_until(d, released_at + 33.0 - 1e-6)
    assert d.node.waiting == 1 and rid not in d.replies
    assert d.node.wake_at == released_at + 33.0  # exactly when the address is ready again
    assert released_at + 33.0 not in calls
    d.tick(d.node.wake_at)
    d.settle()
    assert d.replies[rid].error == ""
    assert d.replies[rid].allocation is not None
    assert d.replies[rid].allocation.ipv4 == "10.0.0.14"  # pod 4's, ready first


@pytest.mark.parametrize("adds", [1, 2])
def test_a_warm_target_top_up_is_never_missed(adds: int) -> None:
    config = NodeConfig(pool=PoolConfig(warm_ip_target=2, warm_eni_target=0, max_eni=1))
    d = Drive(config)
    d.boot(enis=(eni(0, ("10.0.0.10", "10.0.0.11")),))  # WARM_IP_TARGET free; room for 7 more
    run_until(d, T0 + 100.0)
    assert not d.has(c.PerformEffect)
    for n in range(adds):
        d.add(n)
    d.settle()
    wake = d.node.wake_at
    assert wake is not None and wake <= d.now + config.policy_interval_s
    grows = [x.effect for x in d.tick(wake) if isinstance(x, c.PerformEffect)]
    [grow] = grows
    assert isinstance(grow, AssignAddresses) and grow.ipv4_count == adds  # back to 2 free


def test_an_unanswered_effect_is_given_up_at_its_expiry_and_growth_goes_on() -> None:
    pool = PoolConfig(warm_eni_target=0, effect_timeout_s=93.0, cooldown_s=30.0, max_eni=1)
    d = Drive(NodeConfig(pool=pool, add_wait_s=1000.0))
    d.boot(enis=(eni(0),))  # no secondary address
    rid = d.add(1)
    [lost] = [x for x in d.tick() if isinstance(x, c.PerformEffect)]
    issued = d.now
    d.open.remove(lost)  # its answer never comes
    run_until(d, issued + 93.0 - 1e-6)
    assert not d.has(c.PerformEffect)
    assert d.node.wake_at == issued + 93.0  # its expiry
    d.tick(d.node.wake_at)
    assert any("given up" in notice for notice in d.node.core.notices)
    # Given up as a failure: growth pauses, and the node is called when the pause ends.
    pause_end = d.node.core.next_wake_at(d.now)
    assert d.node.wake_at == pause_end
    d.tick(pause_end)
    [again] = [x for x in d.open if isinstance(x, c.PerformEffect)]
    assert isinstance(again.effect, AssignAddresses)
    assert again.effect.effect_id != lost.effect.effect_id and rid not in d.replies
