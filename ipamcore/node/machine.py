"""The node: every decision of a node agent, sans I/O (inputs with ``now`` in, commands out).

    node = Node(NodeConfig(...))
    commands = node.receive(Start(now))      # ReadIdentity(cid=1)
    commands = node.receive(IdentityRead(now, 1, identity))
    ...
    if node.wake_at is not None and now >= node.wake_at:
        commands = node.receive(Tick(now))

An executor performs each command and feeds back the input that answers it (see
:mod:`ipamcore.node.commands`); the daemon (asyncio, worker threads) and the simulator
(virtual time over the fake cloud) are two such executors, so they make the same decisions
by construction, and a log of the inputs replays every command.

What the node owns:

* start-up, in this order: identity; instance limits (the table, else EC2); EC2's view of the
  attached ENIs (instance metadata is only compared: it may be stale and list ENIs already
  gone, upstream #3887); subnets (subnet discovery); the leaked-ENI sweep of this instance
  (at start no creation of this node can be in flight, so any age counts); the checkpoint
  (missing, this project's, upstream's, unreadable or from a newer version, each with a log
  line and, for the last two, a quarantine of every address for
  ``max(IP_COOLDOWN_PERIOD, CORRUPT_QUARANTINE_S)``); the restore, dropping allocations whose
  pod's netns or host veth is gone (the executor checks, off its event loop); pending DELs;
  ENI then node datapath setup; a durable checkpoint; ready. EC2 calls at start are retried
  with a capped backoff while EC2 throttles or cannot be reached;
* requests: ADD (assign, or wait FIFO with a deadline while the policy brings addresses;
  then pod setup and a durable checkpoint at once, reply once both are done, unwind on
  failure), DEL, CHECK, GC; requests for one key never interleave;
* group commit: one checkpoint write in flight; every change made while it runs is in the
  next write, which all the requests waiting on it share (persist before acknowledging);
* effects: the pool policy every ``policy_interval_s`` and at once when kicked; a new ENI is
  used only once instance metadata lists it (polled, bounded), then set up, then waiting
  ADDs are served;
* timers: reconciliation with EC2, the leaked-ENI cleanup (ENIs over
  :data:`~ipamcore.node.config.LEAKED_ENI_AGE_S` old; a per-node spread of up to 10 % of the
  interval so a fleet restarted together does not call EC2 at the same second), and the
  "call me next at" value :attr:`Node.wake_at`.
"""

from __future__ import annotations

import collections
import heapq
import math
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ipamcore.checkpoint import Checkpoint
from ipamcore.effects import Effect
from ipamcore.errors import FailureKind, PoolExhausted, UnknownInstanceType
from ipamcore.events import EffectFailed, EniCreated, Outcome
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.model import (
    SUBNET_DISCOVERY_TAG,
    Allocation,
    AllocationKey,
    InstanceIdentity,
    ObservedEni,
    ObservedNode,
)
from ipamcore.netspec import (
    EniNetwork,
    NodeNetwork,
    PodNetwork,
    host_veth_name,
    route_table_for_device,
)
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node import replies
from ipamcore.node.config import CORRUPT_QUARANTINE_S, LEAKED_ENI_AGE_S, NodeConfig
from ipamcore.node.tasks import DURABLE, AddressWait, Sleep, Task, TaskGen, Turn
from ipamcore.views import EniView, PoolStats

INF = math.inf
# The key upstream gave entries it migrated from the CRI checkpoint (no network or ifname).
LEGACY_NETWORK = "_migrated-from-cri"
LEGACY_IF_NAME = "unknown"
_RETRYABLE_AT_START = (FailureKind.THROTTLED, FailureKind.OTHER)


class Node:
    """One node agent's decisions. Not thread-safe: feed it from one thread."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.ipam: Ipam | None = None
        self.identity: InstanceIdentity | None = None
        self.ready = False
        self.stopping = False
        self.quarantine_until = 0.0
        # The netns path each allocation's pod lives in (from its ADD): persisted with the
        # checkpoint, so the restore can ask whether the pod is still there.
        self.hints: dict[AllocationKey, str] = {}
        self.saves = 0  # checkpoint writes completed
        self.effects_in_flight = 0
        self._now = 0.0
        self._out: list[c.Command] = []
        self._next_cid = 1
        self._awaiting: dict[int, tuple[Task, int]] = {}
        self._sleepers: list[tuple[float, int, Task, int]] = []
        self._sleep_seq = 0
        self._waiters: collections.deque[AddressWait] = collections.deque()
        self._waiting_by_key: dict[AllocationKey, AddressWait] = {}
        self._adds_open: set[int] = set()  # request ids of ADDs not answered yet
        self._abandoned: set[int] = set()  # ... whose client is gone
        self._holders: dict[AllocationKey, collections.deque[tuple[Task, int]]] = {}
        self._persist_cid: int | None = None
        self._batch: list[tuple[Task, int]] = []
        self._next_batch: list[tuple[Task, int]] = []
        self._kicked = False
        self._policy_due = INF
        self._reconcile_due = INF
        self._leaked_due = INF
        self._leaked_rounds = 0
        self._enis_to_set_up: set[str] = set()
        self._early: list[i.Request] = []
        self._dispatch: dict[type, Callable[[Any], None]] = {
            i.Start: self._on_start,
            i.Tick: self._on_tick,
            i.Stop: self._on_stop,
            i.Flush: self._on_flush,
            i.Cancel: self._on_cancel,
            i.Add: self._on_request,
            i.Del: self._on_request,
            i.Check: self._on_request,
            i.Gc: self._on_request,
        }

    # ================================================================ driving
    def receive(self, inp: i.Input) -> list[c.Command]:
        """Feed one input; returns the commands it leads to, in order."""
        self._now = inp.now
        handler = self._dispatch.get(type(inp))
        if handler is None:
            self._answer(inp)  # type: ignore[arg-type]
        else:
            handler(inp)
        if self._waiters:
            self._serve_waiters()
        out, self._out = self._out, []
        return out

    @property
    def wake_at(self) -> float | None:
        """When the node next needs a :class:`~ipamcore.node.inputs.Tick` (None: only
        inputs can change anything)."""
        if self._kicked:
            return self._now
        wake = min(self._policy_due, self._reconcile_due, self._leaked_due)
        if self._sleepers:
            wake = min(wake, self._sleepers[0][0])
        if self._waiters:
            wake = min(wake, self._waiters[0].deadline)
        return None if wake == INF else wake

    @property
    def waiting(self) -> int:
        """ADDs waiting for an address."""
        return len(self._waiters)

    def waiting_since(self) -> list[float]:
        """When each waiting ADD began to wait, oldest first."""
        return [w.since for w in self._waiters]

    # ================================================================ queries
    @property
    def core(self) -> Ipam:
        if self.ipam is None:
            raise RuntimeError("the node has not started")
        return self.ipam

    def checkpoint(self) -> Checkpoint:
        """What a :class:`~ipamcore.node.commands.Persist` writes: the core's checkpoint
        with each allocation's netns path."""
        return attrs.evolve(self.core.checkpoint(), netns=tuple(self.hints.items()))

    def stats(self, now: float) -> PoolStats:
        return self.core.stats(now)

    def eni_views(self, now: float) -> list[EniView]:
        return self.core.eni_views(now)

    def pod_network(
        self, allocation: Allocation, netns: str, mtu: int | None = None, if_name: str = ""
    ) -> PodNetwork:
        """The datapath of ``allocation``'s pod. The host veth is upstream's name from the
        pod's namespace and name; the container id stands in for a pod without Kubernetes
        metadata, so two such pods never share a name."""
        assert allocation.ipv4 is not None
        return PodNetwork(
            netns_path=netns,
            if_name=if_name or allocation.key.if_name,
            host_veth=self._host_veth(allocation),
            ipv4=allocation.ipv4,
            mtu=mtu or self.config.pod_mtu,
            route_table=route_table_for_device(allocation.device_index),
        )

    def _host_veth(self, allocation: Allocation) -> str:
        pod = allocation.pod
        return host_veth_name(
            pod.namespace, pod.name or allocation.key.container_id, self.config.veth_prefix
        )

    def eni_network(self, eni: ObservedEni) -> EniNetwork | None:
        """The datapath setup of a secondary ENI (None for the primary or unmanaged ones)."""
        table = route_table_for_device(eni.device_index)
        if table is None or eni.unmanaged or eni.is_efa or eni.is_trunk:
            return None
        return EniNetwork(
            mac=eni.mac,
            primary_ip=eni.primary_ip,
            subnet_cidr=eni.subnet_cidr,
            gateway=eni.subnet_gateway,
            route_table=table,
            mtu=self.config.eni_mtu,
        )

    # ================================================================ tasks
    def _cid(self) -> int:
        cid = self._next_cid
        self._next_cid = cid + 1
        return cid

    def _spawn(self, gen: TaskGen, name: str) -> None:
        self._step(Task(gen, name), None)

    def _step(self, task: Task, value: Any) -> None:
        try:
            want = task.gen.send(value)
        except StopIteration:
            return
        if type(want) is tuple:
            task.single = False
            task.results = [None] * len(want)
            task.missing = len(want)
            for slot, one in enumerate(want):
                self._park(task, slot, one)
        else:
            task.single = True
            task.missing = 1
            self._park(task, 0, want)

    def _resolve(self, task: Task, slot: int, value: Any) -> None:
        if task.single:
            self._step(task, value)
            return
        task.results[slot] = value
        task.missing -= 1
        if task.missing == 0:
            self._step(task, tuple(task.results))

    def _park(self, task: Task, slot: int, want: Any) -> None:
        if want is DURABLE:
            if self._persist_cid is None:
                self._start_persist()
                self._batch.append((task, slot))
            else:
                self._next_batch.append((task, slot))
        elif type(want) is Turn:
            queue = self._holders.get(want.key)
            if queue is None:
                self._holders[want.key] = collections.deque()
                self._resolve(task, slot, None)
            else:
                queue.append((task, slot))
        elif type(want) is Sleep:
            self._sleep_seq += 1
            heapq.heappush(self._sleepers, (want.until, self._sleep_seq, task, slot))
        elif type(want) is AddressWait:
            want.task = task
            self._waiters.append(want)
        else:  # a command answered by an input with its cid
            self._out.append(want)
            self._awaiting[want.cid] = (task, slot)

    def _leave(self, key: AllocationKey) -> None:
        """The task holding ``key`` is done with it: the next one waiting takes it."""
        queue = self._holders[key]
        if queue:
            task, slot = queue.popleft()
            self._resolve(task, slot, None)
        else:
            del self._holders[key]

    def _answer(self, answer: i.Answer) -> None:
        cid = answer.cid
        if cid == self._persist_cid:
            self._persisted(answer)
            return
        waiting = self._awaiting.pop(cid, None)
        if waiting is not None:
            self._resolve(waiting[0], waiting[1], answer)

    # ================================================================ group commit
    def _start_persist(self) -> None:
        self._persist_cid = self._cid()
        self._out.append(c.Persist(self._persist_cid))

    def _persisted(self, answer: i.Answer) -> None:
        error = answer if isinstance(answer, i.Failed) else None
        if error is None:
            self.saves += 1
        batch, self._batch, self._persist_cid = self._batch, [], None
        if self._next_batch:
            self._batch, self._next_batch = self._next_batch, []
            self._start_persist()
        for task, slot in batch:
            self._resolve(task, slot, error)

    # ================================================================ out
    def _log(self, level: str, event: str, **fields: object) -> None:
        self._out.append(c.Log(level, event, tuple(fields.items())))

    def _count(self, metric: str, label: str = "", amount: int = 1) -> None:
        self._out.append(c.Count(metric, label, amount))

    def _kick(self) -> None:
        """Run the pool policy at the next tick (an ADD found the pool short, or state
        changed); kicks before that tick make one pass."""
        self._kicked = True

    # ================================================================ life cycle
    def _on_start(self, _inp: i.Start) -> None:
        self._spawn(self._boot(), "boot")

    def _on_tick(self, _inp: i.Tick) -> None:
        now = self._now
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, task, slot = heapq.heappop(self._sleepers)
            self._resolve(task, slot, None)
        if not self.ready or self.stopping:
            return
        if self._kicked or now >= self._policy_due:
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
        self._policy_due = self._reconcile_due = self._leaked_due = INF
        sleepers, self._sleepers = self._sleepers, []
        for _, _, task, slot in sleepers:
            self._resolve(task, slot, None)

    def _on_flush(self, inp: i.Flush) -> None:
        self._spawn(self._flush(inp.request_id), "flush")

    def _flush(self, request_id: int) -> TaskGen:
        error = yield DURABLE
        if error is None:
            self._out.append(c.Reply(request_id))
        else:
            self._out.append(c.Reply(request_id, replies.INTERNAL, error.message))

    # ================================================================ requests
    def _on_request(self, req: i.Request) -> None:
        if self.stopping:
            self._out.append(
                c.Reply(req.request_id, replies.SHUTTING_DOWN, "ipamd is stopping; try again")
            )
            return
        if not self.ready:
            self._early.append(req)
            return
        kind = type(req)
        if kind is i.Add:
            assert isinstance(req, i.Add)
            self._count("add_req")
            waiting = self._waiting_by_key.get(req.key)
            if waiting is not None:
                # A retried ADD of an attachment still waiting: the newer request takes the
                # older one's place in the queue (and its deadline); the older is answered now,
                # so same-key ADDs never wait one after another.
                older = waiting.request
                superseded = "superseded by a newer ADD for this attachment"
                self._reply(older.request_id, replies.POOL_EMPTY, superseded)
                waiting.request = req
                self._adds_open.add(req.request_id)
                return
            self._adds_open.add(req.request_id)
            self._spawn(self._add(req), "add")
        elif kind is i.Del:
            assert isinstance(req, i.Del)
            waiting = self._waiting_by_key.get(req.key)
            if waiting is not None:  # the pod is gone before its ADD got an address
                self._stop_waiting(waiting, "a DEL for this attachment arrived")
            self._spawn(self._delete(req), "del")
        elif kind is i.Check:
            assert isinstance(req, i.Check)
            self._spawn(self._check(req), "check")
        else:
            assert isinstance(req, i.Gc)
            self._spawn(self._gc(req), "gc")

    def _reply(self, request_id: int, error: str = "", message: str = "", **kw: Any) -> None:
        self._adds_open.discard(request_id)
        self._abandoned.discard(request_id)
        self._out.append(c.Reply(request_id, error, message, **kw))

    def _on_cancel(self, inp: i.Cancel) -> None:
        rid = inp.request_id
        if rid not in self._adds_open:
            return  # answered already, or not an ADD: a DEL or GC goes on
        for wait in self._waiting_by_key.values():
            if wait.request.request_id == rid:
                self._stop_waiting(wait, "the client is gone")
                return
        self._abandoned.add(rid)  # set up and persisted, then undone (see _add_holding)

    def _stop_waiting(self, wait: AddressWait, why: str) -> None:
        wait.cancelled = why
        self._waiters.remove(wait)
        assert wait.task is not None
        self._resolve(wait.task, 0, None)

    def _add(self, req: i.Add) -> TaskGen:
        yield Turn(req.key)
        yield from self._add_holding(req)
        self._leave(req.key)

    def _add_holding(self, req: i.Add) -> TaskGen:
        ipam, key = self.core, req.key
        legacy = self._legacy(key)
        existed = legacy is not None or ipam.get(key) is not None
        try:
            # An upstream entry of this container (legacy key) is its address: never a second.
            allocation: Allocation | None = legacy or ipam.assign(key, req.pod, self._now)
        except PoolExhausted:
            wait = AddressWait(key, req.pod, self._now, self._now + self.config.add_wait_s, req)
            allocation = yield from self._wait_for_address(wait)
            req = wait.request  # a newer ADD for this attachment may have taken the place
        if allocation is None:
            return
        if allocation.ipv4 is None:
            ipam.release(key, self._now)
            self._reply(
                req.request_id, replies.INTERNAL, "IPv6 pods are not supported by this daemon"
            )
            return
        net = self.pod_network(allocation, req.netns, req.mtu, key.if_name)
        if req.netns:
            self.hints[allocation.key] = req.netns
        # The datapath setup and the durable commit run at once.
        setup, commit_error = yield (c.SetUpPod(self._cid(), net, existed), DURABLE)
        setup_failed = isinstance(setup, i.Failed)
        if not existed and req.request_id in self._abandoned and not setup_failed:
            # Nobody will read the reply: keep no address for it (undone as a failure).
            commit_error = i.Failed(self._now, 0, "the client is gone before the reply")
        if (setup_failed or commit_error is not None) and existed:
            # A repeated ADD of a pod that already had this address (durable since its first
            # ADD): a failure now never takes the address or the network from a live pod.
            code = replies.DATAPATH_FAILED if setup_failed else replies.INTERNAL
            message = setup.describe() if setup_failed else commit_error.describe()
            self._log(
                "error",
                "repeated add failed; the pod keeps its address",
                key=str(key),
                code=code,
                error=message,
            )
            self._reply(req.request_id, code, message)
            return
        if setup_failed or commit_error is not None:
            if not setup_failed:
                yield from self._teardown_quietly(allocation, req.netns)
            ipam.release(key, self._now)
            self.hints.pop(key, None)
            error = yield DURABLE
            if error is not None:
                self._log("error", "checkpoint write failed", error=error.message)
            code = replies.DATAPATH_FAILED if setup_failed else replies.INTERNAL
            message = setup.describe() if setup_failed else commit_error.describe()
            self._log("error", "add failed", key=str(key), code=code, error=message)
            self._reply(req.request_id, code, message)
            return
        self._log("debug", "add", key=str(key), ipv4=allocation.ipv4)
        self._reply(req.request_id, allocation=allocation, pod=net)

    def _legacy(self, key: AllocationKey) -> Allocation | None:
        """The allocation an upstream checkpoint migrated from CRI holds for ``key``'s
        container (upstream's key ``_migrated-from-cri/<container>/unknown``): DEL, CHECK and
        ADD fall back to it as upstream's datastore does, so it can be freed and is never
        doubled by a second address."""
        if key.network_name == LEGACY_NETWORK:
            return None
        return self.core.get(AllocationKey(LEGACY_NETWORK, key.container_id, LEGACY_IF_NAME))

    def _wait_for_address(self, wait: AddressWait) -> Any:
        """Wait (FIFO) for an address until ``add_wait_s`` passes; the policy counts the
        waiter and is kicked at once."""
        self._count("no_ip")
        self._waiting_by_key[wait.key] = wait
        self._kick()
        allocation = yield wait
        self._waiting_by_key.pop(wait.key, None)
        req = wait.request
        if allocation is not None:
            return allocation
        if wait.cancelled:
            self._reply(
                req.request_id, replies.POOL_EMPTY,
                f"cancelled while waiting for an address: {wait.cancelled}",
            )  # fmt: skip
            return None
        stats = self.core.stats(self._now)
        self._reply(
            req.request_id, replies.POOL_EMPTY,
            f"no address available within {self.config.add_wait_s:g}s "
            f"({stats.assigned}/{stats.total} assigned, {stats.cooling} cooling)",
        )  # fmt: skip
        return None

    def _serve_waiters(self) -> None:
        """Waiting ADDs take addresses first come, first served, until the pool is dry;
        then those whose time is up get their answer."""
        waiters, assign, now = self._waiters, self.core.assign, self._now
        while waiters:
            wait = waiters[0]
            try:
                allocation = assign(wait.key, wait.pod, now)
            except PoolExhausted:
                break
            waiters.popleft()
            assert wait.task is not None
            self._resolve(wait.task, 0, allocation)
        while waiters and waiters[0].deadline <= now:
            wait = waiters.popleft()
            assert wait.task is not None
            self._resolve(wait.task, 0, None)

    def _delete(self, req: i.Del) -> TaskGen:
        yield Turn(req.key)
        yield from self._delete_holding(req)
        self._leave(req.key)

    def _delete_holding(self, req: i.Del) -> TaskGen:
        ipam, key = self.core, req.key
        allocation = ipam.get(key) or self._legacy(key)
        if allocation is None:
            self._count("del_req", "unknown")
            self._reply(req.request_id, released=0)
            return
        if allocation.ipv4 is not None:
            netns = req.netns or self.hints.get(allocation.key, "")
            net = self.pod_network(allocation, netns, if_name=key.if_name)
            done = yield c.TearDownPod(self._cid(), net)
            if isinstance(done, i.Failed):
                self._log("error", "teardown failed", key=str(key), error=done.message)
                self._reply(
                    req.request_id, replies.DATAPATH_FAILED, f"teardown failed: {done.message}"
                )
                return
        key = allocation.key
        ipam.release(key, self._now)
        netns = self.hints.pop(key, "")
        self._count("del_req", "PodDeleted")
        error = yield DURABLE
        if error is not None:
            # The file still holds the allocation: so does memory, and a retried DEL frees it.
            self._keep_after_failed_write(((allocation, netns),))
            self._reply(
                req.request_id, replies.INTERNAL, f"checkpoint write failed: {error.message}"
            )
            return
        self._reply(req.request_id, released=1, allocation=allocation)

    def _check(self, req: i.Check) -> TaskGen:
        allocation = self.core.get(req.key) or self._legacy(req.key)
        if allocation is None or allocation.ipv4 is None:
            self._reply(req.request_id, replies.NOT_FOUND, f"no address for {req.key}")
            return
        net = self.pod_network(allocation, req.netns, req.mtu, req.key.if_name)
        checked = yield c.CheckPod(self._cid(), net)
        if isinstance(checked, i.Failed):
            self._reply(req.request_id, replies.DATAPATH_FAILED, f"check failed: {checked.message}")
        elif checked.missing:
            self._reply(
                req.request_id,
                replies.DATAPATH_FAILED,
                "missing or wrong: " + ", ".join(checked.missing),
            )
        else:
            self._reply(req.request_id, allocation=allocation)

    def _gc(self, req: i.Gc) -> TaskGen:
        """Release this network's allocations whose attachment is not in the valid list."""
        stale = [
            a
            for a in self.core.allocations()
            if (
                a.key.network_name == req.network_name
                and (a.key.container_id, a.key.if_name) not in req.valid
            )
            or (  # an upstream entry: stale once no valid attachment is of its container
                a.key.network_name == LEGACY_NETWORK
                and a.key.if_name == LEGACY_IF_NAME
                and all(container != a.key.container_id for container, _ in req.valid)
            )
        ]
        released: list[tuple[Allocation, str]] = []
        for allocation in stale:
            yield Turn(allocation.key)
            if self.core.get(allocation.key) is not None:
                yield from self._teardown_quietly(allocation, "")
                self.core.release(allocation.key, self._now)
                released.append((allocation, self.hints.pop(allocation.key, "")))
            self._leave(allocation.key)
        if released:
            self._log("info", "gc released allocations", count=len(released))
            error = yield DURABLE
            if error is not None:
                self._keep_after_failed_write(released)
                self._reply(
                    req.request_id, replies.INTERNAL, f"checkpoint write failed: {error.message}"
                )
                return
        self._reply(req.request_id, released=len(released))

    def _keep_after_failed_write(self, released: Iterable[tuple[Allocation, str]]) -> None:
        """Bind released allocations again after the write of their release failed, so that
        memory, the answer (an error) and the file agree: the address stays the pod's until a
        retried DEL (or GC) is durable. (A released address cools, so nobody took it since.)"""
        pairs = list(released)
        report = self.core.restore(Checkpoint(allocations=tuple(a for a, _ in pairs)), self._now)
        for allocation, reason in report.dropped:
            self._log(
                "error",
                "released allocation could not be kept after a failed checkpoint write",
                key=str(allocation.key),
                reason=reason,
            )
        for allocation, netns in pairs:
            if netns:
                self.hints[allocation.key] = netns

    def _teardown_quietly(self, allocation: Allocation, netns: str) -> Any:
        """Best-effort teardown (start-up, GC, an unwound ADD): a failure is logged."""
        if allocation.ipv4 is None:
            return True
        netns = netns or self.hints.get(allocation.key) or ""
        done = yield c.TearDownPod(self._cid(), self.pod_network(allocation, netns))
        if isinstance(done, i.Failed):
            self._log("warning", "teardown failed", key=str(allocation.key), error=done.message)
            return False
        return True

    # ================================================================ effects
    def _run_policy(self) -> None:
        now = self._now
        self._kicked = False
        self._policy_due = now + self.config.policy_interval_s
        for effect in self.core.plan(now, waiting=len(self._waiters)):
            self._log("info", "effect", **_describe(effect))
            self.effects_in_flight += 1
            self._spawn(self._perform(effect), "effect")

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
        removed = self.core.apply(outcome, self._now)
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

    # ================================================================ timers
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
        before = set(ipam.pool.enis)
        report = ipam.reconcile(ObservedNode(described.enis), self._now)
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

    # ================================================================ start-up
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
        ipam = self.ipam = Ipam(self.config.pool, limits)
        for notice in ipam.notices:
            self._log("warning", notice)
        now = self._now
        enis = yield from self._observe_enis()
        if isinstance(enis, i.Failed):
            self._abort(enis, f"cannot describe the instance's ENIs: {enis.message}")
            return
        ipam.load(enis, now)
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
            report = ipam.restore(checkpoint, now, keep=lambda a: a.key not in gone)
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

        for eni in sorted(enis, key=lambda e: e.device_index):
            yield from self._setup_eni(eni)
        primary = ipam.primary_eni()
        if primary is not None:
            node = NodeNetwork(
                primary_ip=primary.primary_ip,
                vpc_cidrs=identity.vpc_cidrs,
                external_snat=self.config.external_snat,
            )
            done = yield c.SetUpNode(self._cid(), node)
            if isinstance(done, i.Failed):
                self._abort(done, f"node datapath setup failed: {done.message}")
                return
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
        self._kick()
        self._policy_due = self._now + self.config.policy_interval_s
        self._reconcile_due = self._now + self.config.reconcile_interval_s
        if self.config.leaked_eni_cleanup:
            self._schedule_leaked_cleanup()
        early, self._early = self._early, []
        for req in early:
            self._on_request(req)

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
            c.PodToCheck(a.key, self.hints[a.key], self._host_veth(a))
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
                self.hints.pop(pending.key, None)
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


def _describe(effect: Effect) -> dict[str, object]:
    fields = attrs.asdict(effect)
    fields.pop("effect_id", None)
    return {"effect_id": effect.effect_id, **fields}
