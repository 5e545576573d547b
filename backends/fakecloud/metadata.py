"""The instance metadata (IMDS) view of one instance, eventually consistent.

IMDS lags EC2: a secondary address or a new ENI shows in metadata some time after the API
call returned (upstream issues #3019 and #1967). The fake models this with a per-instance
history of snapshots, recorded at each change while a lag is configured; a read at ``now``
answers the newest snapshot taken at or before ``now - lag``. With no lag reads are live and
nothing is recorded (the hot path stays cheap). Metadata carries no tags, like IMDS.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

from ipamcore.model import InstanceIdentity, ObservedEni

if TYPE_CHECKING:
    from backends.fakecloud.cloud import FakeCloud

Snapshot = tuple[ObservedEni, ...]


class MetadataHistory:
    """Snapshots of each instance's attached ENIs, by the virtual time they were taken."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._snapshots: dict[str, list[Snapshot]] = {}

    def clear(self) -> None:
        self._times.clear()
        self._snapshots.clear()

    def record(self, instance_id: str, at: float, snapshot: Snapshot) -> None:
        times = self._times.setdefault(instance_id, [])
        snaps = self._snapshots.setdefault(instance_id, [])
        if times and times[-1] == at:
            snaps[-1] = snapshot  # several changes in one instant: keep the last state
            return
        times.append(at)
        snaps.append(snapshot)

    def view(self, instance_id: str, at: float) -> Snapshot | None:
        """The newest snapshot taken at or before ``at`` (None: nothing recorded yet).

        Older snapshots are dropped as they can no longer be read (reads move forward).
        """
        times = self._times.get(instance_id)
        if not times:
            return None
        index = bisect.bisect_right(times, at) - 1
        if index < 0:
            index = 0  # before the first record: the oldest state known
        snaps = self._snapshots[instance_id]
        if index > 0:
            del times[:index]
            del snaps[:index]
        return snaps[0]


BEGINNING = -math.inf


class FakeMetadata:
    """A :class:`ipamcore.ports.MetadataPort` for one instance of a :class:`FakeCloud`."""

    def __init__(self, cloud: FakeCloud, instance_id: str) -> None:
        self._cloud = cloud
        self.instance_id = instance_id

    def identity(self) -> InstanceIdentity:
        cloud = self._cloud
        with cloud.lock:
            inst = cloud.vpc.instances[self.instance_id]
            v6 = cloud.vpc.subnets[inst.subnet_id].ipv6_network
        return InstanceIdentity(
            instance_id=inst.instance_id,
            instance_type=inst.limits.instance_type,
            availability_zone=inst.availability_zone,
            primary_mac=inst.primary_mac,
            vpc_cidrs=tuple(str(c) for c in cloud.vpc.cidrs),
            region=cloud.region,
            subnet_ipv6_cidrs=(str(v6),) if v6 is not None else (),
            ipv6_address=str(v6.network_address + 0xA) if v6 is not None else "",
        )

    def enis(self) -> list[ObservedEni]:
        """Attached ENIs by device index, as of ``metadata_lag`` seconds ago."""
        cloud = self._cloud
        with cloud.lock:
            if cloud.metadata_lag > 0:
                at = cloud.now - cloud.metadata_lag
                snapshot = cloud.metadata_history.view(self.instance_id, at)
                if snapshot is not None:
                    return list(snapshot)
            return list(cloud.metadata_snapshot(self.instance_id))
