"""FakeEc2: the EC2 view of a :class:`FakeCloud` for one instance's agent (a ``CloudPort``).

Each port method performs the EC2 actions a real backend would (create_eni is
DescribeInstances + CreateNetworkInterface + AttachNetworkInterface +
ModifyNetworkInterfaceAttribute, the last one skipped when the port was made with
``delete_on_termination=False``; free_eni is DescribeNetworkInterfaces +
DetachNetworkInterface + DeleteNetworkInterface), and each action is gated (faults,
throttling), given its latency and reported as one :class:`CallRecord`.
``last_latency_s`` sums the latencies of the last port method's actions, so a caller can
schedule its outcome at ``now + last_latency_s`` (the simulator); with ``FakeCloud.sleep`` set
(a daemon against the fake, e.g. ``benchmarks/burst.py``) each action first sleeps its latency,
outside every lock, and then takes effect, so calls in parallel overlap as they do on EC2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from backends.fakecloud.addresses import int_to_ip
from backends.observe import CallObserver, CallRecord
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError
from ipamcore.limits import InstanceLimits
from ipamcore.model import CLUSTER_NAME_TAG, ObservedEni, Subnet

if TYPE_CHECKING:
    from backends.fakecloud.cloud import FakeCloud

P = ParamSpec("P")
T = TypeVar("T")


class FakeEc2:
    """A ``CloudPort`` over a FakeCloud; ``observer`` hears this port's calls (the cloud's
    observers hear every port's). Like the boto3 backend's ``Ec2Config``, ``cluster_name``
    tags new ENIs and scopes the any-instance leak search, and ``delete_on_termination``
    says whether create_eni sets DeleteOnTermination."""

    def __init__(
        self,
        cloud: FakeCloud,
        instance_id: str,
        observer: CallObserver | None = None,
        *,
        cluster_name: str = "",
        delete_on_termination: bool = True,
    ) -> None:
        self._cloud = cloud
        self.instance_id = instance_id
        self.observer = observer
        self.cluster_name = cluster_name
        self.delete_on_termination = delete_on_termination
        self.last_latency_s = 0.0

    def _call(
        self, action: str, target: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        cloud = self._cloud
        latency = cloud.latency_for(action)
        self.last_latency_s += latency
        if cloud.sleep is not None and latency > 0:
            cloud.sleep(latency)
        try:
            with cloud.lock:
                cloud.gate(action, self.instance_id, target)
                result = fn(*args, **kwargs)
        except CloudError as err:
            self._emit(CallRecord(action, latency, err.kind.value, err.code, target))
            raise
        if self.observer is not None or cloud.observers:
            self._emit(CallRecord(action, latency, target=target))
        return result

    def _emit(self, record: CallRecord) -> None:
        if self.observer is not None:
            self.observer(record)
        self._cloud.emit(record)

    # -- describes ---------------------------------------------------------------------------

    def describe_enis(self, instance_id: str) -> list[ObservedEni]:
        self.last_latency_s = 0.0
        enis = self._call(
            "DescribeNetworkInterfaces", instance_id, self._cloud.vpc.attached_enis, instance_id
        )
        return [e.observe() for e in enis]

    def describe_subnets(self, subnet_ids: Sequence[str] = (), tag_key: str = "") -> list[Subnet]:
        self.last_latency_s = 0.0
        return self._call(
            "DescribeSubnets", ",".join(subnet_ids), self._subnets, subnet_ids, tag_key
        )

    def _subnets(self, subnet_ids: Sequence[str], tag_key: str) -> list[Subnet]:
        vpc = self._cloud.vpc
        if subnet_ids:
            return [vpc.subnet(s).describe() for s in subnet_ids]
        return [
            s.describe()
            for _sid, s in sorted(vpc.subnets.items())
            if not tag_key or tag_key in s.tags
        ]

    def describe_instance_type(self, instance_type: str) -> InstanceLimits:
        self.last_latency_s = 0.0
        return self._call(
            "DescribeInstanceTypes", self.instance_id, self._cloud.vpc.instance_type, instance_type
        )

    def find_leaked_enis(
        self,
        instance_id: str,
        now: float,
        any_instance: bool = False,
        min_age_s: float | None = 300.0,
    ) -> list[str]:
        self.last_latency_s = 0.0
        return self._call(
            "DescribeNetworkInterfaces", instance_id, self._cloud.vpc.leaked_enis,
            instance_id if not any_instance else None, now, self.cluster_name, min_age_s,
        )  # fmt: skip

    # -- ENI lifecycle -----------------------------------------------------------------------

    def create_eni(
        self, instance_id: str, effect: CreateEni, tags: Mapping[str, str] | None = None
    ) -> ObservedEni:
        """Create, attach at ``device_index`` (0: the lowest free index), set
        DeleteOnTermination (unless built without); undo on failure.

        Like a real backend, with no ``device_index`` it comes from a describe before the
        create, and a failed attach is only discovered after the ENI exists: the ENI is then
        deleted (and leaks if that delete fails too, which is how leaked ENIs come to be).
        """
        self.last_latency_s = 0.0
        cloud, vpc = self._cloud, self._cloud.vpc
        index, card = effect.device_index, effect.network_card
        if index < 0:
            inst = self._call("DescribeInstances", instance_id, vpc.instance, instance_id)
            index = inst.lowest_free_device_index(card, start=1)
        all_tags = dict(tags or {})
        if self.cluster_name:
            all_tags[CLUSTER_NAME_TAG] = self.cluster_name
        eni = self._call(
            "CreateNetworkInterface",
            effect.subnet_id,
            cloud.create_eni_record,
            instance_id,
            effect.subnet_id,
            effect.security_groups,
            effect.ipv4_count,
            effect.prefix_count,
            effect.ipv6_prefix,
            all_tags,
        )
        try:
            self._call(
                "AttachNetworkInterface",
                eni.eni_id,
                vpc.attach,
                eni.eni_id,
                instance_id,
                index,
                card,
            )
        except CloudError:
            self._undo(eni.eni_id, attached=False)
            raise
        if not self.delete_on_termination:
            return eni.observe()
        try:
            self._call(
                "ModifyNetworkInterfaceAttribute",
                eni.eni_id,
                vpc.set_delete_on_termination,
                eni.eni_id,
            )
        except CloudError:
            self._undo(eni.eni_id, attached=True)
            raise
        return eni.observe()

    def _undo(self, eni_id: str, attached: bool) -> None:
        """Best-effort cleanup after a failed create; its own failures are swallowed."""
        vpc = self._cloud.vpc
        try:
            if attached:
                self._call("DetachNetworkInterface", eni_id, vpc.detach, eni_id)
            self._call("DeleteNetworkInterface", eni_id, vpc.delete, eni_id)
        except CloudError:
            pass

    def free_eni(self, eni_id: str) -> None:
        self.last_latency_s = 0.0
        vpc = self._cloud.vpc
        eni = self._call("DescribeNetworkInterfaces", eni_id, vpc.eni, eni_id)
        if eni.instance_id is not None:
            self._call("DetachNetworkInterface", eni_id, vpc.detach, eni_id)
        self._call("DeleteNetworkInterface", eni_id, vpc.delete, eni_id)

    # -- addresses ---------------------------------------------------------------------------

    def assign_ipv4(self, eni_id: str, count: int) -> tuple[str, ...]:
        self.last_latency_s = 0.0
        taken = self._call(
            "AssignPrivateIpAddresses", eni_id, self._cloud.vpc.assign_ipv4, eni_id, count
        )
        return tuple(map(int_to_ip, taken))

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        self.last_latency_s = 0.0
        taken = self._call(
            "AssignPrivateIpAddresses", eni_id, self._cloud.vpc.assign_prefixes, eni_id, count
        )
        return tuple(f"{int_to_ip(p)}/28" for p in taken)

    def assign_ipv6_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        self.last_latency_s = 0.0
        return tuple(
            self._call(
                "AssignIpv6Addresses", eni_id, self._cloud.vpc.assign_ipv6_prefixes, eni_id, count
            )
        )

    def unassign_ipv4(self, eni_id: str, addresses: Sequence[str]) -> None:
        self.last_latency_s = 0.0
        if addresses:
            self._call(
                "UnassignPrivateIpAddresses",
                eni_id,
                self._cloud.vpc.unassign_ipv4,
                eni_id,
                addresses,
            )

    def unassign_prefixes(self, eni_id: str, prefixes: Sequence[str]) -> None:
        self.last_latency_s = 0.0
        if prefixes:
            self._call(
                "UnassignPrivateIpAddresses",
                eni_id,
                self._cloud.vpc.unassign_prefixes,
                eni_id,
                prefixes,
            )
