"""Start of the node agent: from nothing to "ready".

1. identity from metadata; limits from the table, else DescribeInstanceTypes;
2. the pool rebuilt from EC2 (describe_enis; metadata may be stale, so it is only compared)
   with ``Ipam.load``; subnets observed for subnet discovery;
3. ENIs a crash left behind freed (unless ``DISABLE_LEAKED_ENI_CLEANUP``): at start no ENI
   creation of this daemon can be in flight, so every *available* ENI tagged for this
   instance was created but never attached, or detached but never deleted, by an earlier
   run. The periodic cleanup waits five minutes before it calls an ENI leaked; this sweep
   does not wait (attached ENIs were adopted in step 2);
4. the checkpoint read (upstream's ipam.json included) and every allocation restored except
   those whose pod netns or host veth is gone (``datapath.pod_present``);
5. pending-DEL records (DELs the plugin could not deliver) processed: release, then remove;
6. secondary ENIs set up in the datapath, then the node (SNAT, sysctls), then what no live
   allocation needs removed (``datapath.remove_stale``: rules and veths of pods, rules of
   ENIs, gone while the daemon was down);
7. a checkpoint written, "ready" logged.

EC2 calls made before "ready" are retried with a capped backoff (on the agent's clock) while EC2
throttles or cannot be reached: the daemon then starts when the cloud comes back instead of
exiting, and until it is ready the plugin cannot connect and answers "try again later".

What the checkpoint may be at step 4 (the README's "Checkpoint recovery" section), each
case with a log line of its own:

* missing: the node's first start (or /var/run was wiped with its pods): nothing to
  restore, every address is available. Logged ``no checkpoint: first start``.
* this project's file: allocations and cooldowns restored. ``checkpoint restored``.
* upstream's file (no ``releasedAddresses``): allocations restored; release times are
  unknown, so every address not allocated cools for ``IP_COOLDOWN_PERIOD`` from now, as if
  just released. ``checkpoint from the upstream daemon``.
* empty, truncated or malformed (the store moved it aside and raised): the daemon starts
  with no allocations, but every address on the instance's ENIs is put in quarantine,
  cooling for ``max(IP_COOLDOWN_PERIOD, CORRUPT_QUARANTINE_S)`` seconds, so addresses that
  running pods may still use are not handed out at once. ``CHECKPOINT UNREADABLE``.
* a newer format version (a downgrade): moved aside too (its bytes kept for the upgrade
  back) and the same quarantine. ``CHECKPOINT FROM A NEWER VERSION``.

The quarantine's release times are checkpointed, so a restart during it keeps it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from adapters.ipamd.agent import Agent
from adapters.ipamd.handlers import host_veth_for, pod_network, teardown_quietly
from adapters.pending_dels import read_pending_dels, remove_pending_del
from adapters.protocol import ProtocolError
from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import (
    CheckpointError,
    CloudError,
    FailureKind,
    UnknownInstanceType,
    UnsupportedCheckpointVersion,
)
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import SUBNET_DISCOVERY_TAG, Allocation, AllocationKey, ObservedEni
from ipamcore.netspec import LiveNetwork, NodeNetwork

CORRUPT_QUARANTINE_S = 300.0
START_RETRY_FIRST_S = 1.0
START_RETRY_MAX_S = 30.0
T = TypeVar("T")


async def cloud_until_answered(agent: Agent, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the cloud's threads, retried while EC2 throttles or is unreachable."""
    delay = START_RETRY_FIRST_S
    while True:
        try:
            return await agent.in_cloud(fn, *args)
        except CloudError as exc:
            if exc.kind not in (FailureKind.THROTTLED, FailureKind.OTHER) or agent.stopping:
                raise
            agent.log.warning(
                "EC2 unavailable at start; retrying", call=what, error=str(exc), retry_in=delay
            )
        await agent.clock.sleep(delay)
        delay = min(delay * 2, START_RETRY_MAX_S)
# The periodic cleanup calls an available ENI leaked once it is this old (upstream's 5 min).
LEAKED_ENI_AGE_S = 300.0


async def instance_limits(agent: Agent, instance_type: str) -> InstanceLimits:
    try:
        return limits_for(instance_type)
    except UnknownInstanceType:
        agent.log.info("instance type not in the table; asking EC2", instance_type=instance_type)
        return await cloud_until_answered(
            agent, "DescribeInstanceTypes", agent.ports.cloud.describe_instance_type, instance_type
        )


async def observe_enis(agent: Agent) -> list[ObservedEni]:
    """EC2's view of the attached ENIs.

    Metadata is only compared, never added: it may be stale (upstream #3887) and list an ENI,
    or addresses, already deleted; adopting them would hand pods addresses the instance no
    longer holds. An ENI that only metadata shows is logged; the next reconciliation with
    EC2 adopts it if it really is attached.
    """
    assert agent.identity is not None
    ec2 = await cloud_until_answered(
        agent, "DescribeNetworkInterfaces", agent.ports.cloud.describe_enis,
        agent.identity.instance_id,
    )  # fmt: skip
    try:
        imds = await agent.in_cloud(agent.ports.metadata.enis)
    except Exception as exc:
        agent.log.warning("metadata ENIs unavailable", error=str(exc))
        imds = []
    known = {e.eni_id for e in ec2}
    only_in_metadata = sorted(e.eni_id for e in imds if e.eni_id not in known)
    if only_in_metadata:
        agent.log.warning(
            "ENIs in metadata but not in EC2 ignored (stale metadata?)", enis=only_in_metadata
        )
    return ec2


async def refresh_subnets(agent: Agent) -> None:
    """Subnet discovery: tell the core about tagged subnets and the primary ENI's subnet."""
    placement = agent.settings.pool.placement
    if not placement.subnet_discovery or agent.identity is None:
        return
    cloud = agent.ports.cloud
    try:
        subnets = await agent.in_cloud(cloud.describe_subnets, (), SUBNET_DISCOVERY_TAG)
        primary = agent.core.primary_eni()
        if primary is not None and all(s.subnet_id != primary.subnet_id for s in subnets):
            subnets += await agent.in_cloud(cloud.describe_subnets, (primary.subnet_id,), "")
    except Exception as exc:
        agent.log.warning("subnet discovery failed", error=str(exc))
        return
    agent.core.observe_subnets(subnets, agent.identity.availability_zone)


async def read_checkpoint(agent: Agent) -> Checkpoint | None:
    """The stored checkpoint; on corruption or a newer version, log loudly and quarantine
    (see the module docstring)."""
    path = agent.settings.checkpoint_path
    try:
        checkpoint = await agent.ports.store.load()
    except UnsupportedCheckpointVersion as exc:
        agent.log.error(
            "CHECKPOINT FROM A NEWER VERSION: written by a newer daemon (a downgrade?); "
            "moved aside, starting with no allocations; every address on the instance is "
            "quarantined before reuse",
            version=str(exc.version), path=path, moved_to=getattr(exc, "moved_to", ""),
        )  # fmt: skip
        return quarantine(agent)
    except CheckpointError as exc:
        agent.log.error(
            "CHECKPOINT UNREADABLE: starting with no allocations; every address on the "
            "instance is quarantined before reuse",
            error=str(exc), path=path, moved_to=getattr(exc, "moved_to", ""),
        )  # fmt: skip
        return quarantine(agent)
    if checkpoint is None:
        agent.log.info(
            "no checkpoint: first start on this node, nothing to restore; every address "
            "is available",
            path=path,
        )  # fmt: skip
        return None
    if checkpoint.from_upstream:
        agent.log.warning(
            "checkpoint from the upstream daemon (no releasedAddresses): allocations "
            "restored; release times unknown, so every address not allocated cools for "
            "IP_COOLDOWN_PERIOD from now",
            path=path, allocations=len(checkpoint.allocations),
        )  # fmt: skip
        return cool_unallocated(agent, checkpoint)
    return checkpoint


def _instance_addresses(agent: Agent, now: float) -> list[str]:
    return [
        a.address
        for view in agent.core.eni_views(now)
        for block in view.blocks
        for a in block.addresses
    ]


def cool_unallocated(agent: Agent, checkpoint: Checkpoint) -> Checkpoint:
    """``checkpoint`` with every address it does not allocate 'just released'."""
    now = agent.clock.now()
    allocated = {a.ipv4 for a in checkpoint.allocations} | {a.ipv6 for a in checkpoint.allocations}
    cooling = [a for a in _instance_addresses(agent, now) if a not in allocated]
    return attrs.evolve(checkpoint, released_at=tuple((a, now) for a in cooling))


async def sweep_leaked_enis(agent: Agent) -> list[str]:
    """Free the available ENIs tagged for this instance (step 3); returns the ids freed."""
    if not agent.settings.leaked_eni_cleanup:
        agent.log.info("leaked-ENI sweep at start skipped: DISABLE_LEAKED_ENI_CLEANUP")
        return []
    assert agent.identity is not None
    cloud = agent.ports.cloud
    # Every ENI created before this start counts, whatever its age.
    created_before = agent.clock.now() + LEAKED_ENI_AGE_S
    try:
        leaked = await agent.in_cloud(
            cloud.find_leaked_enis, agent.identity.instance_id, created_before
        )
    except Exception as exc:
        agent.log.warning("leaked-ENI sweep at start failed", error=str(exc))
        return []
    return await free_leaked_enis(agent, leaked, at_start=True)


async def free_leaked_enis(agent: Agent, leaked: list[str], at_start: bool) -> list[str]:
    """Free each ENI of ``leaked``, logging every one; returns the ids freed."""
    freed = []
    for eni_id in leaked:
        try:
            await agent.in_cloud(agent.ports.cloud.free_eni, eni_id)
        except Exception as exc:
            agent.log.warning("leaked ENI not freed", eni=eni_id, error=str(exc))
            continue
        freed.append(eni_id)
        if at_start:
            agent.log.warning("leaked ENI freed at start (left by a crash)", eni=eni_id)
        else:
            agent.log.info("leaked ENI freed", eni=eni_id)
    return freed


def quarantine(agent: Agent) -> Checkpoint:
    """A checkpoint with no allocations in which every address was 'just released'."""
    now = agent.clock.now()
    cooldown = agent.settings.pool.cooldown_s
    hold = max(cooldown, CORRUPT_QUARANTINE_S)
    released_at = now + hold - cooldown
    agent.quarantine_until = now + hold
    addresses = _instance_addresses(agent, now)
    return Checkpoint(released_at=tuple((a, released_at) for a in addresses))


def pod_still_there(agent: Agent, allocation: Allocation) -> bool:
    """restore's ``keep``: the pod's netns and host veth exist (unknown netns: keep)."""
    netns = agent.hints.get(allocation.key)
    if netns is None:
        return True
    try:
        return agent.ports.datapath.pod_present(
            netns, host_veth_for(agent, allocation), allocation.ipv4
        )
    except Exception as exc:
        agent.log.warning("pod_present failed; keeping", key=str(allocation.key), error=str(exc))
        return True


async def remove_stale_pieces(agent: Agent, enis: list[ObservedEni]) -> None:
    """Remove the host's rules and veths that no live allocation needs (pods that vanished,
    ENIs freed, while the daemon was down). Skipped under quarantine: after an unreadable
    checkpoint the live pods are unknown, and their network must not be cut."""
    if agent.quarantine_until > 0:
        agent.log.warning("stale datapath cleanup skipped: the checkpoint was unreadable")
        return
    live = LiveNetwork(
        pods=tuple(
            pod_network(agent, a, agent.hints.get(a.key) or "")
            for a in agent.core.allocations()
            if a.ipv4 is not None
        ),
        eni_ips=tuple(e.primary_ip for e in enis),
    )
    try:
        removed = await agent.in_datapath(agent.ports.datapath.remove_stale, live)
    except Exception as exc:
        agent.log.warning("stale datapath cleanup failed", error=str(exc))
        return
    for piece in removed:
        agent.log.warning("stale datapath piece removed", piece=piece)


async def process_pending_dels(agent: Agent) -> int:
    """Release allocations of DELs recorded while the daemon was down; returns how many."""
    directory = agent.settings.pending_del_dir

    def on_error(path: str, err: ProtocolError) -> None:
        agent.log.warning("bad pending DEL record skipped", path=path, error=err.message)

    try:
        requests = await asyncio.to_thread(read_pending_dels, directory, on_error)
    except ProtocolError as exc:
        agent.log.error("pending DEL records unreadable", error=exc.message)
        return 0
    now = agent.clock.now()
    for req in requests:
        key = AllocationKey(req.network_name, req.container_id, req.if_name)
        allocation = agent.core.get(key)
        if allocation is not None:
            await teardown_quietly(agent, allocation, req.netns)
            agent.core.release(key, now)
            agent.hints.forget(key)
        agent.log.info("pending DEL processed", key=str(key), had_address=allocation is not None)
    if requests:
        await agent.committer.commit()
        for req in requests:
            try:
                remove_pending_del(directory, req)
            except ProtocolError as exc:
                agent.log.error("cannot remove pending DEL record", error=exc.message)
    return len(requests)


async def start(agent: Agent) -> None:
    """Bring the agent to ready (see the module docstring for the steps)."""
    began = time.monotonic()
    identity = await agent.in_cloud(agent.ports.metadata.identity)
    agent.identity = identity
    limits = await instance_limits(agent, identity.instance_type)
    agent.ipam = Ipam(agent.settings.pool, limits)
    for notice in agent.ipam.notices:
        agent.log.warning(notice)
    now = agent.clock.now()
    enis = await observe_enis(agent)
    agent.core.load(enis, now)
    await refresh_subnets(agent)
    await sweep_leaked_enis(agent)

    legacy_hints = agent.hints.load_legacy()
    checkpoint = await read_checkpoint(agent)
    if checkpoint is not None:
        agent.hints.adopt(checkpoint.netns)
        report = agent.core.restore(checkpoint, now, keep=lambda a: pod_still_there(agent, a))
        for allocation, reason in report.dropped:
            agent.log.warning("allocation not restored", key=str(allocation.key), reason=reason)
        agent.log.info(
            "checkpoint restored", restored=len(report.restored), dropped=len(report.dropped)
        )
    agent.hints.retain({a.key for a in agent.core.allocations()})
    await process_pending_dels(agent)

    for eni in sorted(enis, key=lambda e: e.device_index):
        await agent.setup_eni(eni)
    primary = agent.core.primary_eni()
    if primary is not None:
        node = NodeNetwork(
            primary_ip=primary.primary_ip,
            vpc_cidrs=identity.vpc_cidrs,
            external_snat=agent.settings.external_snat,
        )
        await agent.in_datapath(agent.ports.datapath.setup_node, node)
    await remove_stale_pieces(agent, enis)
    await agent.committer.commit()
    if legacy_hints:
        agent.hints.drop_legacy_file()  # the checkpoint just written carries the paths
    agent.metrics.bind_pool(agent.stats)
    agent.metrics.bind_node(agent.eni_views, lambda: agent.waiting, agent.ports.cloud)
    elapsed = time.monotonic() - began
    agent.metrics.startup_duration.set(elapsed)
    agent.ready = True
    stats = agent.stats()
    agent.log.info(
        "ready", instance_id=identity.instance_id, instance_type=identity.instance_type,
        enis=stats.enis, addresses=stats.total, assigned=stats.assigned,
        startup_seconds=round(elapsed, 3),
    )  # fmt: skip
