"""One simulated node agent: drives :class:`ipamcore.ipam.Ipam` as the daemon does.

The same core logic, the same loop shape as :mod:`adapters.ipamd` (agent, handlers, loops),
with time from the simulator's :class:`~backends.simulation.clock.SimClock`:

* boot: the pool is loaded from EC2's view of the instance (``describe_enis``) plus the
  metadata view, like the daemon's start-up (falls back to metadata alone if the describe is
  throttled);
* pod ADD: ``Ipam.assign``; on :class:`PoolExhausted` the pod waits (FIFO), counts in
  ``plan(waiting=...)`` and the policy is kicked at once;
* pod DEL: ``Ipam.release`` (a pod deleted while still waiting just stops waiting);
* policy: ``Ipam.plan(now, waiting)`` every ``policy_interval_s`` (5 s) and at once when
  kicked (an ADD found the pool short, an effect finished, a reconciliation ran); like
  ``policy_loop`` the 5 s timer restarts after each pass, and waiting pods retry after it
  (cooldowns may have ended);
* effects: performed against the fake cloud port at once with the daemon's own mapping
  (:func:`backends.perform.perform`); each outcome is applied at
  ``now + port.last_latency_s`` (the call's virtual latency), then waiting pods retry and the
  policy is kicked, as ``Agent._perform`` does;
* reconciliation every ``reconcile_interval_s`` (60 s) from the fake metadata view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.perform import perform
from backends.simulation.clock import SimClock
from backends.simulation.measures import Recorder
from ipamcore.config import PoolConfig
from ipamcore.effects import Effect
from ipamcore.errors import CloudError, PoolExhausted
from ipamcore.events import EffectFailed, EniCreated, EniFreed, Outcome
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, ObservedNode, PodRef

if TYPE_CHECKING:
    from backends.fakecloud import FakeCloud

NETWORK_NAME = "aws-cni"
IF_NAME = "eth0"


class SimNode:
    """The agent of one simulated instance."""

    def __init__(
        self,
        index: int,
        cloud: FakeCloud,
        instance_id: str,
        clock: SimClock,
        config: PoolConfig,
        limits: InstanceLimits,
        recorder: Recorder,
        policy_interval_s: float = 5.0,
        reconcile_interval_s: float = 60.0,
    ) -> None:
        self.index = index
        self.instance_id = instance_id
        self.port = cloud.port(instance_id)
        self.metadata = cloud.metadata(instance_id)
        self.metadata_lag_s = cloud.metadata_lag  # a new ENI is used once metadata shows it
        self.clock = clock
        self.ipam = Ipam(config, limits)
        self.rec = recorder
        self.policy_interval_s = policy_interval_s
        self.reconcile_interval_s = reconcile_interval_s
        self.started = False
        self.pods: dict[str, AllocationKey] = {}
        self.waiting: dict[str, tuple[AllocationKey, PodRef, float]] = {}  # FIFO by insertion
        self._tick_gen = 0
        self._kick_pending = False

    # ------------------------------------------------------------------ boot
    def boot(self, _arg: object = None) -> None:
        now = self.clock.now
        try:
            ec2 = self.port.describe_enis(self.instance_id)
        except CloudError:
            ec2 = []
        known = {e.eni_id for e in ec2}
        enis = ec2 + [e for e in self.metadata.enis() if e.eni_id not in known]
        self.ipam.load(enis, now)
        self.started = True
        self._serve()
        self._run_policy()
        self.clock.at(now + self.reconcile_interval_s, self._reconcile)

    # ------------------------------------------------------------------ pods
    def pod_add(self, name: str) -> None:
        now = self.clock.now
        self.rec.pod_events += 1
        key = AllocationKey(NETWORK_NAME, f"{self.index}-{name}", IF_NAME)
        pod = PodRef("default", name)
        if self.started:
            try:
                self.ipam.assign(key, pod, now)
            except PoolExhausted:
                pass
            else:
                self.pods[name] = key
                self.rec.served(now, now)
                return
        self.waiting[name] = (key, pod, now)
        if self.started:
            self.kick()

    def pod_del(self, name: str) -> None:
        self.rec.pod_events += 1
        if self.waiting.pop(name, None) is not None:
            self.rec.abandoned += 1
            return
        key = self.pods.pop(name, None)
        if key is not None:
            self.ipam.release(key, self.clock.now)

    def _serve(self) -> None:
        """Waiting pods retry, first come first served, until the pool runs dry."""
        waiting = self.waiting
        if not waiting or not self.started:
            return
        now = self.clock.now
        assign = self.ipam.assign
        while waiting:
            name = next(iter(waiting))
            key, pod, since = waiting[name]
            try:
                assign(key, pod, now)
            except PoolExhausted:
                return
            del waiting[name]
            self.pods[name] = key
            self.rec.served(since, now)

    # ------------------------------------------------------------------ policy
    def kick(self) -> None:
        """Run the policy at once (after the current event), once however often kicked."""
        if not self._kick_pending:
            self._kick_pending = True
            self.clock.at(self.clock.now, self._kicked)

    def _kicked(self, _arg: object) -> None:
        self._kick_pending = False
        self._run_policy()

    def _tick(self, gen: int) -> None:
        if gen == self._tick_gen:
            self._run_policy()

    def _run_policy(self) -> None:
        now = self.clock.now
        for effect in self.ipam.plan(now, waiting=len(self.waiting)):
            outcome, latency = self._call_cloud(effect)
            if isinstance(outcome, EniCreated):  # as the daemon: not before metadata lists it
                latency += self.metadata_lag_s
            self.clock.at(now + latency, self._apply, outcome)
        self._serve()  # cooldowns may have ended
        self._tick_gen += 1
        self.clock.at(now + self.policy_interval_s, self._tick, self._tick_gen)

    def _call_cloud(self, effect: Effect) -> tuple[Outcome, float]:
        """Perform one effect with the daemon's mapping (:func:`backends.perform.perform`);
        the outcome and the virtual latency of the port method's calls."""
        outcome = perform(self.port, self.instance_id, effect)
        return outcome, self.port.last_latency_s

    def _apply(self, outcome: Outcome) -> None:
        rec = self.rec
        if isinstance(outcome, EffectFailed):
            rec.failed[outcome.kind.value] += 1
        elif isinstance(outcome, EniCreated):
            rec.enis_created += 1
        elif isinstance(outcome, EniFreed):
            rec.enis_freed += 1
        removed = self.ipam.apply(outcome, self.clock.now)
        if removed:
            rec.force_removed_allocations(removed)
        self._serve()
        self.kick()

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, _arg: object) -> None:
        now = self.clock.now
        report = self.ipam.reconcile(ObservedNode(tuple(self.metadata.enis())), now)
        if report.force_removed:
            self.rec.force_removed_allocations(report.force_removed)
        self._serve()
        self.kick()
        self.clock.at(now + self.reconcile_interval_s, self._reconcile)
