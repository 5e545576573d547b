"""The node's engine: tasks resumed by inputs, the queue of waiting ADDs, group commit,
per-key turns, what it emits (commands, log lines, counters) and its queries.

The decisions live in the layers above it (:mod:`.upkeep`, :mod:`.requests`,
:mod:`.startup`); :class:`~ipamcore.node.machine.Node` puts them together.
"""

from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Callable
from typing import Any

import attrs

from ipamcore.cards import attachment_index
from ipamcore.checkpoint import ChangeTracker, Checkpoint
from ipamcore.errors import PoolExhausted
from ipamcore.ipam import Ipam
from ipamcore.model import (
    Allocation,
    AllocationKey,
    InstanceIdentity,
    ObservedEni,
)
from ipamcore.netspec import (
    EniNetwork,
    PodNetwork,
    attachment_names,
    egress_v4_for,
    egress_v6_for,
    host_veth_name,
    route_table_for_device,
)
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node.config import NodeConfig
from ipamcore.node.tasks import DURABLE, AddressWait, CardWait, Sleep, Task, TaskGen, Turn
from ipamcore.views import EniView, PoolStats

INF = math.inf


class Runner:
    """State and mechanics shared by the node's decisions (see :mod:`.tasks` for the waits)."""

    """One node agent's decisions. Not thread-safe: feed it from one thread."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.ipam: Ipam | None = None
        # From Kubernetes, kept for an Ipam made later (inputs may come before start-up).
        self.eniconfig: i.EniConfigChanged | None = None
        self.node_max_pods: int | None = None
        self.identity: InstanceIdentity | None = None
        self.ready = False
        self.stopping = False
        self.quarantine_until = 0.0
        # The netns path each allocation's pod lives in (from its ADD): persisted with the
        # checkpoint, so the restore can ask whether the pod is still there.
        self.hints: dict[AllocationKey, str] = {}
        self.saves = 0  # checkpoint writes completed
        # The keys and addresses changed since the last Persist (what the next one carries);
        # a change it does not track entry by entry makes the next Persist a whole write.
        self.changes = ChangeTracker()
        self.effects_in_flight = 0
        self._now = 0.0
        self._out: list[c.Command] = []
        self._next_cid = 1
        self._awaiting: dict[int, tuple[Task, int]] = {}
        self._sleepers: list[tuple[float, int, Task, int]] = []
        self._sleep_seq = 0
        self._waiters: collections.deque[AddressWait] = collections.deque()
        self._waiting_by_key: dict[AllocationKey, AddressWait] = {}
        # Multi-NIC ADDs waiting for addresses on cards above 0 (FIFO per card)
        self._card_waiters: list[CardWait] = []
        self._adds_open: set[int] = set()  # request ids of ADDs not answered yet
        self._abandoned: set[int] = set()  # ... whose client is gone
        self._holders: dict[AllocationKey, collections.deque[tuple[Task, int]]] = {}
        self._persist_cid: int | None = None
        self._batch: list[tuple[Task, int]] = []
        self._next_batch: list[tuple[Task, int]] = []
        self._kicked = False
        # The policy runs at ``_policy_due`` (requests' changes gathered for up to
        # ``policy_interval_s``, time-driven passes at most that often), or at ``_core_wake``
        # (the core's next_wake_at: a cooldown, pause, backoff or effect expiry ends) at once
        # while ADDs wait for an address.
        self._policy_due = INF
        self._core_wake = INF
        self._reconcile_due = INF
        self._leaked_due = INF
        self._leaked_rounds = 0
        self._enis_to_set_up: set[str] = set()
        # Whether an allocation under upstream's legacy key (migrated from CRI) may be in the
        # pool: until one is restored (or an ADD uses that network), requests skip the lookup.
        self._legacy_possible = False
        self._early: list[i.Request] = []
        self._dispatch: dict[type, Callable[[Any], None]] = {}  # filled by Node

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
        if self._card_waiters:
            self._serve_card_waiters()
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
            wake = min(wake, self._waiters[0].deadline, self._core_wake)
        if self._card_waiters:
            wake = min(wake, min(w.deadline for w in self._card_waiters), self._core_wake)
        return None if wake == INF else wake

    @property
    def waiting(self) -> int:
        """ADDs waiting for an address (on card 0, or a multi-NIC pod's on other cards)."""
        return len(self._waiters) + len(self._card_waiters)

    def waiting_since(self) -> list[float]:
        """When each waiting ADD began to wait, oldest first."""
        return sorted([w.since for w in self._waiters] + [w.since for w in self._card_waiters])

    def card_waiting(self) -> dict[int, int]:
        """Network card above 0 -> multi-NIC ADDs waiting for an address on it."""
        counts: dict[int, int] = {}
        for wait in self._card_waiters:
            for card in wait.missing:
                counts[card] = counts.get(card, 0) + 1
        return counts

    @property
    def core(self) -> Ipam:
        """The started node's :class:`~ipamcore.ipam.Ipam` (RuntimeError before start)."""
        if self.ipam is None:
            raise RuntimeError("the node has not started")
        return self.ipam

    def checkpoint(self) -> Checkpoint:
        """What a :class:`~ipamcore.node.commands.Persist` writes: the core's checkpoint
        with each allocation's netns path."""
        return attrs.evolve(self.core.checkpoint(), netns=tuple(self.hints.items()))

    def stats(self, now: float) -> PoolStats:
        """The pool's figures (a query: time does not move)."""
        return self.core.stats(now)

    def card_stats(self, now: float) -> dict[int, PoolStats]:
        """The figures of each network card above 0 carrying multi-NIC pods (a query)."""
        return self.core.card_stats(now)

    def eni_views(self, now: float) -> list[EniView]:
        """The ENIs and their addresses (a query: time does not move)."""
        return self.core.eni_views(now)

    def pod_network(
        self, allocation: Allocation, netns: str, mtu: int | None = None, if_name: str = ""
    ) -> PodNetwork:
        """The datapath of ``allocation``'s pod: one host veth per attachment (network,
        container id, interface; see :func:`ipamcore.netspec.host_veth_name`), tagged with
        it, so teardown only ever removes that attachment's own veth."""
        key = allocation.key
        veth, tag = attachment_names(
            key.network_name, key.container_id, key.if_name, self.config.veth_prefix
        )
        index = attachment_index(key)
        table = route_table_for_device(allocation.device_index)
        if index:  # a multi-NIC pod's interface on a card above 0: that card's table
            info = self.core.eni(allocation.eni_id)
            table = self.core.route_table_of(info) if info is not None else table
        ipv4, ipv6 = allocation.ipv4 or "", allocation.ipv6 or ""
        return PodNetwork(
            netns_path=netns,
            if_name=if_name or key.if_name,
            host_veth=veth,
            ipv4=ipv4,
            mtu=mtu or self.config.pod_mtu,
            route_table=table,
            tag=tag,
            ipv6=ipv6,
            # the other family's egress on the pod's first interface only
            egress_v4=egress_v4_for(ipv6)
            if ipv6 and not ipv4 and not index and self.config.v4_egress
            else "",
            egress_v6=egress_v6_for(ipv4)
            if ipv4 and not ipv6 and not index and self._v6_egress
            else "",
            attachment_index=index,
        )

    @property
    def _v6_egress(self) -> bool:
        """ENABLE_V6_EGRESS, on a node that has an IPv6 address to SNAT to."""
        return self.config.v6_egress and bool(self.identity and self.identity.ipv6_address)

    def _host_veth(self, allocation: Allocation) -> str:
        key = allocation.key
        return host_veth_name(
            key.network_name, key.container_id, key.if_name, self.config.veth_prefix
        )

    def eni_network(self, eni: ObservedEni) -> EniNetwork | None:
        """The datapath setup of a secondary ENI (None for the primary or unmanaged ones)."""
        table = route_table_for_device(eni.device_index)
        multi_nic = self.ipam is not None and self.ipam.config.multi_nic
        if eni.network_card and not multi_nic:  # upstream leaves cards above 0 alone then
            return None
        if multi_nic:  # upstream's numbering; None outside the card's range of tables
            assert self.ipam is not None
            table = self.ipam.route_table_of(eni)
        if table is None or eni.unmanaged or eni.is_efa or eni.is_trunk:
            return None
        return EniNetwork(
            mac=eni.mac,
            primary_ip=eni.primary_ip,
            subnet_cidr=eni.subnet_cidr,
            gateway=eni.subnet_gateway,
            route_table=table,
            mtu=self.config.eni_mtu,
            ipv6=self.ipam is not None and self.ipam.config.ipv6_only,
        )

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
        elif type(want) is CardWait:
            want.task = task
            self._card_waiters.append(want)
        else:  # a command answered by an input with its cid
            self._out.append(want)
            self._awaiting[want.cid] = (task, slot)

    def _take_turn(self, key: AllocationKey) -> bool:
        """Hold ``key`` at once if no task holds it (True); else the caller yields
        ``Turn(key)`` and waits in line (the usual case costs no wait object)."""
        if key in self._holders:
            return False
        self._holders[key] = collections.deque()
        return True

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

    def _start_persist(self) -> None:
        self._persist_cid = self._cid()
        ipam = self.ipam
        change = None if ipam is None else self.changes.cut(ipam, self.hints)
        self._out.append(c.Persist(self._persist_cid, change))

    def _persisted(self, answer: i.Answer) -> None:
        error = answer if isinstance(answer, i.Failed) else None
        if error is None:
            self.saves += 1
        else:
            self.changes.touch_all()  # what reached the store is unknown: write it whole
        batch, self._batch, self._persist_cid = self._batch, [], None
        if self._next_batch:
            self._batch, self._next_batch = self._next_batch, []
            self._start_persist()
        for task, slot in batch:
            self._resolve(task, slot, error)

    def _log(self, level: str, event: str, **fields: object) -> None:
        self._out.append(c.Log(level, event, tuple(fields.items())))

    def _count(self, metric: str, label: str = "", amount: int = 1) -> None:
        self._out.append(c.Count(metric, label, amount))

    def _observe(self, metric: str, value: float) -> None:
        self._out.append(c.Observe(metric, value))

    def waiting_adds(self) -> tuple[int, float | None]:
        """ADDs waiting for an address, and when the oldest arrived (None: none waits)."""
        if not self._waiters and not self._card_waiters:
            return 0, None
        return self.waiting, min(self.waiting_since())

    def _pool_changed(self) -> None:
        """A request assigned or released an address: the policy looks at the pool within
        ``policy_interval_s`` (the changes made meanwhile share that one pass)."""
        due = self._now + self.config.policy_interval_s
        if due < self._policy_due:
            self._policy_due = due

    def _kick(self) -> None:
        """Run the pool policy at the next tick (an ADD found the pool short, or state
        changed); kicks before that tick make one pass."""
        self._kicked = True

    def _reply(self, request_id: int, error: str = "", message: str = "", **kw: Any) -> None:
        self._adds_open.discard(request_id)
        self._abandoned.discard(request_id)
        self._out.append(c.Reply(request_id, error, message, **kw))

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
            self.changes.touch(wait.key, allocation)
            self._pool_changed()
            assert wait.task is not None
            self._resolve(wait.task, 0, allocation)
        while waiters and waiters[0].deadline <= now:
            wait = waiters.popleft()
            assert wait.task is not None
            self._resolve(wait.task, 0, None)

    def _serve_card_waiters(self) -> None:
        """Multi-NIC ADDs waiting on cards above 0 take addresses first come, first served
        per card (a card found dry is skipped for the later ones); those complete, or whose
        time is up, resume."""
        assign_on_card, now = self.core.assign_on_card, self._now
        dry: set[int] = set()
        resumed: list[CardWait] = []
        for wait in self._card_waiters:
            for card, key in list(wait.missing.items()):
                if card in dry:
                    continue
                try:
                    allocation = assign_on_card(key, wait.pod, card, now)
                except PoolExhausted:
                    dry.add(card)
                    continue
                del wait.missing[card]
                wait.got.append(allocation)
                self.changes.touch(key, allocation)
                self._pool_changed()
            if not wait.missing or wait.deadline <= now:
                resumed.append(wait)
        for wait in resumed:
            self._card_waiters.remove(wait)
            assert wait.task is not None
            self._resolve(wait.task, 0, None)

    def _teardown_quietly(self, allocation: Allocation, netns: str) -> Any:
        """Best-effort teardown (start-up, GC, an unwound ADD): a failure is logged."""
        netns = netns or self.hints.get(allocation.key) or ""
        done = yield c.TearDownPod(self._cid(), self.pod_network(allocation, netns))
        if isinstance(done, i.Failed):
            self._log("warning", "teardown failed", key=str(allocation.key), error=done.message)
            return False
        return True
