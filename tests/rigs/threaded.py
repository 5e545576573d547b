"""Asyncio wrappers running the synchronous cloud and metadata ports in worker threads.

The ports are synchronous (boto3 and urllib block); the daemon awaits these wrappers so a
slow EC2 call never stalls its event loop. Each call runs via ``asyncio.to_thread``; the
wrapped port must be thread-safe (boto3 clients are, and so are the backends here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from ipamcore.limits import InstanceLimits
from ipamcore.model import InstanceIdentity, ObservedEni, Subnet
from ipamcore.ports import CloudPort, MetadataPort


class AsyncCloud:
    """Awaitable CloudPort: every method runs the wrapped port's method in a thread."""

    def __init__(self, cloud: CloudPort) -> None:
        self.cloud = cloud

    async def describe_enis(self, instance_id: str) -> list[ObservedEni]:
        return await asyncio.to_thread(self.cloud.describe_enis, instance_id)

    async def describe_subnets(
        self, subnet_ids: Sequence[str] = (), tag_key: str = ""
    ) -> list[Subnet]:
        return await asyncio.to_thread(self.cloud.describe_subnets, subnet_ids, tag_key)

    async def create_eni(
        self,
        instance_id: str,
        subnet_id: str,
        security_groups: Sequence[str],
        ipv4_count: int = 0,
        prefix_count: int = 0,
        ipv6_prefix: bool = False,
        tags: Mapping[str, str] | None = None,
        device_index: int = 0,
    ) -> ObservedEni:
        return await asyncio.to_thread(
            self.cloud.create_eni,
            instance_id,
            subnet_id,
            security_groups,
            ipv4_count,
            prefix_count,
            ipv6_prefix,
            tags,
            device_index,
        )

    async def assign_ipv4(self, eni_id: str, count: int) -> tuple[str, ...]:
        return await asyncio.to_thread(self.cloud.assign_ipv4, eni_id, count)

    async def assign_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        return await asyncio.to_thread(self.cloud.assign_prefixes, eni_id, count)

    async def unassign_ipv4(self, eni_id: str, addresses: Sequence[str]) -> None:
        await asyncio.to_thread(self.cloud.unassign_ipv4, eni_id, addresses)

    async def unassign_prefixes(self, eni_id: str, prefixes: Sequence[str]) -> None:
        await asyncio.to_thread(self.cloud.unassign_prefixes, eni_id, prefixes)

    async def free_eni(self, eni_id: str) -> None:
        await asyncio.to_thread(self.cloud.free_eni, eni_id)

    async def find_leaked_enis(
        self, instance_id: str, now: float, any_instance: bool = False
    ) -> list[str]:
        return await asyncio.to_thread(
            self.cloud.find_leaked_enis, instance_id, now, any_instance
        )

    async def describe_instance_type(self, instance_type: str) -> InstanceLimits:
        return await asyncio.to_thread(self.cloud.describe_instance_type, instance_type)


class AsyncMetadata:
    """Awaitable MetadataPort: identity() and enis() run in a thread."""

    def __init__(self, metadata: MetadataPort) -> None:
        self.metadata = metadata

    async def identity(self) -> InstanceIdentity:
        return await asyncio.to_thread(self.metadata.identity)

    async def enis(self) -> list[ObservedEni]:
        return await asyncio.to_thread(self.metadata.enis)
