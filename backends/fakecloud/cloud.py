"""FakeCloud: one in-memory AWS account with one VPC, in virtual time.

It holds subnets, instances and ENIs (:class:`backends.fakecloud.vpc.Vpc`) and hands out, per
instance, an EC2 view (:class:`FakeEc2`, a ``CloudPort``) and a metadata view
(:class:`FakeMetadata`, a ``MetadataPort``). The account-wide knobs live here:

* time: ``now`` never reads the real clock; ``advance(seconds)`` moves it (or pass
  ``clock=`` to follow a simulator's clock);
* throttling: ``throttle`` (token buckets per action, shared by every instance);
  ``throttle.enabled = False`` turns it off, ``throttle.configure(action, BucketSpec(...))``
  resizes a bucket;
* latency: ``set_latency(action, seconds)`` / ``default_latency`` / ``latency_model``; it is
  only reported (in each CallRecord and ``FakeEc2.last_latency_s``), never slept, unless
  ``sleep`` is set (e.g. ``time.sleep``: a daemon running against the fake in real time), in
  which case each action sleeps its latency, outside the lock, before it takes effect;
  :mod:`backends.fakecloud.latency` holds a realistic profile (``use_realistic_latency``);
* metadata lag: ``metadata_lag`` seconds before a change shows in the metadata view;
* faults: ``fail_next``, ``fail_when``, ``set_unreachable``, ``clear_faults``;
* out-of-band changes (no throttling, no records): ``create_detached_eni``, ``add_eni``,
  ``attach_eni``, ``detach_eni``, ``delete_eni``, ``remove_eni``, ``add_address``,
  ``remove_address``, ``add_prefix``, ``remove_prefix``, ``terminate_instance``.
"""

from __future__ import annotations

import datetime
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Concatenate, ParamSpec, TypeVar

from backends.fakecloud.buckets import Throttle
from backends.fakecloud.ec2 import FakeEc2
from backends.fakecloud.faults import (
    DEFAULT_CODES,
    CallInfo,
    FaultInjector,
    FaultPredicate,
    FaultRule,
)
from backends.fakecloud.metadata import BEGINNING, FakeMetadata, MetadataHistory, Snapshot
from backends.fakecloud.records import EniState
from backends.fakecloud.vpc import Vpc
from backends.observe import CallObserver, CallRecord
from ipamcore.errors import CloudError, FailureKind
from ipamcore.limits import InstanceLimits
from ipamcore.model import CREATED_AT_TAG, ENI_DESCRIPTION_PREFIX, INSTANCE_ID_TAG, ObservedEni

DEFAULT_START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: any fixed Unix time will do
DEFAULT_SECURITY_GROUP = "sg-00000000000000001"
UNKNOWN_TYPE_LIMITS = InstanceLimits("unknown", max_enis=1, ipv4_per_eni=50)


P = ParamSpec("P")
T = TypeVar("T")


def locked(
    method: Callable[Concatenate[FakeCloud, P], T],
) -> Callable[Concatenate[FakeCloud, P], T]:
    """Run a method under the cloud's lock (ports are called from worker threads)."""

    @functools.wraps(method)
    def wrapper(self: FakeCloud, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


def rfc3339(seconds: float) -> str:
    """Upstream's createdAt tag format (Go's time.RFC3339, UTC)."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCloud:
    """One account/VPC; see the module docstring for the knobs."""

    def __init__(
        self,
        *,
        vpc_cidrs: Iterable[str] = ("10.0.0.0/16",),
        region: str = "us-west-2",
        start: float = DEFAULT_START,
        clock: Callable[[], float] | None = None,
        throttling: bool = True,
        metadata_lag: float = 0.0,
        default_latency: float = 0.0,
        observer: CallObserver | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.lock = threading.RLock()  # one EC2 action at a time, atomically
        self.vpc = Vpc(vpc_cidrs)
        self.vpc.on_change = self._on_change
        self.region = region
        self._now = start
        self._clock = clock
        self.throttle = Throttle(enabled=throttling)
        self.faults = FaultInjector()
        self.latency: dict[str, float] = {}
        self.default_latency = default_latency
        self.latency_model: Callable[[str], float] | None = None
        self.sleep = sleep
        self.observers: list[CallObserver] = [observer] if observer is not None else []
        self.metadata_history = MetadataHistory()
        self._metadata_lag = 0.0
        self.metadata_lag = metadata_lag

    # -- time ------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual Unix time in seconds."""
        return self._clock() if self._clock is not None else self._now

    @locked
    def advance(self, seconds: float) -> float:
        """Move the virtual clock forward; returns the new time."""
        if self._clock is not None:
            raise RuntimeError("this FakeCloud follows an external clock: advance that one")
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
        return self._now

    # -- knobs -----------------------------------------------------------------------------

    @property
    def metadata_lag(self) -> float:
        return self._metadata_lag

    @metadata_lag.setter
    def metadata_lag(self, seconds: float) -> None:
        """Changing the lag restarts the history from the current state."""
        if seconds < 0:
            raise ValueError("metadata lag must be 0 or more")
        self._metadata_lag = seconds
        self.metadata_history.clear()
        if seconds > 0:
            for iid, inst in self.vpc.instances.items():
                if not inst.terminated:
                    self.metadata_history.record(iid, BEGINNING, self.metadata_snapshot(iid))

    def set_latency(self, action: str, seconds: float) -> None:
        """Latency reported for every call of ``action`` (virtual seconds, never slept)."""
        self.latency[action] = seconds

    def latency_for(self, action: str) -> float:
        if self.latency_model is not None:
            return self.latency_model(action)
        return self.latency.get(action, self.default_latency)

    def fail_next(
        self,
        action: str | None,
        kind: FailureKind,
        times: int = 1,
        code: str | None = None,
        predicate: FaultPredicate | None = None,
    ) -> FaultRule:
        """Fail the next ``times`` calls of ``action`` (any action if None) with ``kind``."""
        return self.faults.add(
            FaultRule(action, kind, DEFAULT_CODES[kind] if code is None else code, times, predicate)
        )

    def fail_when(
        self,
        predicate: FaultPredicate,
        kind: FailureKind,
        code: str | None = None,
        action: str | None = None,
    ) -> FaultRule:
        """Fail every call matching ``predicate`` until ``faults.remove(rule)``."""
        return self.faults.add(
            FaultRule(action, kind, DEFAULT_CODES[kind] if code is None else code, None, predicate)
        )

    def set_unreachable(self, unreachable: bool = True) -> None:
        """While unreachable every EC2 call fails with OTHER (``RequestTimeout``)."""
        self.faults.unreachable = unreachable

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- metering (used by FakeEc2) ----------------------------------------------------------

    def gate(self, action: str, instance_id: str, target: str) -> None:
        """Injected faults, then throttling: raise CloudError or let the call proceed."""
        if self.faults.active:
            self.faults.check(CallInfo(action, instance_id, target, self.now))
        if self.throttle.enabled:
            self.throttle.check(action, self.now)

    def emit(self, record: CallRecord) -> None:
        for observer in self.observers:
            observer(record)

    # -- setup -------------------------------------------------------------------------------

    @locked
    def add_subnet(
        self,
        cidr: str,
        az: str = "us-west-2a",
        tags: Mapping[str, str] | None = None,
        ipv6_cidr: str = "",
    ) -> str:
        """A subnet inside the VPC's CIDRs (no overlaps); returns its id."""
        return self.vpc.add_subnet(cidr, az, tags, ipv6_cidr)

    def add_instance_type(self, limits: InstanceLimits) -> None:
        """Teach DescribeInstanceTypes (and launch_instance) a type missing from the table."""
        self.vpc.custom_types[limits.instance_type] = limits

    @locked
    def launch_instance(
        self,
        instance_type: str,
        subnet_id: str,
        security_groups: Iterable[str] = (DEFAULT_SECURITY_GROUP,),
    ) -> str:
        """A running instance with its primary ENI (device 0, primary IP) in ``subnet_id``."""
        inst = self.vpc.add_instance(instance_type, subnet_id)
        iid = inst.instance_id
        eni = self.vpc.create_eni(
            subnet_id, tuple(security_groups), {}, "Primary network interface", self.now,
            inst.limits,
        )  # fmt: skip
        eni.is_primary = True
        eni.delete_on_termination = True
        inst.primary_eni_id = eni.eni_id
        inst.primary_mac = eni.mac
        self.vpc.attach(eni.eni_id, iid, 0)
        if self._metadata_lag > 0:
            self.metadata_history.record(iid, BEGINNING, self.metadata_snapshot(iid))
        return iid

    @locked
    def terminate_instance(self, instance_id: str) -> None:
        """ENIs with DeleteOnTermination go; others are detached and left available."""
        self.vpc.terminate(instance_id)

    def port(
        self,
        instance_id: str,
        observer: CallObserver | None = None,
        *,
        cluster_name: str = "",
        delete_on_termination: bool = True,
    ) -> FakeEc2:
        """The EC2 view for one instance's agent; ``observer`` hears only its calls;
        ``cluster_name`` and ``delete_on_termination`` as the agent is configured."""
        self.vpc.instance(instance_id)
        return FakeEc2(
            self, instance_id, observer, cluster_name=cluster_name,
            delete_on_termination=delete_on_termination,
        )  # fmt: skip

    def metadata(self, instance_id: str) -> FakeMetadata:
        self.vpc.instance(instance_id)
        return FakeMetadata(self, instance_id)

    # -- ground truth ------------------------------------------------------------------------

    @locked
    def eni(self, eni_id: str) -> ObservedEni:
        """An ENI as it is right now (attached or not); NOT_FOUND if it does not exist."""
        return self.vpc.eni(eni_id).observe()

    @locked
    def eni_status(self, eni_id: str) -> str:
        return self.vpc.eni(eni_id).status

    @locked
    def enis_of(self, instance_id: str) -> list[ObservedEni]:
        return [e.observe() for e in self.vpc.attached_enis(instance_id)]

    @locked
    def free_addresses(self, subnet_id: str) -> int:
        return self.vpc.subnet(subnet_id).free_count

    @locked
    def metadata_snapshot(self, instance_id: str) -> Snapshot:
        """What IMDS would show with no lag."""
        inst = self.vpc.instances[instance_id]
        if inst.terminated:
            return ()
        enis = self.vpc.enis
        return tuple(enis[inst.devices[i]].observe(False) for i in sorted(inst.devices))

    def _on_change(self, instance_id: str) -> None:
        if self._metadata_lag > 0:
            self.metadata_history.record(instance_id, self.now, self.metadata_snapshot(instance_id))

    # -- out-of-band changes -----------------------------------------------------------------

    def agent_tags(self, instance_id: str, tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """The tags the agent puts on ENIs it creates for ``instance_id`` (at ``now``)."""
        out = dict(tags or {})
        out[INSTANCE_ID_TAG] = instance_id
        out[CREATED_AT_TAG] = rfc3339(self.now)
        return out

    def create_eni_record(
        self,
        instance_id: str,
        subnet_id: str = "",
        security_groups: Iterable[str] = (),
        ipv4_count: int = 0,
        prefix_count: int = 0,
        ipv6_prefix: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> EniState:
        """CreateNetworkInterface as the agent issues it, unmetered (shared by FakeEc2)."""
        inst = self.vpc.instance(instance_id)
        primary = self.vpc.enis[inst.primary_eni_id]
        return self.vpc.create_eni(
            subnet_id or inst.subnet_id,
            tuple(security_groups) or primary.security_groups,
            self.agent_tags(instance_id, tags),
            ENI_DESCRIPTION_PREFIX + instance_id,
            self.now,
            inst.limits,
            ipv4_count,
            prefix_count,
            ipv6_prefix,
        )

    @locked
    def create_detached_eni(
        self, instance_id: str, subnet_id: str = "", ipv4_count: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> str:  # fmt: skip
        """An agent-tagged ENI never attached: the agent crashed between create and attach.

        ``instance_id`` may name an instance this account does not run (then ``subnet_id``
        is required): the ENI only carries its tags.
        """
        inst = self.vpc.instances.get(instance_id)
        if inst is not None and not inst.terminated:
            return self.create_eni_record(instance_id, subnet_id, (), ipv4_count, tags=tags).eni_id
        return self.vpc.create_eni(
            subnet_id, (DEFAULT_SECURITY_GROUP,), self.agent_tags(instance_id, tags),
            ENI_DESCRIPTION_PREFIX + instance_id, self.now, UNKNOWN_TYPE_LIMITS, ipv4_count,
        ).eni_id  # fmt: skip

    @locked
    def add_eni(
        self,
        instance_id: str,
        subnet_id: str = "",
        device_index: int | None = None,
        ipv4_count: int = 0,
        tags: Mapping[str, str] | None = None,
        network_card: int = 0,
        interface_type: str = "interface",
    ) -> str:
        """An ENI created and attached behind the agent's back (e.g. tagged no_manage, on
        another network card, or an ``efa-only`` interface as p5 launch templates attach on
        every card: it takes a device index and a place in the card's ENI limit, no address)."""
        eni = self.vpc.create_eni(
            subnet_id or self.vpc.instance(instance_id).subnet_id,
            (DEFAULT_SECURITY_GROUP,), dict(tags or {}), "out of band", self.now,
            self.vpc.instance(instance_id).limits, ipv4_count, interface_type=interface_type,
        )  # fmt: skip
        index = self.vpc.instance(instance_id).lowest_free_device_index(network_card)
        try:
            self.vpc.attach(
                eni.eni_id, instance_id, index if device_index is None else device_index,
                network_card,
            )  # fmt: skip
        except CloudError:
            self.vpc.delete(eni.eni_id)
            raise
        return eni.eni_id

    @locked
    def attach_eni(
        self, eni_id: str, instance_id: str, device_index: int, network_card: int = 0
    ) -> None:
        self.vpc.attach(eni_id, instance_id, device_index, network_card)

    @locked
    def detach_eni(self, eni_id: str) -> None:
        self.vpc.detach(eni_id)

    @locked
    def delete_eni(self, eni_id: str) -> None:
        """Delete an available ENI (an attached one raises InvalidNetworkInterface.InUse)."""
        self.vpc.delete(eni_id)

    @locked
    def remove_eni(self, eni_id: str) -> None:
        """Detach (if attached) and delete, behind the agent's back."""
        eni = self.vpc.eni(eni_id)
        if eni.instance_id is not None:
            self.vpc.detach(eni_id)
        self.vpc.delete(eni_id)

    @locked
    def add_address(self, eni_id: str, address: str) -> None:
        self.vpc.add_address(eni_id, address)

    @locked
    def remove_address(self, eni_id: str, address: str) -> None:
        self.vpc.unassign_ipv4(eni_id, [address])

    @locked
    def add_prefix(self, eni_id: str, prefix: str) -> None:
        self.vpc.add_prefix(eni_id, prefix)

    @locked
    def remove_prefix(self, eni_id: str, prefix: str) -> None:
        self.vpc.unassign_prefixes(eni_id, [prefix])

    @locked
    def set_eni_tags(self, eni_id: str, tags: Mapping[str, str]) -> None:
        self.vpc.set_tags(eni_id, tags)
