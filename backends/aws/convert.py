"""Pure conversions from EC2 response shapes to the core's model (no I/O)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from ipamcore.limits import InstanceLimits
from ipamcore.model import ObservedEni, Subnet


def tags_of(raw: Any) -> tuple[tuple[str, str], ...]:
    """EC2 ``[{"Key": k, "Value": v}]`` as sorted pairs."""
    return tuple(sorted((str(t["Key"]), str(t.get("Value", ""))) for t in raw or ()))


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def rfc3339(ts: float) -> str:
    """Upstream's createdAt format (Go ``time.RFC3339`` in UTC): ``2024-05-01T12:00:00Z``."""
    dt = datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float | None:
    """Unix seconds of an RFC3339 timestamp; None when it does not parse."""
    try:
        dt = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def eni_from_ec2(
    raw: Mapping[str, Any],
    subnet_cidr: Callable[[str], str],
    device_index: int | None = None,
    network_card: int | None = None,
) -> ObservedEni:
    """An ObservedEni from a DescribeNetworkInterfaces / CreateNetworkInterface item.

    The primary private address is excluded from ``ipv4_addresses``. ``device_index`` and
    ``network_card`` override the attachment's (a freshly created ENI has none yet).
    """
    attachment = raw.get("Attachment") or {}
    if device_index is None:
        device_index = int(attachment.get("DeviceIndex", 0))
    if network_card is None:
        network_card = int(attachment.get("NetworkCardIndex", 0) or 0)
    secondaries = tuple(
        str(a["PrivateIpAddress"])
        for a in raw.get("PrivateIpAddresses", ())
        if not a.get("Primary", False)
    )
    interface_type = str(raw.get("InterfaceType", "interface"))
    subnet_id = str(raw.get("SubnetId", ""))
    return ObservedEni(
        eni_id=str(raw["NetworkInterfaceId"]),
        mac=str(raw.get("MacAddress", "")),
        device_index=device_index,
        subnet_id=subnet_id,
        subnet_cidr=subnet_cidr(subnet_id),
        primary_ip=str(raw.get("PrivateIpAddress", "")),
        network_card=network_card,
        ipv4_addresses=secondaries,
        ipv4_prefixes=tuple(str(p["Ipv4Prefix"]) for p in raw.get("Ipv4Prefixes", ())),
        ipv6_prefixes=tuple(str(p["Ipv6Prefix"]) for p in raw.get("Ipv6Prefixes", ())),
        is_primary=device_index == 0 and network_card == 0,
        is_trunk=interface_type == "trunk",
        is_efa=interface_type in ("efa", "efa-only"),
        is_efa_only=interface_type == "efa-only",
        tags=tags_of(raw.get("TagSet")),
        security_groups=tuple(str(g["GroupId"]) for g in raw.get("Groups", ())),
    )


def subnet_from_ec2(raw: Mapping[str, Any]) -> Subnet:
    return Subnet(
        subnet_id=str(raw["SubnetId"]),
        cidr=str(raw.get("CidrBlock", "")),
        availability_zone=str(raw.get("AvailabilityZone", "")),
        free_addresses=int(raw.get("AvailableIpAddressCount", 0)),
        tags=tags_of(raw.get("Tags")),
    )


def limits_from_ec2(raw: Mapping[str, Any]) -> InstanceLimits:
    """InstanceLimits from one DescribeInstanceTypes item."""
    net = raw.get("NetworkInfo") or {}
    max_enis = int(net.get("MaximumNetworkInterfaces", 0))
    cards = tuple(
        (int(c.get("NetworkCardIndex", 0)), int(c.get("MaximumNetworkInterfaces", 0)))
        for c in net.get("NetworkCards", ())
    ) or ((0, max_enis),)
    return InstanceLimits(
        instance_type=str(raw["InstanceType"]),
        max_enis=max_enis,
        ipv4_per_eni=int(net.get("Ipv4AddressesPerInterface", 0)),
        hypervisor=str(raw.get("Hypervisor", "") or "unknown"),
        is_bare_metal=bool(raw.get("BareMetal", False)),
        default_network_card_index=int(net.get("DefaultNetworkCardIndex", 0) or 0),
        network_cards=cards,
    )


def newly_assigned(listed: list[str], count: int) -> tuple[str, ...]:
    """What an Assign call added, from the list its response returned.

    Real EC2 lists exactly the new addresses / prefixes. moto echoes the ENI's whole list
    (primary first, new ones appended), so a list longer than ``count`` is cut to its tail.
    """
    if count > 0 and len(listed) > count:
        listed = listed[-count:]
    return tuple(listed)
