"""IPv6, dual stack and multiple network cards in ``ipamctl simulate`` and ``recommend``.

The knobs (``ENABLE_IPv6``, ``ENABLE_IPv4``, ``ENABLE_MULTI_NIC``), the settings the daemon
(and upstream) would refuse on an instance type or ignore, and the one IPv6 rule ``recommend``
follows: in IPv6 single stack the warm targets are ignored (one /80 prefix a node, assigned at
start, as upstream), so there is nothing to sweep.
"""

from __future__ import annotations

import attrs

from adapters.simulator import SimConfig
from ipamcore.cards import card_limits
from ipamcore.config import PoolConfig
from ipamcore.limits import InstanceLimits

FAMILY_KNOBS: dict[str, tuple[str, type]] = {
    "ENABLE_IPv6": ("ipv6", bool),
    "ENABLE_IPv4": ("ipv4", bool),
    "ENABLE_MULTI_NIC": ("multi_nic", bool),
}
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
WARM_KNOBS = ("WARM_ENI_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET", "WARM_PREFIX_TARGET")
IPV6_WARM_IGNORED = (
    "IPv6 mode: WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET and WARM_PREFIX_TARGET are "
    "ignored (as upstream): each node gets one /80 prefix on its primary ENI at start and "
    "every pod's address comes from it"
)
IPV6_NO_SWEEP = (
    "IPv6 single stack: no warm-pool setting to recommend. Upstream (and this daemon) "
    "ignore WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET and WARM_PREFIX_TARGET in "
    "IPv6 mode: each node takes one /80 prefix at start (one AssignIpv6Addresses call) and "
    "hands every pod an address from it, so every setting would measure the same. The one "
    "run's figures follow."
)


def check_families(
    pool: PoolConfig, given: set[str], limits: InstanceLimits, multi_nic_fraction: float = 0.0
) -> tuple[list[str], list[str]]:
    """(impossible, ignored) for the IP families and network cards on this instance type,
    each naming the setting and the cause (the daemon's own refusals, before a run)."""
    itype = limits.instance_type
    impossible: list[str] = []
    ignored: list[str] = []
    if pool.ipv6 and not limits.supports_prefix_delegation:
        impossible.append(
            f"ENABLE_IPv6=true: {itype} is not a Nitro instance type (hypervisor "
            f"{limits.hypervisor}); pods take IPv6 addresses from a /80 prefix, which EC2 "
            "delegates only to Nitro instances (upstream supports IPv6 on Nitro only)"
        )
    if pool.ipv6_only and not pool.prefix_delegation:
        impossible.append(
            "ENABLE_IPv6=true with ENABLE_IPv4=false needs ENABLE_PREFIX_DELEGATION=true "
            "(IPv6 pods take addresses from a /80 prefix, as upstream; the daemon refuses to "
            "start without it)"
        )
    if pool.ipv6_only:
        named = [k for k in WARM_KNOBS if k.upper() in given]
        ignored.append(IPV6_WARM_IGNORED + (f" (given: {', '.join(named)})" if named else ""))
    if multi_nic_fraction > 0 and not pool.multi_nic:
        impossible.append(
            "--multi-nic-fraction needs --set ENABLE_MULTI_NIC=true: without it the daemon "
            "refuses pods annotated for a multi-nic-attachment, as upstream does"
        )
    cards = card_limits(limits)
    if pool.multi_nic and len(cards) < 2:
        ignored.append(
            f"ENABLE_MULTI_NIC=true: {itype} has one network card; a multi-NIC pod gets only "
            "its card-0 interface"
        )
    return impossible, ignored


def with_family(candidate: PoolConfig, base: PoolConfig) -> PoolConfig:
    """A swept candidate's pool with the run's IP families and multi-NIC setting."""
    return attrs.evolve(candidate, ipv6=base.ipv6, ipv4=base.ipv4, multi_nic=base.multi_nic)


def recommend_knobs(knobs: list[str], names: set[str]) -> list[str]:
    """``recommend --set`` items: the run's IP families and multi-NIC setting, which every
    swept candidate shares (``names``: the knob names given, upper case). The sweep tries
    prefix delegation itself, so ENABLE_PREFIX_DELEGATION is taken only in IPv6 single stack
    (where upstream requires it; it is added there when left out). ValueError names the
    knob it cannot take."""
    family = {k.upper() for k in FAMILY_KNOBS}
    for name in sorted(names - family - {"ENABLE_PREFIX_DELEGATION"}):
        raise ValueError(
            f"--set {name}: recommend sweeps the warm-pool knobs itself; --set takes "
            f"{', '.join(FAMILY_KNOBS)} (the cluster's IP families and network cards)"
        )
    flags = {
        item.partition("=")[0].strip().upper(): item.partition("=")[2].strip().lower()
        for item in knobs
    }
    ipv6_only = flags.get("ENABLE_IPV6") in TRUE and flags.get("ENABLE_IPV4") in FALSE
    if "ENABLE_PREFIX_DELEGATION" in names and not ipv6_only:
        raise ValueError(
            "--set ENABLE_PREFIX_DELEGATION: recommend sweeps prefix delegation itself (it is "
            "taken only with ENABLE_IPv6=true ENABLE_IPv4=false, where upstream requires it)"
        )
    if ipv6_only and "ENABLE_PREFIX_DELEGATION" not in names:
        return [*knobs, "ENABLE_PREFIX_DELEGATION=true"]
    return list(knobs)


def family_label(config: SimConfig) -> str:
    """``, dual stack``, ``, ENABLE_MULTI_NIC, 20% multi-NIC pods``, ... for a title."""
    pool = config.pool
    out = ", IPv6 single stack" if pool.ipv6_only else ", dual stack" if pool.dual_stack else ""
    if pool.multi_nic:
        out += f", ENABLE_MULTI_NIC, {config.multi_nic_fraction:.0%} multi-NIC pods"
    return out
