"""The account's state and EC2's rules: subnets, instances, ENIs and what each action may do.

Every operation here is unmetered (no throttling, latency, faults or call records: that is
:mod:`backends.fakecloud.cloud`'s job) and atomic: it either changes the state and returns, or
raises :class:`CloudError` with the code EC2 would answer and changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping

from backends.fakecloud.addresses import int_to_ip, invalid, ip_to_int, prefix_to_int
from backends.fakecloud.records import EniState, InstanceState
from backends.fakecloud.subnets import SubnetState
from ipamcore.errors import CloudError, FailureKind, UnknownInstanceType
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import CLUSTER_NAME_TAG, INSTANCE_ID_TAG

LEAK_COOLDOWN_S = 300.0  # upstream leaves available ENIs alone for 5 minutes after creation


def not_found(what: str, ident: str, code: str) -> CloudError:
    return CloudError(FailureKind.NOT_FOUND, f"{what} {ident!r} does not exist", code)


FAKE_VPC_IPV6_CIDR = "2600:1f14:a0c:ce00::/56"


def no_prefixes() -> CloudError:
    return CloudError(FailureKind.OTHER, "prefixes need a Nitro instance", "UnsupportedOperation")


def limit_exceeded(message: str, code: str) -> CloudError:
    return CloudError(FailureKind.LIMIT_EXCEEDED, message, code)


class Vpc:
    """One VPC of one account. ``on_change(instance_id)`` hears of every change to what an
    instance's metadata would show (attachments and addresses of attached ENIs)."""

    def __init__(self, cidrs: Iterable[str] = ("10.0.0.0/16",)) -> None:
        self.cidrs = [ipaddress.IPv4Network(c) for c in cidrs]
        # The VPC's Amazon-provided IPv6 block: subnets added with an IPv6 /64 take it here.
        self.ipv6_cidrs = [ipaddress.IPv6Network(FAKE_VPC_IPV6_CIDR)]
        self.subnets: dict[str, SubnetState] = {}
        self.instances: dict[str, InstanceState] = {}
        self.enis: dict[str, EniState] = {}
        self.custom_types: dict[str, InstanceLimits] = {}
        self.on_change: Callable[[str], None] | None = None
        self._serial = 0

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def _changed(self, eni: EniState) -> None:
        if self.on_change is not None and eni.instance_id is not None:
            self.on_change(eni.instance_id)

    # -- lookups ---------------------------------------------------------------------------

    def subnet(self, subnet_id: str) -> SubnetState:
        try:
            return self.subnets[subnet_id]
        except KeyError:
            raise not_found("subnet", subnet_id, "InvalidSubnetID.NotFound") from None

    def instance(self, instance_id: str) -> InstanceState:
        inst = self.instances.get(instance_id)
        if inst is None or inst.terminated:
            raise not_found("instance", instance_id, "InvalidInstanceID.NotFound")
        return inst

    def eni(self, eni_id: str) -> EniState:
        try:
            return self.enis[eni_id]
        except KeyError:
            raise not_found("interface", eni_id, "InvalidNetworkInterfaceID.NotFound") from None

    def instance_type(self, instance_type: str) -> InstanceLimits:
        custom = self.custom_types.get(instance_type)
        if custom is not None:
            return custom
        try:
            return limits_for(instance_type)
        except UnknownInstanceType:
            raise CloudError(
                FailureKind.NOT_FOUND,
                f"instance type {instance_type!r} does not exist",
                "InvalidInstanceType",
            ) from None

    def attached_enis(self, instance_id: str) -> list[EniState]:
        inst = self.instance(instance_id)
        return [self.enis[inst.devices[i]] for i in sorted(inst.devices)]

    def leaked_enis(
        self,
        instance_id: str | None,
        now: float,
        cluster_name: str = "",
        min_age_s: float | None = LEAK_COOLDOWN_S,
    ) -> list[str]:
        """Available ENIs created over ``min_age_s`` (None: any age) before ``now`` and tagged for
        ``instance_id``, or (None) for any instance, then of ``cluster_name`` when set (the
        scope upstream's cleanup frees: ENIs terminated nodes left behind). The age is the
        creation time, which the agent's ``createdAt`` tag records (one VPC: no VPC filter)."""
        found = []
        for e in self.enis.values():
            if e.instance_id is not None or INSTANCE_ID_TAG not in e.tags:
                continue
            if min_age_s is not None and now - e.created_at <= min_age_s:
                continue
            if instance_id is not None:
                if e.tags[INSTANCE_ID_TAG] == instance_id:
                    found.append(e.eni_id)
            elif not cluster_name or e.tags.get(CLUSTER_NAME_TAG) == cluster_name:
                found.append(e.eni_id)
        return sorted(found)

    # -- setup -----------------------------------------------------------------------------

    def add_subnet(
        self, cidr: str, az: str, tags: Mapping[str, str] | None = None, ipv6_cidr: str = ""
    ) -> str:
        net = ipaddress.IPv4Network(cidr)
        if not any(net.subnet_of(c) for c in self.cidrs):
            raise ValueError(f"{cidr} is outside the VPC's CIDRs {self.cidrs}")
        for other in self.subnets.values():
            if other.network.overlaps(net):
                raise ValueError(f"{cidr} overlaps {other.subnet_id} ({other.cidr})")
        subnet_id = f"subnet-{self._next():017x}"
        self.subnets[subnet_id] = SubnetState(subnet_id, cidr, az, dict(tags or {}), ipv6_cidr)
        return subnet_id

    def add_instance(self, instance_type: str, subnet_id: str) -> InstanceState:
        subnet = self.subnet(subnet_id)
        limits = self.instance_type(instance_type)
        inst = InstanceState(f"i-{self._next():017x}", limits, subnet.availability_zone, subnet_id)
        self.instances[inst.instance_id] = inst
        return inst

    # -- ENI lifecycle ---------------------------------------------------------------------

    def create_eni(
        self,
        subnet_id: str,
        security_groups: tuple[str, ...],
        tags: dict[str, str],
        description: str,
        now: float,
        limits: InstanceLimits,
        ipv4_count: int = 0,
        prefix_count: int = 0,
        ipv6_prefix: bool = False,
        interface_type: str = "interface",
    ) -> EniState:
        """CreateNetworkInterface: primary IP + secondaries or prefixes, status available.
        An ``efa-only`` interface has no IP address at all (EC2 refuses any it is asked for)."""
        subnet = self.subnet(subnet_id)
        if ipv4_count < 0 or prefix_count < 0:
            raise invalid("address counts must not be negative")
        if interface_type not in ("interface", "efa", "efa-only"):
            raise invalid(f"unknown interface type {interface_type!r}")
        efa_only = interface_type == "efa-only"
        if efa_only and (ipv4_count or prefix_count or ipv6_prefix):
            raise invalid("an efa-only network interface carries no IP address")
        if prefix_count and not limits.supports_prefix_delegation:
            raise no_prefixes()
        if ipv4_count + prefix_count > limits.ipv4_per_eni - 1:
            raise limit_exceeded(
                f"{ipv4_count + prefix_count} secondary addresses exceed the limit of "
                f"{limits.ipv4_per_eni - 1} for {limits.instance_type}",
                "PrivateIpAddressLimitExceeded",
            )
        if ipv6_prefix and subnet.ipv6_network is None:
            raise invalid(f"{subnet_id} has no IPv6 CIDR block")
        addresses = [-1] if efa_only else subnet.take_addresses(1 + ipv4_count)
        try:
            prefixes = subnet.take_prefixes(prefix_count)
        except CloudError:
            for a in addresses:
                subnet.release_address(a)
            raise
        n = self._next()
        eni = EniState(
            eni_id=f"eni-{n:017x}",
            mac=f"02:{(n >> 32) & 255:02x}:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:"
            f"{(n >> 8) & 255:02x}:{n & 255:02x}",
            subnet=subnet,
            primary_ip=addresses[0],
            security_groups=security_groups,
            tags=tags,
            description=description,
            created_at=now,
            max_addresses=limits.ipv4_per_eni,
            prefixes_supported=limits.supports_prefix_delegation,
        )
        eni.interface_type = interface_type
        eni.ipv4 = dict.fromkeys(addresses[1:])
        eni.prefixes = dict.fromkeys(prefixes)
        if ipv6_prefix:
            eni.ipv6_prefixes.append(subnet.take_ipv6_prefix())
        self.enis[eni.eni_id] = eni
        return eni

    def attach(
        self, eni_id: str, instance_id: str, device_index: int, network_card: int = 0
    ) -> None:
        """Attach at ``device_index`` of ``network_card``: each card has its own device
        indexes and its own ENI limit, as on EC2 (``AttachmentLimitExceeded`` per card; a
        card the type lacks is ``InvalidParameterValue``)."""
        eni = self.eni(eni_id)
        inst = self.instance(instance_id)
        if eni.instance_id is not None:
            raise CloudError(
                FailureKind.OTHER, f"{eni_id} is already attached", "InvalidNetworkInterface.InUse"
            )
        if eni.subnet.availability_zone != inst.availability_zone:
            raise CloudError(
                FailureKind.OTHER,
                f"{eni_id} and {instance_id} are in different availability zones",
                "InvalidParameterCombination",
            )
        limit = inst.card_limit(network_card)
        if limit == 0:
            raise invalid(f"{inst.limits.instance_type} has no network card {network_card}")
        if (network_card, device_index) in inst.devices:
            raise invalid(
                f"{instance_id} already has an interface at device index {device_index}"
                + (f" of network card {network_card}" if network_card else "")
            )
        if sum(card == network_card for card, _ in inst.devices) >= limit:
            raise limit_exceeded(
                f"{instance_id} ({inst.limits.instance_type}) allows {limit} network "
                f"interfaces on network card {network_card}",
                "AttachmentLimitExceeded",
            )
        inst.devices[(network_card, device_index)] = eni_id
        eni.instance_id = instance_id
        eni.device_index = device_index
        eni.network_card = network_card
        self._changed(eni)

    def detach(self, eni_id: str) -> None:
        eni = self.eni(eni_id)
        if eni.instance_id is None:
            raise CloudError(FailureKind.OTHER, f"{eni_id} is not attached", "IncorrectState")
        if eni.is_primary:
            raise CloudError(
                FailureKind.OTHER,
                f"{eni_id} is the primary interface and cannot be detached",
                "OperationNotPermitted",
            )
        instance_id = eni.instance_id
        inst = self.instances[instance_id]
        if eni.device_index is not None:
            inst.devices.pop((eni.network_card, eni.device_index), None)
        eni.instance_id = None
        eni.device_index = None
        eni.network_card = 0
        eni.delete_on_termination = False
        if self.on_change is not None:
            self.on_change(instance_id)

    def delete(self, eni_id: str) -> None:
        eni = self.eni(eni_id)
        if eni.instance_id is not None:
            raise CloudError(
                FailureKind.OTHER,
                f"{eni_id} is attached to {eni.instance_id}: detach it first",
                "InvalidNetworkInterface.InUse",
            )
        subnet = eni.subnet
        if eni.primary_ip >= 0:  # an efa-only interface has none
            subnet.release_address(eni.primary_ip)
        for a in eni.ipv4:
            subnet.release_address(a)
        for p in eni.prefixes:
            subnet.release_prefix(p)
        for p6 in eni.ipv6_prefixes:
            subnet.release_ipv6_prefix(p6)
        del self.enis[eni_id]

    def terminate(self, instance_id: str) -> None:
        """Delete ENIs marked DeleteOnTermination, detach (and so leak) the others."""
        inst = self.instance(instance_id)
        for index in sorted(inst.devices, reverse=True):
            eni = self.enis[inst.devices[index]]
            eni.is_primary = False
            delete = eni.delete_on_termination
            self.detach(eni.eni_id)
            if delete:
                self.delete(eni.eni_id)
        inst.terminated = True

    # -- addresses -------------------------------------------------------------------------

    def _check_slots(self, eni: EniState, count: int) -> None:
        if eni.interface_type == "efa-only":
            raise invalid(f"{eni.eni_id} is an efa-only network interface: it carries no address")
        if count < 1:
            raise invalid("count must be at least 1")
        if count > eni.free_slots:
            raise limit_exceeded(
                f"{eni.eni_id} has room for {eni.free_slots} more addresses, {count} requested",
                "PrivateIpAddressLimitExceeded",
            )

    def assign_ipv4(self, eni_id: str, count: int) -> list[int]:
        eni = self.eni(eni_id)
        self._check_slots(eni, count)
        taken = eni.subnet.take_addresses(count)
        eni.ipv4.update(dict.fromkeys(taken))
        self._changed(eni)
        return taken

    def assign_prefixes(self, eni_id: str, count: int) -> list[int]:
        eni = self.eni(eni_id)
        if not eni.prefixes_supported:
            raise no_prefixes()
        self._check_slots(eni, count)
        taken = eni.subnet.take_prefixes(count)
        eni.prefixes.update(dict.fromkeys(taken))
        self._changed(eni)
        return taken

    def assign_ipv6_prefixes(self, eni_id: str, count: int) -> list[str]:
        """AssignIpv6Addresses with Ipv6PrefixCount: /80s of the subnet's IPv6 /64 (EC2
        refuses on a subnet without an IPv6 CIDR, or on an instance type without prefix
        delegation)."""
        eni = self.eni(eni_id)
        if count <= 0:
            raise invalid("Ipv6PrefixCount must be 1 or more")
        if eni.subnet.ipv6_network is None:
            raise invalid(f"{eni.subnet.subnet_id} has no IPv6 CIDR block")
        if not eni.prefixes_supported:
            raise no_prefixes()
        taken = [eni.subnet.take_ipv6_prefix() for _ in range(count)]
        eni.ipv6_prefixes.extend(taken)
        self._changed(eni)
        return taken

    def unassign_ipv4(self, eni_id: str, addresses: Iterable[str]) -> None:
        eni = self.eni(eni_id)
        values = [ip_to_int(a) for a in addresses]
        missing = [int_to_ip(v) for v in values if v not in eni.ipv4]
        if missing:
            raise invalid(f"addresses {missing} are not assigned to {eni_id}")
        for v in values:
            del eni.ipv4[v]
            eni.subnet.release_address(v)
        self._changed(eni)

    def unassign_prefixes(self, eni_id: str, prefixes: Iterable[str]) -> None:
        eni = self.eni(eni_id)
        values = [prefix_to_int(p) for p in prefixes]
        missing = [f"{int_to_ip(v)}/28" for v in values if v not in eni.prefixes]
        if missing:
            raise invalid(f"prefixes {missing} are not assigned to {eni_id}")
        for v in values:
            del eni.prefixes[v]
            eni.subnet.release_prefix(v)
        self._changed(eni)

    def add_address(self, eni_id: str, address: str) -> None:
        """Assign one named secondary address (out-of-band changes)."""
        eni = self.eni(eni_id)
        value = ip_to_int(address)
        if not eni.subnet.contains(value):
            raise invalid(f"{address} is not in {eni.subnet.cidr}")
        eni.subnet.take_address(value)
        eni.ipv4[value] = None
        self._changed(eni)

    def add_prefix(self, eni_id: str, prefix: str) -> None:
        """Assign one named /28 (out-of-band changes)."""
        eni = self.eni(eni_id)
        value = prefix_to_int(prefix)
        eni.subnet.take_prefix(value)
        eni.prefixes[value] = None
        self._changed(eni)

    def set_delete_on_termination(self, eni_id: str, value: bool = True) -> None:
        """ModifyNetworkInterfaceAttribute on the attachment."""
        eni = self.eni(eni_id)
        if eni.instance_id is None:
            raise CloudError(FailureKind.OTHER, f"{eni_id} is not attached", "IncorrectState")
        eni.delete_on_termination = value

    def set_tags(self, eni_id: str, tags: Mapping[str, str]) -> None:
        self.eni(eni_id).tags.update(tags)
