"""Upstream's test fixtures in the core's terms: its ENIs, addresses and datastores."""

from __future__ import annotations

from collections.abc import Iterable

from ipamcore.config import PoolConfig
from ipamcore.effects import Effect, FreeEni, UnassignAddresses
from ipamcore.events import AddressesUnassigned, EniFreed
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, ObservedEni, PodRef

# ipamd_test.go's constants
PRIMARY_ENI, SEC_ENI, TER_ENI = "eni-00000000", "eni-00000001", "eni-00000002"
PRIMARY_SUBNET, SEC_SUBNET = "10.10.10.0/24", "10.10.20.0/24"
IP01, IP02, IP03 = "10.10.10.11", "10.10.10.12", "10.10.10.13"
IP11, IP12 = "10.10.20.11", "10.10.20.12"
PREFIX01, PREFIX02 = "10.10.30.0/28", "10.10.40.0/28"
OLD = 10_000.0  # past every age and grace rule (upstream zeroes createTime in its tests)


def observed(
    eni_id: str,
    device: int,
    *,
    primary: bool = False,
    ips: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    subnet: str = "subnet-1",
    cidr: str = PRIMARY_SUBNET,
    trunk: bool = False,
    efa: bool = False,
    tags: tuple[tuple[str, str], ...] = (),
) -> ObservedEni:
    """An ENI as upstream's ``AddENI`` plus ``AddIPv4CidrToStore`` would hold it."""
    return ObservedEni(
        eni_id=eni_id, mac=f"02:00:00:00:00:{device:02x}", device_index=device,
        subnet_id=subnet, subnet_cidr=cidr, primary_ip=f"10.99.0.{device + 1}",
        ipv4_addresses=tuple(ips), ipv4_prefixes=tuple(prefixes), is_primary=primary,
        is_trunk=trunk, is_efa=efa, tags=tags, security_groups=("sg-1",),
    )  # fmt: skip


def limits(max_enis: int = 4, per_eni: int = 14) -> InstanceLimits:
    """``maxENI`` and ``maxIPsPerENI`` (or ``maxPrefixesPerENI``) of an upstream test."""
    return InstanceLimits("upstream.test", max_enis=max_enis, ipv4_per_eni=per_eni + 1)


def datastore(
    enis: Iterable[ObservedEni],
    config: PoolConfig | None = None,
    lim: InstanceLimits | None = None,
    now: float = 0.0,
) -> Ipam:
    ipam = Ipam(config or PoolConfig(), lim or limits())
    ipam.load(tuple(enis), now)
    return ipam


def ipam_key(container: str, network: str = "net0") -> AllocationKey:
    return AllocationKey(network, container, "eth0")


def metadata(name: str) -> PodRef:
    return PodRef("default", name)


def shrink_answered(ipam: Ipam, now: float) -> list[Effect]:
    """One shrink pass whose effects all succeed (what the cloud would do)."""
    effects = ipam.plan(now)
    for effect in effects:
        if isinstance(effect, UnassignAddresses):
            ipam.apply(AddressesUnassigned(effect.effect_id), now)
        elif isinstance(effect, FreeEni):
            ipam.apply(EniFreed(effect.effect_id), now)
    return effects


def eni_ids(ipam: Ipam, now: float) -> list[str]:
    return [v.eni_id for v in ipam.eni_views(now)]


def total_of(ipam: Ipam, eni_id: str, now: float) -> int:
    (view,) = [v for v in ipam.eni_views(now) if v.eni_id == eni_id]
    return view.total
