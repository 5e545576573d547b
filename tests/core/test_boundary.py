"""The core at its boundary, as an embedding program sees it: bad input is refused clearly
and atomically, queries do not move time, effects expire, and the core says when to call it
next."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamcore.checkpoint import Checkpoint, decode, encode
from ipamcore.config import AdaptiveTuning, PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, UnassignAddresses
from ipamcore.errors import CheckpointError, ConfigError, DataError, FailureKind, UsageError
from ipamcore.events import AddressesAssigned, EffectFailed, EniCreated
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import Allocation, ObservedNode
from tests.core.builders import eni, key, node, pod

M5 = limits_for("m5.large")


# ------------------------------------------------------------------------------ load()
@pytest.mark.parametrize(
    ("enis", "message"),
    [
        ((), "exactly one ENI must be the primary"),
        ((attrs.evolve(eni(1), is_primary=False),), "exactly one ENI must be the primary"),
        ((eni(0), attrs.evolve(eni(1), is_primary=True)), "got 2"),
        ((eni(0), eni(1), attrs.evolve(eni(1), mac="02:ff")), "given twice"),
        ((attrs.evolve(eni(0), ipv4_addresses=("10.0.0.300",)),), "not an IPv4 address"),
        ((attrs.evolve(eni(0), ipv4_prefixes=("10.0.0.1/28",)),), "prefix"),
        ((eni(0, ips=1), attrs.evolve(eni(1), ipv4_addresses=("10.0.0.10",))), "two ENIs"),
    ],
)
def test_load_refuses_a_view_without_one_primary_or_with_bad_enis(
    enis: tuple[object, ...], message: str
) -> None:
    ipam = Ipam(PoolConfig(), M5)
    with pytest.raises(DataError, match=message):
        ipam.load(enis, 0.0)  # type: ignore[arg-type]
    assert ipam.eni_views(0.0) == []  # nothing taken
    ipam.load((eni(0, ips=2),), 0.0)  # a good view still loads afterwards
    assert ipam.stats(0.0).total == 2


def test_the_primary_may_be_marked_or_be_device_0() -> None:
    unmarked = attrs.evolve(eni(0), is_primary=False)
    ipam = Ipam(PoolConfig(), M5)
    ipam.load((unmarked, eni(1)), 0.0)
    assert ipam.primary_eni() == unmarked


def test_a_second_load_is_a_usage_error() -> None:
    ipam = node()
    with pytest.raises(UsageError, match="already called"):
        ipam.load((eni(0),), 1.0)


# ----------------------------------------------------------------------------- apply()
def _assign_in_flight() -> tuple[Ipam, AssignAddresses]:
    ipam = node(enis=(eni(0, ips=1),), config=PoolConfig(warm_ip_target=3))
    (effect,) = ipam.plan(0.0)
    assert isinstance(effect, AssignAddresses)
    return ipam, effect


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (lambda e: AddressesAssigned(e.effect_id, e.eni_id, ("10.0.0.50", "bad")), DataError),
        (lambda e: AddressesAssigned(e.effect_id, e.eni_id, ("10.0.0.50", "10.0.0.50")), DataError),
        (lambda e: AddressesAssigned(e.effect_id, e.eni_id, ("10.0.0.10",)), DataError),  # taken
        (lambda e: AddressesAssigned(e.effect_id, "eni-9999", ("10.0.0.50",)), UsageError),
        (lambda e: EniCreated(e.effect_id, eni(1)), UsageError),  # wrong answer
        (lambda e: EffectFailed(e.effect_id, "throttled"), UsageError),  # not a FailureKind
    ],
)
def test_apply_checks_before_changing_anything(outcome: object, error: type) -> None:
    ipam, effect = _assign_in_flight()
    before = (ipam.stats(0.0), ipam.eni_views(0.0), dict(ipam.in_flight))
    with pytest.raises(error):
        ipam.apply(outcome(effect), 1.0)  # type: ignore[operator]
    assert (ipam.stats(0.0), ipam.eni_views(0.0), dict(ipam.in_flight)) == before
    # the effect is still in flight, and a good answer is taken
    ipam.apply(AddressesAssigned(effect.effect_id, effect.eni_id, ("10.0.0.50",)), 1.0)
    assert ipam.stats(1.0).total == 2


def test_addresses_for_an_eni_not_in_the_pool_are_refused_not_dropped() -> None:
    ipam, effect = _assign_in_flight()
    with pytest.raises(UsageError, match="eni-0001"):
        ipam.apply(AddressesAssigned(effect.effect_id, "eni-0001", ("10.0.1.50",)), 1.0)
    assert effect.effect_id in ipam.in_flight


# -------------------------------------------------------------------- encode / decode
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_encode_never_writes_what_decode_refuses(at: float) -> None:
    allocation = Allocation(key(1), pod(1), "10.0.0.10", None, at)
    checkpoint = Checkpoint(allocations=(allocation,), released_at=(("10.0.0.11", at),))
    try:
        data = encode(checkpoint)
    except CheckpointError:
        assert not 0 <= at <= 2**63 / 1e9 - 1  # refused only outside Go's int64 nanoseconds
        return
    (decoded,) = decode(data).allocations
    assert math.isclose(decoded.allocated_at, at, abs_tol=1e-9, rel_tol=1e-15)


def test_encode_refuses_milliseconds_and_nan() -> None:
    for at in (1.7e12 * 1000, math.nan, -1.0):
        with pytest.raises(CheckpointError, match="outside"):
            encode(Checkpoint(allocations=(Allocation(key(1), pod(1), "10.0.0.1", None, at),)))


def test_decode_says_what_is_wrong() -> None:
    with pytest.raises(CheckpointError, match="no 'version' field"):
        decode(b"{}")
    nan = b'{"version":"vpc-cni-ipam/1","allocations":[],"releasedAddresses":[NaN]}'
    with pytest.raises(CheckpointError, match="NaN"):
        decode(nan)


# ------------------------------------------------------------------------- ConfigError
@pytest.mark.parametrize(
    "kwargs",
    [{"max_enis": 0}, {"max_enis": "3"}, {"ipv4_per_eni": "10"}, {"ipv4_per_eni": 1},
     {"max_enis": True}],
)  # fmt: skip
def test_instance_limits_are_config_errors(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"instance_type": "t.test", "max_enis": 3, "ipv4_per_eni": 10}
    fields.update(kwargs)
    with pytest.raises(ConfigError):
        InstanceLimits(**fields)  # type: ignore[arg-type]


def test_config_types_are_config_errors_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="WARM_IP_TARGET: must be int, got str '5'"):
        PoolConfig(warm_ip_target="5")  # type: ignore[arg-type]


def test_ipv6_needs_a_type_with_prefix_delegation() -> None:
    """Upstream's TestIsConfigValid, 'v4 disabled and v6 enabled in PD mode on Non-Nitro'."""
    xen = attrs.evolve(M5, instance_type="m4.large", hypervisor="xen")
    with pytest.raises(ConfigError, match="ENABLE_IPv6"):
        Ipam(PoolConfig(ipv6=True, ipv4=False), xen)
    Ipam(PoolConfig(ipv6=True, ipv4=False), M5)


# --------------------------------------------------------------- queries and time
def test_stats_and_views_do_not_move_time() -> None:
    ipam = node(enis=(eni(0, ips=2),))
    ipam.assign(key(1), pod(1), 0.0)
    ipam.release(key(1), 1.0)
    later = 1.0 + ipam.config.cooldown_s
    assert ipam.stats(later).cooling == 0 and ipam.stats(later).available == 2
    assert ipam.stats(2.0).cooling == 1  # asking about later did not move the pool
    states = {a.state for v in ipam.eni_views(later) for b in v.blocks for a in b.addresses}
    assert states == {"free"}
    early = {a.state for v in ipam.eni_views(2.0) for b in v.blocks for a in b.addresses}
    assert "cooling" in early
    assert ipam.pool.cooling == 1  # only commands move it


def test_the_adaptive_situation_is_a_query() -> None:
    config = PoolConfig(policy=PolicyName.ADAPTIVE)
    ipam = node(config=config)
    policy = ipam._policy
    backoff = policy.backoff  # type: ignore[attr-defined]
    backoff.situation(policy.demand, 100.0)  # type: ignore[attr-defined]
    assert backoff.first_plan_at is None
    ipam.plan(200.0)
    assert backoff.first_plan_at == 200.0


# ------------------------------------------------------------------ expiry and wake
def test_an_unanswered_effect_expires_and_growth_goes_on() -> None:
    config = PoolConfig(effect_timeout_s=60.0)
    ipam = node("m5.large", config, enis=(eni(0, ips=9),))
    for i in range(9):
        ipam.assign(key(i), pod(i), 0.0)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert ipam.plan(59.0) == []  # still in flight
    assert ipam.next_wake_at(59.0) == 60.0
    retry = ipam.plan(60.0)  # given up at 60 s: growth pauses as after a failure ...
    assert retry == [] and create.effect_id not in ipam.in_flight
    assert any("unanswered" in n for n in ipam.notices)
    (again,) = ipam.plan(60.0 + config.throttle_pause_s)  # ... then asks again
    assert isinstance(again, CreateEni) and again.device_index == create.device_index
    # the late answer of the given-up effect is accepted and ignored
    assert ipam.apply(EniCreated(create.effect_id, eni(1, ips=9)), 70.0) == ()
    assert ipam.stats(70.0).enis == 1


def test_an_expired_shrink_gives_its_addresses_back_to_the_pool() -> None:
    ipam = node(config=PoolConfig(warm_ip_target=1), enis=(eni(0, ips=4),))
    (unassign,) = ipam.plan(100.0)
    assert isinstance(unassign, UnassignAddresses)
    assert ipam.stats(100.0).available == 1
    ipam.plan(100.0 + ipam.config.effect_timeout_s)
    assert ipam.stats(100.0 + ipam.config.effect_timeout_s).leaving == 0


def test_next_wake_at_is_the_next_time_a_decision_can_change() -> None:
    ipam = node(enis=(eni(0, ips=9),))
    assert ipam.plan(0.0) == []
    ipam.assign(key(1), pod(1), 0.0)
    ipam.release(key(1), 10.0)
    wake = ipam.next_wake_at(10.0)
    assert wake == min(10.0 + ipam.config.cooldown_s, 60.0)  # cooldown or the ENI's min age
    assert ipam.next_wake_at(10.0) == wake  # a query
    (throttled,) = ipam.plan(wake, waiting=1) or [None]
    assert throttled is not None
    ipam.apply(EffectFailed(throttled.effect_id, FailureKind.THROTTLED), wake)
    assert ipam.next_wake_at(wake) == wake + ipam.config.throttle_pause_s


def test_adaptive_backoff_ends_are_wake_times() -> None:
    no_boot_fill = AdaptiveTuning(boot_hold_s=0.0, boot_idle_hold_s=0.0)
    config = PoolConfig(policy=PolicyName.ADAPTIVE, adaptive=no_boot_fill)
    ipam = node("m5.xlarge", config)
    (first,) = ipam.plan(1000.0)
    ipam.apply(EffectFailed(first.effect_id, FailureKind.THROTTLED), 1000.0)
    wake = ipam.next_wake_at(1000.0)
    assert 1000.0 < wake <= 1000.0 + config.adaptive.backoff_base_s
    assert ipam.plan(wake) != []


# ------------------------------------------------------------------- reconcile
def test_an_empty_snapshot_or_one_without_the_primary_is_refused() -> None:
    ipam = node(enis=(eni(0, ips=2), eni(1, ips=2)))
    ipam.assign(key(1), pod(1), 0.0)
    for snapshot in (ObservedNode(enis=()), ObservedNode(enis=(eni(1, ips=2),))):
        report = ipam.reconcile(snapshot, 1000.0)
        assert report.refused and report.diff.empty and not report.force_removed
        assert ipam.stats(1000.0).enis == 2 and ipam.get(key(1)) is not None
    assert any("refused" in n for n in ipam.notices)


# -------------------------------------------------------------- typed imports
def test_effect_and_outcome_import_from_where_plan_and_apply_are(tmp_path: object) -> None:
    source = textwrap.dedent(
        """
        from ipamcore.ipam import Effect, Ipam, Outcome

        def drive(ipam: Ipam, outcome: Outcome) -> list[Effect]:
            ipam.apply(outcome, 0.0)
            return ipam.plan(0.0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "-c", source],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
