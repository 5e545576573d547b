"""The pool configuration: one validated, frozen object (the core never reads the environment).

Field names follow upstream's environment variables; the daemon's composition root maps
``WARM_ENI_TARGET`` to ``warm_eni_target`` and so on, and reports :class:`ConfigError` with
the variable's name.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, cast

import attrs

from ipamcore.errors import ConfigError
from ipamcore.model import SUBNET_DISCOVERY_TAG, Subnet

CLUSTER_TAG_PREFIX = "kubernetes.io/cluster/"


class PolicyName(enum.Enum):
    """Which warm-pool policy decides growth and shrink."""

    UPSTREAM = "upstream"  # upstream's arithmetic, but cooling addresses are not available
    UPSTREAM_FAITHFUL = "upstream-faithful"  # counts cooling addresses as available, like upstream
    ADAPTIVE = "adaptive"  # the project's own: warm pool sized from demand (ipamcore.adaptive)


@attrs.frozen
class EniPlacement:
    """Where new ENIs go.

    ``subnet_id``/``security_groups`` empty means "the primary ENI's". With custom networking
    they come from the node's ENIConfig and the primary ENI carries no pod addresses. With
    subnet discovery a new ENI goes to the tagged subnet with the most free addresses.
    """

    subnet_id: str = ""
    security_groups: tuple[str, ...] = ()
    custom_networking: bool = False
    subnet_discovery: bool = False
    cluster_name: str = ""


@attrs.frozen
class AdaptiveTuning:
    """Constants of the ``adaptive`` policy (see :mod:`ipamcore.adaptive`); the defaults are
    what the README's comparison was measured with."""

    rate_window_s: float = 30.0  # time constant of the arrival / release rate averages
    refill_horizon_s: float = 8.0  # arrivals to cover while a top-up is on its way and usable
    safety_sigmas: float = 1.5  # cover the expected arrivals plus this many standard deviations
    batch_horizon_s: float = 45.0  # net growth one growth call asks for
    congestion_hold_s: float = 600.0  # after a throttled growth call, each call fills its ENI
    boot_hold_s: float = 300.0  # a node just booted fills its first ENI(s) and keeps them
    boot_idle_hold_s: float = 900.0  # ... longer while no pod has come at all
    boot_enis: int = 2  # ENIs a node just booted fills (creating them at boot, spread out)
    settled_rate: float = 0.01  # ... or until pods came and the net rate fell to this (/s)
    eni_lookahead_s: float = 120.0  # create the next ENI when the room left lasts less
    min_warm: int = 1  # addresses kept ready even with no demand at all
    backoff_base_s: float = 1.0  # first pause after a throttled growth call
    backoff_cap_s: float = 30.0  # longest pause (before jitter)
    urgent_backoff_cap_s: float = 20.0  # longest pause when pods need addresses now
    gap_confidence: float = 3.0  # after g s without arrivals, no rate above this / g (5 %)
    burst_horizon_s: float = 1.0  # refill horizon while growth is under way (answers re-plan)
    keep_factor: float = 2.0  # give back only what is ready beyond max(high, keep_factor * low)
    history_s: float = 1800.0  # demand history: peak pods kept while calls are scarce
    history_bucket_s: float = 60.0  # the history's resolution (one peak a bucket)


def _non_negative(name: str, kind: type = int) -> Callable[[object, object, Any], None]:
    """A validator: ``None`` or a number of ``kind`` (an int is a float too; never a bool),
    0 or more, finite."""

    def check(_inst: object, _attr: object, value: Any) -> None:
        if value is None:
            return
        kinds: tuple[type, ...] = (int, float) if kind is float else (int,)
        if isinstance(value, bool) or not isinstance(value, kinds):
            shown = f"{type(value).__name__} {value!r}"
            raise ConfigError(name, f"must be {kind.__name__}, got {shown}")
        number = float(cast(float, value))
        if not math.isfinite(number):
            raise ConfigError(name, f"must be a finite number, got {value}")
        if number < 0:
            raise ConfigError(name, f"must be 0 or more, got {value}")

    return check


def _is(name: str, kind: type) -> Callable[[object, object, Any], None]:
    def check(_inst: object, _attr: object, value: Any) -> None:
        if not isinstance(value, kind):
            shown = f"{type(value).__name__} {value!r}"
            raise ConfigError(name, f"must be {kind.__name__}, got {shown}")

    return check


@attrs.frozen
class PoolConfig:
    """Warm-pool knobs with upstream's defaults and names."""

    warm_eni_target: int = attrs.field(default=1, validator=_non_negative("WARM_ENI_TARGET"))
    warm_ip_target: int = attrs.field(default=0, validator=_non_negative("WARM_IP_TARGET"))
    minimum_ip_target: int = attrs.field(default=0, validator=_non_negative("MINIMUM_IP_TARGET"))
    # Unset reads as 1, as in upstream's manifests (upstream's code reads unset as 0); 0 is
    # valid: the pool then grows only when nothing is available.
    warm_prefix_target: int = attrs.field(default=1, validator=_non_negative("WARM_PREFIX_TARGET"))
    prefix_delegation: bool = attrs.field(
        default=False, validator=_is("ENABLE_PREFIX_DELEGATION", bool)
    )
    ipv6: bool = attrs.field(default=False, validator=_is("ENABLE_IPv6", bool))
    # ENABLE_IPv4: with ``ipv6`` and this false, upstream's IPv6 single stack; both true is
    # dual stack (each pod gets an IPv4 from the warm pool and an IPv6 from the prefix).
    ipv4: bool = attrs.field(default=True, validator=_is("ENABLE_IPv4", bool))
    # ENIs on network cards above 0, for multi-NIC pods (see ipamcore.cards)
    multi_nic: bool = attrs.field(default=False, validator=_is("ENABLE_MULTI_NIC", bool))
    max_eni: int | None = attrs.field(default=None, validator=_non_negative("MAX_ENI"))
    cooldown_s: float = attrs.field(
        default=30.0, validator=_non_negative("IP_COOLDOWN_PERIOD", float)
    )
    max_pods: int | None = attrs.field(default=None, validator=_non_negative("MAX_PODS"))
    placement: EniPlacement = attrs.field(
        default=EniPlacement(), validator=_is("placement", EniPlacement)
    )
    policy: PolicyName = attrs.field(
        default=PolicyName.UPSTREAM, validator=_is("IPAMD_POLICY", PolicyName)
    )
    # an ENI younger than this is never freed
    eni_min_age_s: float = attrs.field(
        default=60.0, validator=_non_negative("eni_min_age_s", float)
    )
    # at most one shrink pass this often
    shrink_interval_s: float = attrs.field(
        default=30.0, validator=_non_negative("shrink_interval_s", float)
    )
    # growth paused after InsufficientFreeAddressesInSubnet
    subnet_full_pause_s: float = attrs.field(
        default=120.0, validator=_non_negative("subnet_full_pause_s", float)
    )
    # growth paused after a throttled call
    throttle_pause_s: float = attrs.field(
        default=5.0, validator=_non_negative("throttle_pause_s", float)
    )
    # recently released / acquired addresses kept out of diffs
    reconcile_grace_s: float = attrs.field(
        default=60.0, validator=_non_negative("reconcile_grace_s", float)
    )
    reserved_trunk_enis: int = attrs.field(
        default=0, validator=_non_negative("reserved_trunk_enis")
    )
    adaptive: AdaptiveTuning = attrs.field(
        default=AdaptiveTuning(), validator=_is("adaptive", AdaptiveTuning)
    )
    # an effect unanswered this long is given up as failed (see ipamcore.ipam)
    effect_timeout_s: float = attrs.field(
        default=600.0, validator=_non_negative("effect_timeout_s", float)
    )

    def __attrs_post_init__(self) -> None:
        if not self.ipv4 and not self.ipv6:
            raise ConfigError("ENABLE_IPv4", "ENABLE_IPv4 and ENABLE_IPv6 are both false")
        if self.effect_timeout_s <= 0:
            raise ConfigError("effect_timeout_s", "must be above 0")
        if self.max_eni == 0:
            raise ConfigError("MAX_ENI", "must be 1 or more (the primary ENI counts)")
        if self.multi_nic and self.ipv6 and self.ipv4:
            raise ConfigError("ENABLE_MULTI_NIC", MULTI_NIC_DUAL_STACK_UNSUPPORTED)

    @property
    def ipv6_only(self) -> bool:
        """Upstream's IPv6 mode: pods get an IPv6 address only."""
        return self.ipv6 and not self.ipv4

    @property
    def dual_stack(self) -> bool:
        """Each pod gets an IPv4 and an IPv6 address (beyond upstream)."""
        return self.ipv6 and self.ipv4

    @property
    def warm_ip_targets_defined(self) -> bool:
        """WARM_IP_TARGET or MINIMUM_IP_TARGET set: they override WARM_ENI/WARM_PREFIX."""
        return self.warm_ip_target > 0 or self.minimum_ip_target > 0


# Multi-NIC runs with IPv4 and, as upstream v1.20+, in IPv6 mode (one ENI with an IPv6 /80 on
# each card above 0). Dual stack (beyond upstream) would need both families on every card's
# interfaces; this build refuses the pair at start rather than give the extra interfaces one
# family only (README: Multiple network cards).
MULTI_NIC_DUAL_STACK_UNSUPPORTED = (
    "ENABLE_MULTI_NIC=true cannot be combined with dual stack (ENABLE_IPv6=true and "
    "ENABLE_IPv4=true) in this build: set ENABLE_IPv4=false for upstream's IPv6 mode, or "
    "ENABLE_MULTI_NIC=false"
)


def choose_discovered_subnet(
    subnets: list[Subnet], availability_zone: str, cluster_name: str, primary_subnet_id: str
) -> Subnet | None:
    """Subnet discovery: the subnet with the most free addresses among the primary ENI's
    subnet and those in the node's availability zone tagged ``kubernetes.io/role/cni``,
    skipping subnets tagged ``0`` and subnets reserved for another cluster.

    Ties go to the lower subnet id, so the choice is deterministic.
    """
    candidates = []
    for subnet in subnets:
        tags = subnet.tag_map
        if subnet.availability_zone != availability_zone:
            continue
        if subnet.subnet_id != primary_subnet_id:
            if SUBNET_DISCOVERY_TAG not in tags or tags[SUBNET_DISCOVERY_TAG] == "0":
                continue
        elif tags.get(SUBNET_DISCOVERY_TAG) == "0":
            continue
        other_clusters = [
            k[len(CLUSTER_TAG_PREFIX) :]
            for k in tags
            if k.startswith(CLUSTER_TAG_PREFIX) and k[len(CLUSTER_TAG_PREFIX) :] != cluster_name
        ]
        owned_here = cluster_name and f"{CLUSTER_TAG_PREFIX}{cluster_name}" in tags
        if other_clusters and not owned_here:
            continue
        candidates.append(subnet)
    if not candidates:
        return None
    return min(candidates, key=lambda s: (-s.free_addresses, s.subnet_id))
