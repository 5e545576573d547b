"""One simulated node agent: the daemon's :class:`ipamcore.node.Node`, executed in virtual time.

The simulator is a second executor of the node's commands (the daemon,
:mod:`adapters.ipamd.executor`, is the first), so the two make the same decisions by
construction: the start-up order, waiting ADDs, the wait for instance metadata to show a new
ENI (so ``metadata_lag_s`` delays a new ENI's use here as on a node), reconciliation with EC2,
the leaked-ENI cleanup. What differs is only how commands are performed:

* cloud calls go to the fake cloud's port at once; the answer is fed back
  ``port.last_latency_s`` (the call's virtual latency) later;
* instance metadata answers at once (its lag is the fake cloud's ``metadata_lag``);
* datapath commands and checkpoint writes succeed at once; there is no stored checkpoint and
  no pending DEL (a simulated node boots fresh);
* a pod waits for its address as long as it takes (no ADD deadline): a pod deleted while
  waiting counts as abandoned;
* a tick is scheduled at :attr:`Node.wake_at` on the simulator's clock;
* a node that joins late is built before its instance exists (``instance_id=None``) and
  :meth:`SimNode.launch` ed when it joins; a node that leaves is drained (:meth:`SimNode.drain`:
  every pod gets its DEL) and, once its instance is terminated, :meth:`SimNode.stop` ped: the
  answers and ticks still on the clock for it are dropped.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from adapters.simulator.clock import SimClock
from adapters.simulator.measures import Recorder
from backends.observe import OK, CallRecord
from backends.perform import perform
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, FreeEni, UnassignAddresses
from ipamcore.errors import CloudError
from ipamcore.events import EffectFailed, EniCreated, EniFreed
from ipamcore.ipam import Ipam
from ipamcore.model import AllocationKey, PodRef
from ipamcore.node import Node, NodeConfig
from ipamcore.node import commands as c
from ipamcore.node import inputs as i

if TYPE_CHECKING:
    from backends.fakecloud import FakeCloud

NETWORK_NAME = "aws-cni"
# the EC2 actions of the fake port's free_eni (an attached ENI)
FREE_ENI_ACTIONS = ("DescribeNetworkInterfaces", "DetachNetworkInterface", "DeleteNetworkInterface")
# Datapath setup and teardown and checkpoint writes succeed at once (see _perform).
_DONE_AT_ONCE = frozenset({c.SetUpPod, c.TearDownPod, c.Persist})
IF_NAME = "eth0"


class SimNode:
    """The agent of one simulated instance."""

    def __init__(
        self,
        index: int,
        cloud: FakeCloud,
        instance_id: str | None,
        clock: SimClock,
        config: PoolConfig,
        recorder: Recorder,
        policy_interval_s: float = 5.0,
        reconcile_interval_s: float = 60.0,
        leaked_eni_cleanup: bool = True,
        calls_take_effect_late: bool = False,
    ) -> None:
        self.index = index
        # True: each EC2 call takes effect when its latency has passed, as against the
        # daemon's fake (which sleeps, then acts); False: when issued, answered later.
        self.calls_take_effect_late = calls_take_effect_late
        self.cloud = cloud
        self.instance_id = ""
        self.instance_type = ""
        self.launched = self.leaving = self.gone = False
        if instance_id is not None:
            self.launch(instance_id)
        self.clock = clock
        self.node = Node(
            NodeConfig(
                pool=config,
                add_wait_s=math.inf,
                policy_interval_s=policy_interval_s,
                reconcile_interval_s=reconcile_interval_s,
                leaked_eni_cleanup=leaked_eni_cleanup,
            )
        )
        self.rec = recorder
        self.pods: dict[str, AllocationKey] = {}
        self.waiting: dict[str, float] = {}  # pod name -> when its ADD arrived
        self._requests: dict[int, str] = {}  # request id -> pod name
        self._next_request = 0
        self._answers: collections.deque[i.Input] = collections.deque()
        self._armed: float | None = None
        self._tick_gen = 0
        self.commands = 0
        self.type_waits: list[float] | None = None  # this node's waits (mixed clusters)
        # Called with each input and the commands it led to (tests, the flight recorder).
        self.observe: Callable[[i.Input, list[c.Command]], None] | None = None
        # Whether a pod (by name) is annotated for a multi-NIC attachment (None: none is).
        self.multi_nic: Callable[[str], bool] | None = None
        self.retry_s = 10.0  # an ADD answered with an error is sent again this long after
        # This node's EC2 calls: mutating ones by action; the time of its first IPv6 prefix
        # and the mutating calls it made after it (IPv6 needs none once the /80 is there).
        self.mutating: collections.Counter[str] = collections.Counter()
        self.v6_prefix_at: float | None = None
        self.mutating_after_v6 = 0

    def launch(self, instance_id: str) -> None:
        """Bind the agent to its (just launched) instance."""
        self.instance_id = instance_id
        self.instance_type = self.cloud.vpc.instance(instance_id).limits.instance_type
        self.port = self.cloud.port(instance_id, observer=self._heard)
        self.metadata = self.cloud.metadata(instance_id)
        self.launched = True

    @property
    def ipam(self) -> Ipam | None:
        return self.node.ipam

    def _heard(self, record: CallRecord) -> None:
        """One EC2 call of this node (the port's observer)."""
        if not record.mutating:
            return
        self.mutating[record.action] += 1
        if self.v6_prefix_at is not None:
            self.mutating_after_v6 += 1
        elif record.action == "AssignIpv6Addresses" and record.outcome == OK:
            self.v6_prefix_at = self.clock.now

    # ------------------------------------------------------------------ feeding
    def feed(self, inp: i.Input) -> None:
        """Feed one input, perform its commands, and feed their immediate answers too."""
        if self.gone:  # its instance is terminated: answers and ticks still due are dropped
            return
        answers = self._answers
        answers.append(inp)
        while answers:
            one = answers.popleft()
            commands = self.node.receive(one)
            if self.observe is not None:
                self.observe(one, commands)
            self.commands += len(commands)
            for command in commands:
                self._perform(command)
        wake = self.node.wake_at
        if wake is not None and wake != self._armed:
            self._armed = wake
            self._tick_gen += 1
            self.clock.at(wake, self._tick, self._tick_gen)

    def _tick(self, gen: int) -> None:
        if gen == self._tick_gen:
            self._armed = None
            self.feed(i.Tick(self.clock.now))

    def _later(self, delay: float, answer: i.Input) -> None:
        if delay > 0:
            self.clock.at(self.clock.now + delay, self.feed, answer)
        else:
            self._answers.append(answer)

    def _cloud(self, cid: int, call: Any, make: Any, actions: tuple[str, ...] = ()) -> None:
        """A fake-cloud call; its answer arrives after the call's virtual latency. With
        :attr:`calls_take_effect_late` the call is made then too (``actions``: the EC2
        actions it takes, whose latencies it waits), as the daemon's fake makes it."""
        if self.calls_take_effect_late and actions:
            delay = sum(self.cloud.latency_for(a) for a in actions)
            if delay > 0:
                self.clock.at(self.clock.now + delay, self._call_now, (cid, call, make))
                return
        now = self.clock.now
        try:
            result = call()
        except CloudError as exc:
            answer: i.Input = i.Failed(now, cid, str(exc), exc.kind, type(exc).__name__)
        else:
            answer = make(result)
        latency = self.port.last_latency_s
        self._later(latency, _at(answer, now + latency))

    def _call_now(self, arg: tuple[int, Any, Any]) -> None:
        """A call whose latency has passed: made now, answered now."""
        if self.gone:
            return
        cid, call, make = arg
        now = self.clock.now
        try:
            answer: i.Input = _at(make(call()), now)
        except CloudError as exc:
            answer = i.Failed(now, cid, str(exc), exc.kind, type(exc).__name__)
        self.feed(answer)

    def _effect_now(self, arg: tuple[c.PerformEffect, float]) -> None:
        """An effect whose main actions' latency has passed: performed now (its changes
        visible to EC2's describes and, after the metadata lag, to instance metadata);
        answered ``tail`` later (a Modify of DeleteOnTermination still to come)."""
        if self.gone:
            return
        cmd, tail = arg
        outcome = perform(self.port, self.instance_id, cmd.effect)
        self._count_outcome(outcome)
        now = self.clock.now
        if tail > 0:
            self.clock.at(now + tail, self.feed, i.EffectDone(now + tail, cmd.cid, outcome))
        else:
            self.feed(i.EffectDone(now, cmd.cid, outcome))

    def _effect_timing(self, effect: Any) -> tuple[float, float]:
        """(seconds until an effect's changes take effect, seconds more until its answer):
        the latencies of the EC2 actions :func:`backends.perform.perform` makes for it."""
        lat = self.cloud.latency_for
        if isinstance(effect, CreateEni):
            main = lat("CreateNetworkInterface") + lat("AttachNetworkInterface")
            if effect.device_index < 0:
                main += lat("DescribeInstances")
            tail = lat("ModifyNetworkInterfaceAttribute") if self.port.delete_on_termination else 0
            return main, tail
        if isinstance(effect, AssignAddresses):
            if effect.ipv6_prefix_count:
                return lat("AssignIpv6Addresses"), 0.0
            return lat("AssignPrivateIpAddresses"), 0.0
        if isinstance(effect, UnassignAddresses):
            calls = bool(effect.ipv4_addresses) + bool(effect.prefixes)
            return calls * lat("UnassignPrivateIpAddresses"), 0.0
        if isinstance(effect, FreeEni):
            return sum(lat(a) for a in FREE_ENI_ACTIONS), 0.0
        return 0.0, 0.0

    # ------------------------------------------------------------------ commands
    def _perform(self, cmd: c.Command) -> None:
        now = self.clock.now
        kind = type(cmd)
        if kind in _DONE_AT_ONCE:  # every pod's commands: first
            self._answers.append(i.Done(now, cmd.cid))  # type: ignore[union-attr]
        elif kind is c.Reply:
            assert isinstance(cmd, c.Reply)
            self._replied(cmd)
        elif kind is c.Count:
            assert isinstance(cmd, c.Count)
            if cmd.metric == "force_removed_ips":
                self.rec.force_removed += cmd.amount
        elif kind in (c.Log, c.Ready, c.Observe):
            pass
        elif kind is c.Abort:
            assert isinstance(cmd, c.Abort)
            raise RuntimeError(f"simulated node {self.index} could not start: {cmd.message}")
        elif kind is c.PerformEffect:
            assert isinstance(cmd, c.PerformEffect)
            if self.calls_take_effect_late:
                main, tail = self._effect_timing(cmd.effect)
                if main + tail > 0:
                    self.clock.at(now + main, self._effect_now, (cmd, tail))
                    return
            outcome = perform(self.port, self.instance_id, cmd.effect)
            self._count_outcome(outcome)
            latency = self.port.last_latency_s
            self._later(latency, i.EffectDone(now + latency, cmd.cid, outcome))
        elif kind is c.ReadMetadataEnis:
            assert isinstance(cmd, c.ReadMetadataEnis)
            self._answers.append(i.MetadataEnisRead(now, cmd.cid, tuple(self.metadata.enis())))
        elif kind is c.DescribeEnis:
            assert isinstance(cmd, c.DescribeEnis)
            self._cloud(
                cmd.cid,
                lambda: self.port.describe_enis(cmd.instance_id),
                lambda enis: i.EnisDescribed(now, cmd.cid, tuple(enis)),
                ("DescribeNetworkInterfaces",),
            )
        elif kind is c.DescribeSubnets:
            assert isinstance(cmd, c.DescribeSubnets)
            self._cloud(
                cmd.cid,
                lambda: self.port.describe_subnets(cmd.subnet_ids, cmd.tag_key),
                lambda subnets: i.SubnetsDescribed(now, cmd.cid, tuple(subnets)),
                ("DescribeSubnets",),
            )
        elif kind is c.FindLeakedEnis:
            assert isinstance(cmd, c.FindLeakedEnis)
            self._cloud(
                cmd.cid,
                lambda: self.port.find_leaked_enis(
                    cmd.instance_id, now, cmd.any_instance, min_age_s=cmd.min_age_s
                ),
                lambda ids: i.LeakedEnisFound(now, cmd.cid, tuple(ids)),
                ("DescribeNetworkInterfaces",),
            )
        elif kind is c.FreeLeakedEni:
            assert isinstance(cmd, c.FreeLeakedEni)
            self._cloud(
                cmd.cid, lambda: self.port.free_eni(cmd.eni_id), lambda _: i.Done(now, cmd.cid),
                FREE_ENI_ACTIONS,
            )
        elif kind is c.ReadIdentity:
            assert isinstance(cmd, c.ReadIdentity)
            self._answers.append(i.IdentityRead(now, cmd.cid, self.metadata.identity()))
        elif kind is c.DescribeInstanceType:
            assert isinstance(cmd, c.DescribeInstanceType)
            self._cloud(
                cmd.cid,
                lambda: self.port.describe_instance_type(cmd.instance_type),
                lambda limits: i.InstanceTypeDescribed(now, cmd.cid, limits),
                ("DescribeInstanceTypes",),
            )
        elif kind is c.ReadCheckpoint:
            assert isinstance(cmd, c.ReadCheckpoint)
            self._answers.append(i.CheckpointRead(now, cmd.cid, None))
        elif kind is c.ReadPendingDels:
            assert isinstance(cmd, c.ReadPendingDels)
            self._answers.append(i.PendingDelsRead(now, cmd.cid, ()))
        elif kind is c.CheckPodsPresent:
            assert isinstance(cmd, c.CheckPodsPresent)
            self._answers.append(i.PodsPresent(now, cmd.cid, frozenset()))
        elif kind is c.CheckPod:
            assert isinstance(cmd, c.CheckPod)
            self._answers.append(i.PodChecked(now, cmd.cid, ()))
        elif kind is c.RemoveStale:
            assert isinstance(cmd, c.RemoveStale)
            self._answers.append(i.StaleRemoved(now, cmd.cid, ()))
        else:  # datapath setup and teardown, checkpoint writes, file removals: done at once
            self._answers.append(i.Done(now, cmd.cid))  # type: ignore[union-attr]

    def _count_outcome(self, outcome: Any) -> None:
        rec = self.rec
        if isinstance(outcome, EffectFailed):
            rec.failed[outcome.kind.value] += 1
        elif isinstance(outcome, EniCreated):
            rec.enis_created += 1
        elif isinstance(outcome, EniFreed):
            rec.enis_freed += 1

    def _replied(self, reply: c.Reply) -> None:
        name = self._requests.pop(reply.request_id, None)
        if name is None:
            return
        since = self.waiting.pop(name, None)
        if since is None:  # a DEL's reply, or an ADD cancelled by its pod's DEL
            return
        if reply.error:
            # Kubelet retries a failed sandbox (e.g. an ADD whose wait for an address ran
            # out): the same ADD again, the wait running on.
            self.waiting[name] = since
            self.rec.add_retries += 1
            self.clock.at(self.clock.now + self.retry_s, self._retry, (name, since))
            return
        assert reply.allocation is not None
        self.pods[name] = reply.allocation.key
        self.rec.served(since, self.clock.now)
        if reply.extra:
            self.rec.multi_nic_served(1 + len(reply.extra))
        if self.v6_prefix_at is not None and since > self.v6_prefix_at:
            self.rec.v6_pods_after_prefix += 1
            if self.clock.now > since:
                self.rec.v6_waits_after_prefix += 1
        if self.type_waits is not None:
            self.type_waits.append(self.clock.now - since)

    # ------------------------------------------------------------------ events
    def boot(self, _arg: object = None) -> None:
        self.feed(i.Start(self.clock.now))

    def _request_id(self, name: str) -> int:
        self._next_request += 1
        self._requests[self._next_request] = name
        return self._next_request

    def pod_add(self, name: str) -> None:
        now = self.clock.now
        self.rec.pod_events += 1
        self.waiting[name] = now
        self._send_add(name)

    def _send_add(self, name: str) -> None:
        key = AllocationKey(NETWORK_NAME, f"{self.index}-{name}", IF_NAME)
        multi = self.multi_nic is not None and self.multi_nic(name)
        req = i.Add(self.clock.now, self._request_id(name), key, PodRef("default", name),
                    multi_nic=multi)  # fmt: skip
        self.feed(req)

    def _retry(self, arg: tuple[str, float]) -> None:
        """Kubelet's retry of a failed ADD, unless the pod is gone (or came back anew)."""
        name, since = arg
        if not self.gone and not self.leaving and self.waiting.get(name) == since:
            self._send_add(name)

    def pod_del(self, name: str) -> None:
        self.rec.pod_events += 1
        if self.waiting.pop(name, None) is not None:
            self.rec.abandoned += 1
            key = AllocationKey(NETWORK_NAME, f"{self.index}-{name}", IF_NAME)
        else:
            found = self.pods.pop(name, None)
            if found is None:
                return
            key = found
        self.feed(i.Del(self.clock.now, self._request_id(name), key))

    # ------------------------------------------------------------------ leaving
    def drain(self) -> list[str]:
        """The node leaves: every pod on it (waiting ones too) gets its DEL, as kubelet
        tears down evicted pods; returns their names (to reschedule elsewhere)."""
        self.leaving = True
        names = [*self.waiting, *self.pods]
        now = self.clock.now
        for name in names:
            key = self.pods.pop(name, None)
            if key is None:
                self.waiting.pop(name)
                key = AllocationKey(NETWORK_NAME, f"{self.index}-{name}", IF_NAME)
            self.feed(i.Del(now, self._request_id(name), key))
        return names

    def stop(self) -> None:
        """Its instance is gone: nothing more is fed to the node."""
        self.gone = True
        self._answers.clear()

    @property
    def load(self) -> int:
        """Pods on the node (with an address or waiting for one)."""
        return len(self.pods) + len(self.waiting)


def _at(answer: i.Input, now: float) -> i.Input:
    """``answer`` as of ``now`` (when its latency has passed)."""
    return attrs.evolve(answer, now=now)
