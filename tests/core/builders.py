"""Small builders for core tests: ENIs on a made-up subnet and a node with a few of them."""

from __future__ import annotations

from ipamcore.config import PoolConfig
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import AllocationKey, ObservedEni, PodRef

SUBNET = "subnet-0a"
SUBNET_CIDR = "10.0.0.0/16"


def eni(
    index: int,
    ips: int = 0,
    prefixes: int = 0,
    *,
    first_host: int = 10,
    tags: tuple[tuple[str, str], ...] = (),
) -> ObservedEni:
    """ENI number ``index`` with ``ips`` secondary IPs in 10.0.<index>.x and ``prefixes`` /28s
    in 10.0.<100+index>.x."""
    return ObservedEni(
        eni_id=f"eni-{index:04d}",
        mac=f"02:00:00:00:00:{index:02x}",
        device_index=index,
        subnet_id=SUBNET,
        subnet_cidr=SUBNET_CIDR,
        primary_ip=f"10.0.{index}.5",
        ipv4_addresses=tuple(f"10.0.{index}.{first_host + i}" for i in range(ips)),
        ipv4_prefixes=tuple(f"10.0.{100 + index}.{16 * i}/28" for i in range(prefixes)),
        is_primary=index == 0,
        tags=tags,
        security_groups=("sg-1",),
    )


def key(n: int | str) -> AllocationKey:
    return AllocationKey("aws-cni", f"c{n}", "eth0")


def pod(n: int | str) -> PodRef:
    return PodRef("default", f"pod-{n}")


def node(
    instance_type: str = "m5.large",
    config: PoolConfig | None = None,
    enis: tuple[ObservedEni, ...] = (),
    now: float = 0.0,
    limits: InstanceLimits | None = None,
) -> Ipam:
    ipam = Ipam(config or PoolConfig(), limits or limits_for(instance_type))
    ipam.load(enis or (eni(0),), now)
    return ipam
