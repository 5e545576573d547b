"""What the datapath must build, as data: the core decides it, a datapath backend does it."""

from __future__ import annotations

import hashlib

import attrs

POD_GATEWAY = "169.254.1.1"
DEFAULT_VETH_PREFIX = "eni"
POD_RULE_TO_PRIORITY = 512  # to <pod ip> lookup main
POD_RULE_FROM_PRIORITY = 1536  # from <pod ip> lookup <eni table>
ENI_RULE_PRIORITY = 32765  # from <eni primary ip> lookup <eni table>


def host_veth_name(namespace: str, pod_name: str, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """Upstream's host-side veth name: prefix + first 11 hex digits of sha1("<ns>.<pod>")."""
    digest = hashlib.sha1(f"{namespace}.{pod_name}".encode()).hexdigest()
    return f"{prefix}{digest[:11]}"


def route_table_for_device(device_index: int) -> int | None:
    """Device N > 0 routes through table N+1; the primary ENI (device 0) uses the main table."""
    return None if device_index == 0 else device_index + 1


@attrs.frozen
class PodNetwork:
    """Everything needed to wire (or unwire, or check) one pod interface.

    ``route_table`` is None for a pod on the primary ENI (no ``from`` rule is added).
    """

    netns_path: str
    if_name: str
    host_veth: str
    ipv4: str
    mtu: int = 9001
    route_table: int | None = None


@attrs.frozen
class EniNetwork:
    """A secondary ENI's host setup: link by MAC, its primary address, MTU and route table."""

    mac: str
    primary_ip: str
    subnet_cidr: str
    gateway: str
    route_table: int
    mtu: int = 9001


@attrs.frozen
class NodeNetwork:
    """Node-wide settings: SNAT for traffic leaving the VPC unless external SNAT is on."""

    primary_ip: str
    vpc_cidrs: tuple[str, ...]
    external_snat: bool = False
    snat_chain: str = "AWS-SNAT-CHAIN-0"
