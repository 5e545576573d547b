"""The EC2 CloudPort over boto3: ENIs, secondary IPs, prefixes, subnets, instance types.

Every botocore failure leaves this module as :class:`ipamcore.errors.CloudError` (see
:mod:`backends.aws.errors`). Throttling and transient errors are retried by botocore's retry
mode (:class:`backends.aws.client.Ec2Config`); the loops here handle what botocore cannot:
a device-index race on attach, waiting for a detached ENI to become available, and an ENI
that is still in use when deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import boto3  # type: ignore[import-untyped]

from backends.aws.client import Ec2Config, install_observer, make_ec2_client
from backends.aws.convert import (
    eni_from_ec2,
    limits_from_ec2,
    newly_assigned,
    parse_rfc3339,
    rfc3339,
    subnet_from_ec2,
    tag_list,
)
from backends.aws.errors import translated
from backends.observe import CallObserver
from backends.steps import Step, no_step
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.limits import InstanceLimits
from ipamcore.model import (
    CLUSTER_NAME_TAG,
    CREATED_AT_TAG,
    ENI_DESCRIPTION_PREFIX,
    INSTANCE_ID_TAG,
    ObservedEni,
    Subnet,
)

LEAK_AGE_S = 300.0  # an available ENI of ours older than this was leaked (upstream: 5 min)


def is_device_index_conflict(err: CloudError) -> bool:
    """Whether an attach failed because another ENI took the device index meanwhile."""
    if err.code not in ("InvalidParameterValue", "InvalidParameterCombination"):
        return False
    text = err.message.lower()
    return "device index" in text or "in use" in text or "already has an interface" in text


class Ec2Backend:
    """CloudPort over a boto3 EC2 client (sync; run it in worker threads from asyncio).

    ``observer`` receives a CallRecord per HTTP attempt. ``clock`` gives Unix seconds for
    the createdAt tag; ``sleep`` is used between polls/retries of the loops here (inject a
    fake in tests). ``client`` overrides the client built from ``config`` (e.g. one with a
    Stubber); ``session`` supplies credentials for the built one. ``step`` is called after
    each step of :meth:`create_eni` (:data:`backends.steps.ENI_STEPS`).
    """

    def __init__(
        self,
        config: Ec2Config | None = None,
        *,
        observer: CallObserver | None = None,
        session: boto3.Session | None = None,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        attach_attempts: int = 5,
        detach_polls: int = 20,
        poll_interval_s: float = 0.5,
        delete_attempts: int = 5,
        step: Step = no_step,
    ) -> None:
        self.config = config or Ec2Config()
        with translated():
            self.client = client if client is not None else make_ec2_client(self.config, session)
        if observer is not None:
            install_observer(self.client, observer)
        self._clock = clock
        self._sleep = sleep
        self._attach_attempts = attach_attempts
        self._detach_polls = detach_polls
        self._poll_interval_s = poll_interval_s
        self._delete_attempts = delete_attempts
        self._step = step
        self._subnet_cidrs: dict[str, str] = {}
        self._vpc_id = ""
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        with translated():
            result: dict[str, Any] = getattr(self.client, operation)(**params)
            return result

    def _pages(self, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        with translated():
            for page in self.client.get_paginator(operation).paginate(**params):
                yield from page.get(key, ())

    def _enis_raw(self, **params: Any) -> list[dict[str, Any]]:
        return list(self._pages("describe_network_interfaces", "NetworkInterfaces", **params))

    def _attached_raw(self, instance_id: str) -> list[dict[str, Any]]:
        flt = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
        return self._enis_raw(Filters=flt)

    def _subnet_cidr(self, subnet_id: str) -> str:
        with self._lock:
            cidr = self._subnet_cidrs.get(subnet_id)
        if cidr is None:
            self.describe_subnets([subnet_id])
            with self._lock:
                cidr = self._subnet_cidrs.get(subnet_id, "")
        return cidr

    def _prefetch_subnets(self, raw_enis: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            missing = {str(e["SubnetId"]) for e in raw_enis if e.get("SubnetId")}
            missing -= self._subnet_cidrs.keys()
        if missing:
            self.describe_subnets(sorted(missing))

    # -- CloudPort --------------------------------------------------------------------------

    def describe_enis(self, instance_id: str) -> list[ObservedEni]:
        raw = self._attached_raw(instance_id)
        self._prefetch_subnets(raw)
        enis = [eni_from_ec2(r, self._subnet_cidr) for r in raw]
        return sorted(enis, key=lambda e: (e.network_card, e.device_index))

    def describe_subnets(self, subnet_ids: Sequence[str] = (), tag_key: str = "") -> list[Subnet]:
        """By ids; else every subnet carrying ``tag_key``; else every subnet. Caches CIDRs."""
        params: dict[str, Any] = {}
        if subnet_ids:
            params["SubnetIds"] = list(subnet_ids)
        elif tag_key:
            params["Filters"] = [{"Name": "tag-key", "Values": [tag_key]}]
        subnets = [subnet_from_ec2(s) for s in self._pages("describe_subnets", "Subnets", **params)]
        with self._lock:
            self._subnet_cidrs.update((s.subnet_id, s.cidr) for s in subnets)
        return subnets

    def eni_tags(self, instance_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The tags a new ENI gets: upstream's instance/createdAt/cluster tags plus extras."""
        tags = dict(self.config.extra_tags)
        tags.update(extra or {})
        tags[INSTANCE_ID_TAG] = instance_id
        tags[CREATED_AT_TAG] = rfc3339(self._clock())
        if self.config.cluster_name:
            tags[CLUSTER_NAME_TAG] = self.config.cluster_name
        return tags

    def create_eni(
        self, instance_id: str, effect: CreateEni, tags: Mapping[str, str] | None = None
    ) -> ObservedEni:
        all_tags = self.eni_tags(instance_id, tags)
        params: dict[str, Any] = {
            "SubnetId": effect.subnet_id,
            "Description": f"{ENI_DESCRIPTION_PREFIX}{instance_id}",
            "TagSpecifications": [
                {"ResourceType": "network-interface", "Tags": tag_list(all_tags)}
            ],
        }
        if effect.security_groups:
            params["Groups"] = list(effect.security_groups)
        if effect.ipv4_count > 0:
            params["SecondaryPrivateIpAddressCount"] = effect.ipv4_count
        if effect.prefix_count > 0:
            params["Ipv4PrefixCount"] = effect.prefix_count
        if effect.ipv6_prefix:
            params["Ipv6PrefixCount"] = 1
        raw = dict(self._call("create_network_interface", **params)["NetworkInterface"])
        raw.setdefault("TagSet", tag_list(all_tags))
        eni_id = str(raw["NetworkInterfaceId"])
        self._step("eni.created")
        try:
            attachment_id, device_index = self._attach(
                instance_id, eni_id, effect.device_index, effect.network_card
            )
        except CloudError:
            self._delete_quietly(eni_id)
            raise
        self._step("eni.attached")
        if self.config.delete_on_termination:
            self._set_delete_on_termination(eni_id, attachment_id)
        self._step("eni.configured")
        return eni_from_ec2(
            raw, self._subnet_cidr, device_index=device_index, network_card=effect.network_card
        )

    def _set_delete_on_termination(self, eni_id: str, attachment_id: str) -> None:
        """ModifyNetworkInterfaceAttribute; on failure free the ENI and raise."""
        try:
            self._call(
                "modify_network_interface_attribute",
                NetworkInterfaceId=eni_id,
                Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
            )
        except CloudError:
            try:
                self.free_eni(eni_id)
            except CloudError:
                pass  # leaked-ENI collection will find it
            raise

    def _used_device_indexes(self, instance_id: str, network_card: int = 0) -> set[int]:
        used = set()
        for raw in self._attached_raw(instance_id):
            att = raw.get("Attachment") or {}
            if int(att.get("NetworkCardIndex", 0) or 0) == network_card:
                used.add(int(att.get("DeviceIndex", 0)))
        return used

    def _attach(
        self, instance_id: str, eni_id: str, preferred: int = -1, network_card: int = 0
    ) -> tuple[str, int]:
        """Attach on ``network_card`` at ``preferred`` (no describe first; -1: none) or else
        the lowest free device index of that card (>= 1); on a race, re-describe and retry.
        ``NetworkCardIndex`` is sent only for a card above 0 (EC2's default is 0)."""
        last: CloudError | None = None
        taken: set[int] = set()
        for attempt in range(self._attach_attempts):
            if attempt == 0 and preferred >= 0:
                index = preferred
            else:
                taken |= self._used_device_indexes(instance_id, network_card)
                index = 1
                while index in taken:
                    index += 1
            card = {"NetworkCardIndex": network_card} if network_card else {}
            try:
                result = self._call(
                    "attach_network_interface",
                    NetworkInterfaceId=eni_id,
                    InstanceId=instance_id,
                    DeviceIndex=index,
                    **card,
                )
                return str(result["AttachmentId"]), index
            except CloudError as err:
                if not is_device_index_conflict(err):
                    raise
                last = err
                taken.add(index)  # and re-describe: someone else attached meanwhile
        assert last is not None
        raise CloudError(last.kind, f"no free device index: {last.message}", last.code)

    def _delete_quietly(self, eni_id: str) -> None:
        try:
            self._delete(eni_id)
        except CloudError:
            pass  # leaked-ENI collection will find it

    def assign_ipv4(self, eni_id: str, count: int) -> tuple[str, ...]:
        if count <= 0:
            return ()
        result = self._call(
            "assign_private_ip_addresses",
            NetworkInterfaceId=eni_id,
            SecondaryPrivateIpAddressCount=count,
        )
        listed = [str(a["PrivateIpAddress"]) for a in result.get("AssignedPrivateIpAddresses", ())]
        return newly_assigned(listed, count)

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        if count <= 0:
            return ()
        result = self._call(
            "assign_private_ip_addresses", NetworkInterfaceId=eni_id, Ipv4PrefixCount=count
        )
        listed = [str(p["Ipv4Prefix"]) for p in result.get("AssignedIpv4Prefixes", ())]
        return newly_assigned(listed, count)

    def assign_ipv6_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        """AssignIpv6Addresses with Ipv6PrefixCount (upstream's AllocIPv6Prefixes)."""
        if count <= 0:
            return ()
        result = self._call(
            "assign_ipv6_addresses", NetworkInterfaceId=eni_id, Ipv6PrefixCount=count
        )
        listed = newly_assigned([str(p) for p in result.get("AssignedIpv6Prefixes", ())], count)
        if len(listed) < count:  # never a success without the prefix asked for
            raise CloudError(
                FailureKind.OTHER,
                f"AssignIpv6Addresses on {eni_id} returned {len(listed)} of {count} prefixes",
            )
        return listed

    def unassign_ipv4(self, eni_id: str, addresses: Sequence[str]) -> None:
        if addresses:
            self._call(
                "unassign_private_ip_addresses",
                NetworkInterfaceId=eni_id,
                PrivateIpAddresses=list(addresses),
            )

    def unassign_prefixes(self, eni_id: str, prefixes: Sequence[str]) -> None:
        if prefixes:
            self._call(
                "unassign_private_ip_addresses",
                NetworkInterfaceId=eni_id,
                Ipv4Prefixes=list(prefixes),
            )

    def _describe_one(self, eni_id: str) -> dict[str, Any] | None:
        try:
            found = self._enis_raw(NetworkInterfaceIds=[eni_id])
        except CloudError as err:
            if err.kind is FailureKind.NOT_FOUND:
                return None
            raise
        return found[0] if found else None

    def free_eni(self, eni_id: str) -> None:
        """Detach if attached, poll until available (bounded), delete (retried).

        An ENI unknown at the start is NOT_FOUND; one that vanishes midway counts as freed.
        """
        raw = self._describe_one(eni_id)
        if raw is None:
            raise CloudError(
                FailureKind.NOT_FOUND,
                f"network interface {eni_id} does not exist",
                "InvalidNetworkInterfaceID.NotFound",
            )
        attachment = raw.get("Attachment") or {}
        if attachment.get("AttachmentId") and raw.get("Status") != "available":
            try:
                self._call("detach_network_interface", AttachmentId=attachment["AttachmentId"])
            except CloudError as err:
                if err.kind is not FailureKind.NOT_FOUND:
                    raise
            for poll in range(self._detach_polls):
                raw = self._describe_one(eni_id)
                if raw is None:
                    return
                if raw.get("Status") == "available":
                    break
                self._sleep(self._poll_interval_s * min(2**poll, 8))
        self._delete(eni_id)

    def _delete(self, eni_id: str) -> None:
        last: CloudError | None = None
        for attempt in range(self._delete_attempts):
            try:
                self._call("delete_network_interface", NetworkInterfaceId=eni_id)
                return
            except CloudError as err:
                if err.kind is FailureKind.NOT_FOUND:
                    return
                last = err
            if attempt + 1 < self._delete_attempts:
                self._sleep(self._poll_interval_s * min(2**attempt, 8))
        assert last is not None
        raise last

    def _vpc_of(self, instance_id: str) -> str:
        """The VPC of ``instance_id`` (from its attached ENIs; cached), "" if none shows."""
        with self._lock:
            if self._vpc_id:
                return self._vpc_id
        for raw in self._attached_raw(instance_id):
            if raw.get("VpcId"):
                with self._lock:
                    self._vpc_id = str(raw["VpcId"])
                return self._vpc_id
        return ""

    def _leak_filters(self, instance_id: str, any_instance: bool) -> list[dict[str, Any]]:
        """This instance's tag; or, with ``any_instance``, upstream's (awsutils
        getLeakedENIs): our instance-id tag on any instance, this VPC, this cluster if named."""
        available = {"Name": "status", "Values": ["available"]}
        if not any_instance:
            return [{"Name": f"tag:{INSTANCE_ID_TAG}", "Values": [instance_id]}, available]
        vpc_id = self._vpc_of(instance_id)
        if not vpc_id:  # never wider than the node's VPC: without it, the node's own ENIs
            return [{"Name": f"tag:{INSTANCE_ID_TAG}", "Values": [instance_id]}, available]
        filters = [
            {"Name": "tag-key", "Values": [INSTANCE_ID_TAG]},
            available,
            {"Name": "vpc-id", "Values": [vpc_id]},
        ]
        if self.config.cluster_name:
            filters.append(
                {"Name": f"tag:{CLUSTER_NAME_TAG}", "Values": [self.config.cluster_name]}
            )
        return filters

    def find_leaked_enis(
        self,
        instance_id: str,
        now: float,
        any_instance: bool = False,
        min_age_s: float | None = LEAK_AGE_S,
    ) -> list[str]:
        """Available ENIs tagged for this instance (or, with ``any_instance``, for any
        instance of this VPC and cluster) whose createdAt is over ``min_age_s`` old (``None``:
        any age).

        An ENI without a (parsable) createdAt tag gets one stamped ``now`` and is reported
        on a later pass, as upstream does.
        """
        filters = self._leak_filters(instance_id, any_instance)
        leaked: list[str] = []
        for raw in self._enis_raw(Filters=filters):
            eni_id = str(raw["NetworkInterfaceId"])
            tags = {str(t["Key"]): str(t.get("Value", "")) for t in raw.get("TagSet", ())}
            if INSTANCE_ID_TAG not in tags:
                continue  # the filters exclude it already; never widen the scope
            created = parse_rfc3339(tags.get(CREATED_AT_TAG, ""))
            if created is None:
                self._call(
                    "create_tags",
                    Resources=[eni_id],
                    Tags=[{"Key": CREATED_AT_TAG, "Value": rfc3339(now)}],
                )
            elif min_age_s is None or now - created > min_age_s:
                leaked.append(eni_id)
        return sorted(leaked)

    def describe_instance_type(self, instance_type: str) -> InstanceLimits:
        found = self._call("describe_instance_types", InstanceTypes=[instance_type])
        types = found.get("InstanceTypes", [])
        if not types:
            raise CloudError(
                FailureKind.NOT_FOUND, f"unknown instance type {instance_type!r}", "NotFound"
            )
        return limits_from_ec2(types[0])
