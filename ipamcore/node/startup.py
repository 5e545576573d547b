"""Start-up, in its order, and what the checkpoint may be at restart (see
:mod:`ipamcore.node.machine`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import ConfigError, FailureKind, UnknownInstanceType
from ipamcore.events import EffectFailed
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.model import (
    ObservedEni,
)
from ipamcore.netspec import LiveNetwork, NodeNetwork
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node.config import CORRUPT_QUARANTINE_S
from ipamcore.node.requests import Requests
from ipamcore.node.tasks import DURABLE, Sleep, TaskGen

_RETRYABLE_AT_START = (FailureKind.THROTTLED, FailureKind.OTHER)


class StartUp(Requests):
    """From nothing to ready."""

    def _on_start(self, _inp: i.Start) -> None:
        self._spawn(self._boot(), "boot")

    def _abort(self, cause: i.Failed | None, message: str) -> None:
        self._out.append(c.Abort(cause.cid if cause is not None else 0, message))

    def _until_answered(self, what: str, make: Callable[[], Any]) -> Any:
        """Issue ``make()``'s command again, after a capped doubling backoff, while EC2
        throttles or cannot be reached; returns the answer or the last failure."""
        delay = self.config.start_retry_first_s
        while True:
            answer = yield make()
            if not isinstance(answer, i.Failed):
                return answer
            if answer.kind not in _RETRYABLE_AT_START or self.stopping:
                return answer
            self._log(
                "warning", "EC2 unavailable at start; retrying", call=what,
                error=answer.message, retry_in=delay,
            )  # fmt: skip
            yield Sleep(self._now + delay)
            delay = min(delay * 2, self.config.start_retry_max_s)

    def _boot(self) -> TaskGen:
        began = self._now
        read = yield c.ReadIdentity(self._cid())
        if isinstance(read, i.Failed):
            self._abort(read, f"instance identity unavailable: {read.message}")
            return
        identity = self.identity = read.identity
        try:
            limits = limits_for(identity.instance_type)
        except UnknownInstanceType:
            self._log(
                "info",
                "instance type not in the table; asking EC2",
                instance_type=identity.instance_type,
            )
            described = yield from self._until_answered(
                "DescribeInstanceTypes",
                lambda: c.DescribeInstanceType(self._cid(), identity.instance_type),
            )
            if isinstance(described, i.Failed):
                self._abort(described, f"instance type unknown: {described.message}")
                return
            limits = described.limits
        try:
            ipam = self.ipam = Ipam(self.config.pool, limits)
        except ConfigError as exc:
            self._abort(None, str(exc))
            return
        self._apply_kube(ipam)
        for notice in ipam.notices:
            self._log("warning", notice)
        now = self._now
        enis = yield from self._observe_enis()
        if isinstance(enis, i.Failed):
            self._abort(enis, f"cannot describe the instance's ENIs: {enis.message}")
            return
        ipam.load(enis, now)
        self.changes.touch_all()
        yield from self._refresh_subnets()
        yield from self._sweep_leaked_at_start()

        read_cp = yield c.ReadCheckpoint(self._cid())
        if isinstance(read_cp, i.Failed):
            self._abort(read_cp, f"checkpoint unavailable: {read_cp.message}")
            return
        self.hints.update(read_cp.legacy_hints)
        checkpoint = self._checkpoint_to_restore(read_cp)
        if checkpoint is not None:
            self.hints.update(checkpoint.netns)
            gone = yield from self._pods_gone(checkpoint)
            self._note_legacy(checkpoint.allocations)
            report = ipam.restore(checkpoint, now, keep=lambda a: a.key not in gone)
            self.changes.touch_all()
            for allocation, reason in report.dropped:
                self._log(
                    "warning", "allocation not restored", key=str(allocation.key), reason=reason
                )
            self._log(
                "info",
                "checkpoint restored",
                restored=len(report.restored),
                dropped=len(report.dropped),
            )
            # A pod found gone may have left host pieces (rules, routes): removed quietly,
            # before its address can go to another pod.
            for allocation, _reason in report.dropped:
                if allocation.key in gone:
                    yield from self._teardown_quietly(allocation, "")
        kept = {a.key for a in ipam.allocations()}
        self.hints = {k: v for k, v in self.hints.items() if k in kept}
        error = yield from self._process_pending_dels()
        if error is not None:
            self._abort(error, f"checkpoint write failed: {error.message}")
            return

        if not (yield from self._ipv6_prefix()):
            return
        for eni in sorted(enis, key=lambda e: e.device_index):
            yield from self._setup_eni(eni)
        primary = ipam.primary_eni()
        if primary is not None:
            node = self._node_network(primary.primary_ip)
            done = yield c.SetUpNode(self._cid(), node)
            if isinstance(done, i.Failed):
                self._abort(done, f"node datapath setup failed: {done.message}")
                return
        yield from self._remove_stale(enis)
        error = yield DURABLE
        if error is not None:
            self._abort(error, f"checkpoint write failed: {error.message}")
            return
        if read_cp.legacy_file:
            yield c.DropLegacyHints(self._cid())  # the checkpoint just written has the paths
        self.ready = True
        elapsed = self._now - began
        stats = ipam.stats(self._now)
        self._out.append(c.Ready(elapsed))
        self._log(
            "info", "ready", instance_id=identity.instance_id,
            instance_type=identity.instance_type, enis=stats.enis, addresses=stats.total,
            assigned=stats.assigned, startup_seconds=round(elapsed, 3),
        )  # fmt: skip
        self._kick()  # the first policy pass at once; it says when the next is due
        self._reconcile_due = self._now + self.config.reconcile_interval_s
        if self.config.leaked_eni_cleanup:
            self._schedule_leaked_cleanup()
        early, self._early = self._early, []
        for req in early:
            self._on_request(req)

    def _ipv6_prefix(self) -> Any:
        """IPv6 (single or dual stack): the primary ENI's /80 prefix, assigned now if it has
        none (upstream does it at start). False, after an abort naming the cause, when the
        subnet has no IPv6 CIDR or EC2 refuses."""
        ipam, identity = self.core, self.identity
        assert identity is not None
        if ipam.v6 is None or ipam.v6.first() is not None:
            return True
        primary = ipam.primary_eni()
        if primary is None:
            return True
        subnet = primary.subnet_id
        if not identity.subnet_ipv6_cidrs:
            self._abort(
                None,
                f"ENABLE_IPv6: the primary ENI's subnet {subnet} has no IPv6 CIDR block "
                "(instance metadata lists none); associate one with the subnet (and its VPC)",
            )
            return False
        delay = self.config.start_retry_first_s
        while True:
            effect = ipam.start_v6_prefix(self._now)
            if effect is None:  # (a throttled try pauses it: wait that out)
                yield Sleep(ipam.next_wake_at(self._now))
                continue
            answer = yield c.PerformEffect(self._cid(), effect)
            outcome = answer.outcome if isinstance(answer, i.EffectDone) else EffectFailed(
                effect.effect_id, FailureKind.OTHER, getattr(answer, "message", "no answer")
            )  # fmt: skip
            ipam.apply(outcome, self._now)
            throttled = isinstance(outcome, EffectFailed) and outcome.kind is FailureKind.THROTTLED
            if not throttled or self.stopping:
                break
            self._log(
                "warning", "EC2 throttled the IPv6 prefix request at start; retrying",
                retry_in=delay,
            )  # fmt: skip
            yield Sleep(self._now + delay)
            delay = min(delay * 2, self.config.start_retry_max_s)
        if isinstance(outcome, EffectFailed):
            self._abort(
                None,
                f"ENABLE_IPv6: AssignIpv6Addresses (Ipv6PrefixCount=1) on the primary ENI "
                f"in subnet {subnet} failed: {outcome.message}",
            )
            return False
        self._log("info", "IPv6 prefix assigned", prefix=ipam.v6.first())
        return True

    def _node_network(self, primary_ip: str) -> NodeNetwork:
        pool, identity = self.config.pool, self.identity
        assert identity is not None
        v4_egress = pool.ipv6_only and self.config.v4_egress
        v6_egress = pool.ipv4 and not pool.ipv6 and self._v6_egress
        return NodeNetwork(
            primary_ip=primary_ip,
            vpc_cidrs=identity.vpc_cidrs,
            external_snat=self.config.external_snat,
            ipv6=pool.ipv6 or v6_egress,
            ipv4=pool.ipv4,
            egress_v4_snat_to=primary_ip if v4_egress else "",
            egress_v6_snat_to=identity.ipv6_address if v6_egress else "",
        )

    def _remove_stale(self, enis: list[ObservedEni]) -> TaskGen:
        """Remove the host's rules and veths no live allocation needs (pods that vanished,
        ENIs freed, while the daemon was down). Skipped under quarantine: after an unreadable
        checkpoint the live pods are unknown, and their network must not be cut."""
        if self.quarantine_until > 0:
            self._log("warning", "stale datapath cleanup skipped: the checkpoint was unreadable")
            return
        live = LiveNetwork(
            pods=tuple(
                self.pod_network(a, self.hints.get(a.key, "")) for a in self.core.allocations()
            ),
            eni_ips=tuple(e.primary_ip for e in enis),
        )
        done = yield c.RemoveStale(self._cid(), live)
        if isinstance(done, i.Failed):
            self._log("warning", "stale datapath cleanup failed", error=done.message)
            return
        for piece in done.removed:
            self._log("warning", "stale datapath piece removed", piece=piece)

    def _observe_enis(self) -> Any:
        """EC2's view of the attached ENIs. Metadata is only compared, never added: it may
        be stale (upstream #3887) and list an ENI, or addresses, already deleted; adopting
        them would hand pods addresses the instance no longer holds. An ENI only metadata
        shows is logged; the next reconciliation with EC2 adopts it if it is attached."""
        assert self.identity is not None
        instance_id = self.identity.instance_id
        described = yield from self._until_answered(
            "DescribeNetworkInterfaces", lambda: c.DescribeEnis(self._cid(), instance_id)
        )
        if isinstance(described, i.Failed):
            return described
        read = yield c.ReadMetadataEnis(self._cid())
        if isinstance(read, i.Failed):
            self._log("warning", "metadata ENIs unavailable", error=read.message)
            imds: tuple[ObservedEni, ...] = ()
        else:
            imds = read.enis
        known = {e.eni_id for e in described.enis}
        only_in_metadata = sorted(e.eni_id for e in imds if e.eni_id not in known)
        if only_in_metadata:
            self._log(
                "warning",
                "ENIs in metadata but not in EC2 ignored (stale metadata?)",
                enis=only_in_metadata,
            )
        return list(described.enis)

    def _sweep_leaked_at_start(self) -> TaskGen:
        """Free the available ENIs tagged for this instance, at any age: at start no ENI
        creation of this node can be in flight, so each was created but never attached, or
        detached but never deleted, by an earlier run."""
        if not self.config.leaked_eni_cleanup:
            self._log("info", "leaked-ENI sweep at start skipped: DISABLE_LEAKED_ENI_CLEANUP")
            return
        assert self.identity is not None
        found = yield c.FindLeakedEnis(self._cid(), self.identity.instance_id, False, None)
        if isinstance(found, i.Failed):
            self._log("warning", "leaked-ENI sweep at start failed", error=found.message)
            return
        yield from self._free_leaked(found.eni_ids, at_start=True)

    def _checkpoint_to_restore(self, read: i.CheckpointRead) -> Checkpoint | None:
        path = self.config.checkpoint_path
        if read.problem == i.NEWER_VERSION:
            self._log(
                "error",
                "CHECKPOINT FROM A NEWER VERSION: written by a newer daemon (a downgrade?); "
                "moved aside, starting with no allocations; every address on the instance is "
                "quarantined before reuse",
                version=read.detail, path=path, moved_to=read.moved_to,
            )  # fmt: skip
            return self._quarantine()
        if read.problem:
            self._log(
                "error",
                "CHECKPOINT UNREADABLE: starting with no allocations; every address on the "
                "instance is quarantined before reuse",
                error=read.detail, path=path, moved_to=read.moved_to,
            )  # fmt: skip
            return self._quarantine()
        checkpoint = read.checkpoint
        if checkpoint is None:
            self._log(
                "info",
                "no checkpoint: first start on this node, nothing to restore; every address "
                "is available",
                path=path,
            )  # fmt: skip
            return None
        if checkpoint.from_upstream:
            self._log(
                "warning",
                "checkpoint from the upstream daemon (no releasedAddresses): allocations "
                "restored; release times unknown, so every address not allocated cools for "
                "IP_COOLDOWN_PERIOD from now",
                path=path, allocations=len(checkpoint.allocations),
            )  # fmt: skip
            return self._cool_unallocated(checkpoint)
        return self._clamped(checkpoint)

    def _clamped(self, checkpoint: Checkpoint) -> Checkpoint:
        """No restored time is later than now (a wall clock stepped back before the restart
        must not make an address cool, or an allocation look new, for longer than it
        should)."""
        now = self._now
        if all(t <= now for _, t in checkpoint.released_at) and all(
            a.allocated_at <= now for a in checkpoint.allocations
        ):
            return checkpoint
        return attrs.evolve(
            checkpoint,
            allocations=tuple(
                a._replace(allocated_at=min(a.allocated_at, now)) for a in checkpoint.allocations
            ),
            released_at=tuple((address, min(t, now)) for address, t in checkpoint.released_at),
        )

    def _instance_addresses(self) -> list[str]:
        return [
            a.address
            for view in self.core.eni_views(self._now)
            for block in view.blocks
            for a in block.addresses
        ]

    def _cool_unallocated(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` with every address it does not allocate 'just released'."""
        now = self._now
        allocated = {a.ipv4 for a in checkpoint.allocations} | {
            a.ipv6 for a in checkpoint.allocations
        }
        cooling = [a for a in self._instance_addresses() if a not in allocated]
        return attrs.evolve(checkpoint, released_at=tuple((a, now) for a in cooling))

    def _quarantine(self) -> Checkpoint:
        """A checkpoint with no allocations in which every address was 'just released',
        cooling for ``max(cooldown, CORRUPT_QUARANTINE_S)``."""
        now = self._now
        cooldown = self.config.pool.cooldown_s
        hold = max(cooldown, CORRUPT_QUARANTINE_S)
        released_at = now + hold - cooldown
        self.quarantine_until = now + hold
        return Checkpoint(released_at=tuple((a, released_at) for a in self._instance_addresses()))

    def _pods_gone(self, checkpoint: Checkpoint) -> Any:
        """The keys of checkpointed allocations whose pod's netns or host veth is gone (an
        allocation without a netns path is kept: dropping a live pod's address would hand
        it out twice, keeping a dead one's leaks one address until GC)."""
        pods = tuple(
            c.PodToCheck(a.key, self.hints[a.key], self._host_veth(a), a.ipv4)
            for a in checkpoint.allocations
            if a.key in self.hints
        )
        if not pods:
            return frozenset()
        answer = yield c.CheckPodsPresent(self._cid(), pods)
        if isinstance(answer, i.Failed):
            self._log(
                "warning", "pod checks failed; keeping every allocation", error=answer.message
            )
            return frozenset()
        return answer.gone

    def _process_pending_dels(self) -> Any:
        """Release the allocations of DELs recorded while the daemon was down, make that
        durable, then remove the records. Returns a checkpoint write failure, or None."""
        read = yield c.ReadPendingDels(self._cid())
        if isinstance(read, i.Failed):
            self._log("error", "pending DEL records unreadable", error=read.message)
            return None
        for pending in read.dels:
            allocation = self.core.get(pending.key)
            if allocation is not None:
                yield from self._teardown_quietly(allocation, pending.netns)
                self.core.release(pending.key, self._now)
                self._pool_changed()
                self.hints.pop(pending.key, None)
                self.changes.touch(pending.key, allocation)
            self._log(
                "info",
                "pending DEL processed",
                key=str(pending.key),
                had_address=allocation is not None,
            )
        if not read.dels:
            return None
        error = yield DURABLE
        if error is not None:
            return error
        yield c.RemovePendingDels(self._cid(), tuple(p.key for p in read.dels))
        return None
