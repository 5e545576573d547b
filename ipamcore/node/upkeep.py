"""The pool's upkeep: policy passes and their effects (a new ENI is used once instance
metadata lists it), ENI setup, reconciliation with EC2, the leaked-ENI cleanup and subnet
discovery, each on its timer."""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable
from typing import Any

import attrs

from ipamcore.effects import Effect, FreeEni
from ipamcore.errors import FailureKind
from ipamcore.events import EffectFailed, EniCreated, EniFreed, Outcome
from ipamcore.ipam import Ipam
from ipamcore.model import (
    SUBNET_DISCOVERY_TAG,
    ObservedEni,
    ObservedNode,
)
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node.config import LEAKED_ENI_AGE_S
from ipamcore.node.runner import INF, Runner
from ipamcore.node.tasks import DURABLE, Sleep, TaskGen


class Upkeep(Runner):
    """Timers and cloud effects."""

    def _on_tick(self, _inp: i.Tick) -> None:
        now = self._now
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, task, slot = heapq.heappop(self._sleepers)
            self._resolve(task, slot, None)
        if not self.ready or self.stopping:
            return
        waiting = self._waiters or self._card_waiters
        if self._kicked or now >= self._policy_due or (waiting and now >= self._core_wake):
            self._run_policy()
        if now >= self._reconcile_due:
            self._reconcile_due = INF
            self._spawn(self._reconcile(), "reconcile")
        if now >= self._leaked_due:
            self._leaked_due = INF
            self._spawn(self._cleanup_leaked(), "leaked-enis")

    def _on_stop(self, _inp: i.Stop) -> None:
        """No new effects or requests; waits for time (metadata polls) end now."""
        self.stopping = True
        self._kicked = False
        self._policy_due = self._reconcile_due = self._leaked_due = self._core_wake = INF
        sleepers, self._sleepers = self._sleepers, []
        for _, _, task, slot in sleepers:
            self._resolve(task, slot, None)

    def _on_eniconfig(self, inp: i.EniConfigChanged) -> None:
        """Custom networking from Kubernetes: new ENIs follow the node's ENIConfig from now
        on; while it is missing, growth by new ENIs is paused (existing ENIs still grow)."""
        old = self.eniconfig
        if old is not None and attrs.evolve(old, now=inp.now) == inp:
            return
        self.eniconfig = inp
        if inp.subnet_id is None:
            self._log("error", "eniconfig missing: no new ENI until it exists", eniconfig=inp.name)
        else:
            self._log(
                "info", "eniconfig for new ENIs", eniconfig=inp.name, subnet=inp.subnet_id,
                security_groups=list(inp.security_groups),
            )  # fmt: skip
        if self.ipam is not None:
            self._apply_kube(self.ipam)
            self._kick()

    def _on_max_pods(self, inp: i.MaxPodsChanged) -> None:
        if inp.max_pods == self.node_max_pods:
            return
        self.node_max_pods = inp.max_pods
        if self.ipam is not None:
            self._apply_kube(self.ipam)
            self._log("info", "max pods from the Node", max_pods=self.ipam.max_pods)
            self._kick()

    def _apply_kube(self, ipam: Ipam) -> None:
        if self.eniconfig is not None:
            ipam.use_eniconfig(self.eniconfig.subnet_id, self.eniconfig.security_groups)
        ipam.cap_max_pods(self.node_max_pods)
        self.changes.touch_all()

    def _run_policy(self) -> None:
        """One policy pass, then the next: when the core says a decision can change next
        (:meth:`~ipamcore.ipam.Ipam.next_wake_at`: a cooldown, a growth pause, a backoff, the
        shrink interval, an ENI's minimum age or an effect's expiry ends), but not sooner than
        ``policy_interval_s`` from now, unless ADDs wait (they are served as each cooldown
        ends). Nothing pending: no pass until an input changes something."""
        now = self._now
        self._kicked = False
        ipam = self.core
        self.changes.touch_all()  # the policy may set addresses aside (their release times)
        card_waiting = self.card_waiting() if self._card_waiters else None
        for effect in ipam.plan(now, waiting=len(self._waiters), card_waiting=card_waiting):
            self._log("info", "effect", **_describe(effect))
            self.effects_in_flight += 1
            self._spawn(self._perform(effect), "effect")
        self._core_wake = wake = ipam.next_wake_at(now)
        self._policy_due = max(wake, now + self.config.policy_interval_s) if wake < INF else INF

    def _perform(self, effect: Effect) -> TaskGen:
        done = yield c.PerformEffect(self._cid(), effect)
        outcome: Outcome
        if isinstance(done, i.Failed):  # the executor could not even classify it
            outcome = EffectFailed(effect.effect_id, FailureKind.OTHER, done.message)
        else:
            outcome = done.outcome
        if isinstance(outcome, EniCreated):
            yield from self._wait_until_visible(outcome.eni.eni_id)
        if isinstance(outcome, EffectFailed):
            self._log(
                "warning", "effect failed", effect_id=effect.effect_id, kind=outcome.kind.value,
                message=outcome.message,
            )  # fmt: skip
        if isinstance(outcome, EniFreed) and isinstance(effect, FreeEni):
            yield from self._teardown_eni(effect.eni_id)
        removed = self.core.apply(outcome, self._now)
        self.changes.touch_all()
        if removed:
            self._count("force_removed_ips", amount=len(removed))
            self._log(
                "error", "allocations force-removed", count=len(removed), effect=effect.effect_id
            )
        if isinstance(outcome, EniCreated):
            yield from self._setup_eni(outcome.eni, created=True)
        self.effects_in_flight -= 1
        self._kick()

    def _wait_until_visible(self, eni_id: str) -> TaskGen:
        """Use a new ENI only once instance metadata lists it (until then the host may have
        no link for it); the effect stays in flight meanwhile, so its addresses count as
        coming. After ``eni_visible_wait_s`` it is used anyway, with a warning."""
        deadline = self._now + self.config.eni_visible_wait_s
        while True:
            read = yield c.ReadMetadataEnis(self._cid())
            if isinstance(read, i.Failed):
                self._log("warning", "metadata ENIs unavailable", error=read.message)
            elif any(e.eni_id == eni_id for e in read.enis):
                return
            if self._now >= deadline or self.stopping:
                self._log(
                    "warning", "new ENI not in instance metadata yet; using it anyway",
                    eni=eni_id, waited_s=self.config.eni_visible_wait_s,
                )  # fmt: skip
                return
            yield Sleep(self._now + self.config.eni_visible_poll_s)

    def _teardown_eni(self, eni_id: str, info: ObservedEni | None = None) -> TaskGen:
        """Remove a freed ENI's rule and routes from the host (a failure is logged: the
        start's stale cleanup removes what is left). ``info``: the ENI as it was, for one
        the pool has already dropped (reconciliation)."""
        info = info or self.core.eni(eni_id)
        net = None if info is None else self.eni_network(info)
        if net is None:
            return
        done = yield c.TearDownEni(self._cid(), eni_id, net)
        if isinstance(done, i.Failed):
            self._log("warning", "eni teardown failed", eni=eni_id, error=done.message)

    def _setup_eni(self, eni: ObservedEni, created: bool = False) -> Any:
        net = self.eni_network(eni)
        if net is None:
            return True
        done = yield c.SetUpEni(self._cid(), eni.eni_id, net, created)
        if isinstance(done, i.Failed):
            self._enis_to_set_up.add(eni.eni_id)
            self._log("error", "eni setup failed", eni=eni.eni_id, error=done.message)
            return False
        self._enis_to_set_up.discard(eni.eni_id)
        return True

    def _reconcile(self) -> TaskGen:
        """One reconciliation pass with EC2's view of the instance."""
        yield from self._reconcile_once()
        self._reconcile_due = self._now + self.config.reconcile_interval_s

    def _reconcile_once(self) -> TaskGen:
        assert self.identity is not None
        described = yield c.DescribeEnis(self._cid(), self.identity.instance_id)
        if isinstance(described, i.Failed):
            self._log("warning", "reconciliation failed", error=described.message)
            return
        ipam = self.core
        before = {eni_id: ipam.eni(eni_id) for eni_id in ipam.pool.enis}
        report = ipam.reconcile(ObservedNode(described.enis), self._now)
        self.changes.touch_all()
        self._count("reconcile", "eni")
        change = report.diff
        if not change.empty:
            self._log(
                "info", "reconciled", added_enis=[e.eni_id for e in change.add_enis],
                removed_enis=list(change.remove_enis), added_blocks=len(change.add_blocks),
                removed_blocks=len(change.remove_blocks),
            )  # fmt: skip
        removed_enis = sum(1 for e in change.remove_enis if e in before)
        if removed_enis:
            self._count("force_removed_enis", amount=removed_enis)
        if report.force_removed:
            self._count("force_removed_ips", amount=len(report.force_removed))
            for allocation in report.force_removed:
                self.hints.pop(allocation.key, None)
            self._log(
                "error", "allocations force-removed: their address vanished from the instance",
                keys=[str(a.key) for a in report.force_removed],
            )  # fmt: skip
        for eni_id in change.remove_enis:  # gone from the instance: its rule and routes too
            if before.get(eni_id) is not None and ipam.eni(eni_id) is None:
                yield from self._teardown_eni(eni_id, before[eni_id])
        for eni in change.add_enis:
            yield from self._setup_eni(eni)
        for eni_id in sorted(self._enis_to_set_up):
            info = ipam.eni(eni_id)
            if info is None:
                self._enis_to_set_up.discard(eni_id)
            else:
                yield from self._setup_eni(info)
        yield from self._refresh_subnets()
        if report.force_removed:
            error = yield DURABLE
            if error is not None:
                self._log(
                    "warning",
                    "reconciliation failed",
                    error=f"checkpoint write failed: {error.message}",
                )
        self._kick()

    def _cleanup_leaked(self) -> TaskGen:
        """Free the ENIs of any node of the cluster left detached over
        :data:`LEAKED_ENI_AGE_S` ago (upstream's scope and age)."""
        assert self.identity is not None
        found = yield c.FindLeakedEnis(
            self._cid(), self.identity.instance_id, True, LEAKED_ENI_AGE_S
        )
        if isinstance(found, i.Failed):
            self._log("warning", "leaked ENI cleanup failed", error=found.message)
        else:
            yield from self._free_leaked(found.eni_ids, at_start=False)
        self._schedule_leaked_cleanup()

    def _schedule_leaked_cleanup(self) -> None:
        """Next cleanup after the interval plus up to 10 % of it, spread per node and round
        (a hash of the instance id: deterministic, so a replay makes the same calls)."""
        assert self.identity is not None
        interval = self.config.leaked_eni_interval_s
        self._leaked_rounds += 1
        seed = f"{self.identity.instance_id}/{self._leaked_rounds}".encode()
        spread = zlib.crc32(seed) / 2**32 * interval * 0.1
        self._leaked_due = self._now + interval + spread

    def _free_leaked(self, eni_ids: Iterable[str], at_start: bool) -> TaskGen:
        for eni_id in eni_ids:
            done = yield c.FreeLeakedEni(self._cid(), eni_id)
            if isinstance(done, i.Failed):
                self._log("warning", "leaked ENI not freed", eni=eni_id, error=done.message)
            elif at_start:
                self._log("warning", "leaked ENI freed at start (left by a crash)", eni=eni_id)
            else:
                self._log("info", "leaked ENI freed", eni=eni_id)

    def _refresh_subnets(self) -> TaskGen:
        """Subnet discovery: tell the core about tagged subnets and the primary ENI's."""
        if not self.config.pool.placement.subnet_discovery or self.identity is None:
            return
        found = yield c.DescribeSubnets(self._cid(), (), SUBNET_DISCOVERY_TAG)
        if isinstance(found, i.Failed):
            self._log("warning", "subnet discovery failed", error=found.message)
            return
        subnets = list(found.subnets)
        primary = self.core.primary_eni()
        if primary is not None and all(s.subnet_id != primary.subnet_id for s in subnets):
            more = yield c.DescribeSubnets(self._cid(), (primary.subnet_id,), "")
            if isinstance(more, i.Failed):
                self._log("warning", "subnet discovery failed", error=more.message)
                return
            subnets += more.subnets
        self.core.observe_subnets(subnets, self.identity.availability_zone)
        self.changes.touch_all()


def _describe(effect: Effect) -> dict[str, object]:
    fields = attrs.asdict(effect)
    fields.pop("effect_id", None)
    return {"effect_id": effect.effect_id, **fields}
