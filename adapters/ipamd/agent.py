"""The node agent: drives the core's :class:`~ipamcore.ipam.Ipam` from asyncio.

Threading: every Ipam call happens on the event loop thread (Ipam is not thread-safe); cloud
and datapath calls run in worker threads. Datapath and cloud calls each get worker threads
of their own (:mod:`adapters.ipamd.workers`), so a burst of pod setups never queues ahead
of the checkpoint writer's thread hop (aiofiles uses the loop's default executor) and a
slow EC2 call never delays a pod.
The request handlers live in :mod:`adapters.ipamd.handlers`, start-up in
:mod:`adapters.ipamd.startup`, the timers in :mod:`adapters.ipamd.loops`; this module
holds the state they share and the effect runner.

Effects: :meth:`Agent.run_policy` asks ``Ipam.plan(now, waiting)`` and starts one task per
effect; each task performs the effect via the cloud port in a thread and feeds the outcome
back with ``Ipam.apply``. A new ENI is used only once instance metadata shows it (upstream's
``waitForENIAndIPsAttached``: until then the host may have no link for it): the task polls
metadata every ``ENI_VISIBLE_POLL_S`` for up to ``ENI_VISIBLE_WAIT_S`` (then goes on, with a
warning), and only then applies ``EniCreated``; the effect stays in flight meanwhile, so its
addresses count as coming. The new ENI is set up in the datapath before waiting ADDs are woken.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from adapters.ipamd.clock import Clock
from adapters.ipamd.group_commit import GroupCommitter
from adapters.ipamd.hints import NetnsHints
from adapters.ipamd.settings import Settings
from adapters.ipamd.workers import WorkerThreads
from adapters.metrics import Metrics
from backends.observe import CallCounter, CallRecord
from backends.perform import perform
from backends.steps import Step, no_step
from ipamcore.effects import Effect, FreeEni
from ipamcore.events import (
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.ipam import Ipam
from ipamcore.model import Allocation, AllocationKey, InstanceIdentity, ObservedEni
from ipamcore.netspec import EniNetwork, route_table_for_device
from ipamcore.ports import CheckpointStore, CloudPort, DatapathPort, MetadataPort
from ipamcore.views import EniView, PoolStats

T = TypeVar("T")
DATAPATH_THREADS = 8
CLOUD_THREADS = 8
ENI_VISIBLE_POLL_S = 0.05
ENI_VISIBLE_WAIT_S = 10.0


@attrs.define
class Ports:
    """The backends the agent drives."""

    cloud: CloudPort
    metadata: MetadataPort
    datapath: DatapathPort
    store: CheckpointStore
    crash: Step = no_step  # crash-injection hook (backends.steps), a no-op but in tests


class KeyLocks:
    """One asyncio.Lock per allocation key, dropped when nobody holds or waits for it, so
    two requests for the same pod interface never interleave. ``async with
    locks.hold(key):`` (a plain class, not a generator-based context manager: it is taken
    twice per pod, on the hot path)."""

    def __init__(self) -> None:
        self._locks: dict[AllocationKey, _KeyLock] = {}

    def hold(self, key: AllocationKey) -> _Holding:
        return _Holding(self._locks, key)

    def __len__(self) -> int:
        return len(self._locks)


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Holding:
    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: dict[AllocationKey, _KeyLock], key: AllocationKey) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _KeyLock()
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._entry.users -= 1
        if self._entry.users == 0:
            del self._locks[self._key]


class Agent:
    """The daemon's state: the core, the ports, the commit writer and bookkeeping."""

    def __init__(
        self,
        settings: Settings,
        ports: Ports,
        clock: Clock,
        log: Any,
        metrics: Metrics | None = None,
        calls: CallCounter | None = None,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.clock = clock
        self.log = log
        self.metrics = metrics or Metrics()
        self.calls = calls if calls is not None else CallCounter()
        self.hints = NetnsHints(settings.checkpoint_path + ".netns")
        self.committer = GroupCommitter(ports.store, self._snapshot)
        self.key_locks = KeyLocks()
        self.ipam: Ipam | None = None
        self.identity: InstanceIdentity | None = None
        self.ready = False
        self.stopping = False
        self.started_at = time.monotonic()
        self.waiting = 0
        self.kicked = asyncio.Event()
        self._pool_event = asyncio.Event()
        # ADDs waiting for an address, oldest first. A pool change wakes only as many as
        # there are addresses to take (at least one), not all of them: a burst of 100
        # waiting ADDs woken on every change kept the event loop busy enough to delay the
        # very cloud calls they were waiting for.
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._effects: set[asyncio.Task[None]] = set()
        self._enis_to_set_up: set[str] = set()
        self.quarantine_until = 0.0
        self._datapath_workers = WorkerThreads(DATAPATH_THREADS, "datapath")
        self._cloud_workers = WorkerThreads(CLOUD_THREADS, "cloud")

    async def in_datapath(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) datapath call in the datapath's worker threads."""
        return await self._datapath_workers.run(fn, *args)

    def start_in_datapath(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Start a datapath call in a worker thread and return its future at once."""
        return self._datapath_workers.submit(fn, *args)

    async def in_cloud(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) cloud or metadata call in the cloud's worker threads."""
        return await self._cloud_workers.run(fn, *args)

    def close(self) -> None:
        """Release the worker threads (after stop)."""
        self._datapath_workers.close()
        self._cloud_workers.close()

    # ------------------------------------------------------------------ helpers
    @property
    def core(self) -> Ipam:
        if self.ipam is None:
            raise RuntimeError("the agent has not started")
        return self.ipam

    def observe_call(self, record: CallRecord) -> None:
        """CallObserver for the cloud backend: counts for /stats, metrics for Prometheus."""
        self.calls(record)
        self.metrics.observe_call(record)

    def _snapshot(self) -> Any:
        return attrs.evolve(self.core.checkpoint(), netns=self.hints.pairs())

    def stats(self) -> PoolStats:
        return self.core.stats(self.clock.now())

    def eni_views(self) -> list[EniView]:
        return self.core.eni_views(self.clock.now())

    def kick(self) -> None:
        """Run the pool policy now (an ADD found the pool short, or state changed)."""
        self.kicked.set()

    def pool_event(self) -> asyncio.Event:
        """An event set at the next change that may free an address for a waiting ADD."""
        return self._pool_event

    def notify_pool_changed(self) -> None:
        self._pool_event.set()
        self._pool_event = asyncio.Event()
        waiters = self._waiters
        if not waiters or self.ipam is None:
            return
        wake = max(1, self.core.stats(self.clock.now()).available)
        while waiters and wake > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                wake -= 1

    def address_waiter(self, first: bool = False) -> asyncio.Future[bool]:
        """A future set (True) when the pool changes and this waiter's turn comes (FIFO; ``first``
        puts it at the head, for a waiter whose turn came but found no address)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        return waiter

    # ------------------------------------------------------------------ ENIs
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
            mtu=self.settings.eni_mtu,
        )

    async def setup_eni(self, eni: ObservedEni) -> bool:
        net = self.eni_network(eni)
        if net is None:
            return True
        try:
            await self.in_datapath(self.ports.datapath.setup_eni, net)
        except Exception as exc:
            self._enis_to_set_up.add(eni.eni_id)
            self.log.error("eni setup failed", eni=eni.eni_id, error=str(exc))
            return False
        self._enis_to_set_up.discard(eni.eni_id)
        return True

    async def teardown_eni(self, eni_id: str) -> None:
        """Remove a freed ENI's rule and routes from the host (failures logged: the start's
        ``remove_stale`` removes what is left)."""
        info = self.core.eni(eni_id)
        net = None if info is None else self.eni_network(info)
        if net is None:
            return
        try:
            await self.in_datapath(self.ports.datapath.teardown_eni, net)
        except Exception as exc:
            self.log.warning("eni teardown failed", eni=eni_id, error=str(exc))

    async def retry_eni_setups(self) -> None:
        for eni_id in sorted(self._enis_to_set_up):
            info = self.core.eni(eni_id)
            if info is None:
                self._enis_to_set_up.discard(eni_id)
            else:
                await self.setup_eni(info)

    # ------------------------------------------------------------------ effects
    def run_policy(self) -> list[Effect]:
        """Plan and start effects (non-blocking); returns the effects started."""
        if self.ipam is None or self.stopping:
            return []
        effects = self.core.plan(self.clock.now(), waiting=self.waiting)
        for effect in effects:
            self.log.info("effect", effect=type(effect).__name__, **_describe(effect))
            task = asyncio.create_task(self._perform(effect))
            self._effects.add(task)
            task.add_done_callback(self._effects.discard)
        return effects

    async def _perform(self, effect: Effect) -> None:
        outcome = await self.in_cloud(self._call_cloud, effect)
        if isinstance(outcome, EniCreated):
            await self.wait_until_visible(outcome.eni.eni_id)
        if isinstance(outcome, EffectFailed):
            self.log.warning(
                "effect failed", effect_id=effect.effect_id, kind=outcome.kind.value,
                message=outcome.message,
            )  # fmt: skip
        if isinstance(outcome, EniFreed) and isinstance(effect, FreeEni):
            await self.teardown_eni(effect.eni_id)
        removed = self.core.apply(outcome, self.clock.now())
        if removed:
            self.metrics.force_removed_ips.inc(len(removed))
            self.log.error("allocations force-removed", count=len(removed), effect=effect.effect_id)
        if isinstance(outcome, EniCreated):
            await self.setup_eni(outcome.eni)
            self.ports.crash("eni.recorded")
        self.notify_pool_changed()
        self.kick()

    async def wait_until_visible(self, eni_id: str) -> bool:
        """Poll instance metadata until it lists ``eni_id``; False after ENI_VISIBLE_WAIT_S."""
        deadline = self.clock.now() + ENI_VISIBLE_WAIT_S
        while True:
            try:
                enis = await self.in_cloud(self.ports.metadata.enis)
            except Exception as exc:
                self.log.warning("metadata ENIs unavailable", error=str(exc))
                enis = []
            if any(e.eni_id == eni_id for e in enis):
                return True
            if self.clock.now() >= deadline or self.stopping:
                self.log.warning(
                    "new ENI not in instance metadata yet; using it anyway", eni=eni_id,
                    waited_s=ENI_VISIBLE_WAIT_S,
                )  # fmt: skip
                return False
            await self.clock.sleep(ENI_VISIBLE_POLL_S)

    def _call_cloud(self, effect: Effect) -> Outcome:
        """Runs in a worker thread: one effect against the cloud port, as an outcome."""
        assert self.identity is not None
        return perform(
            self.ports.cloud, self.identity.instance_id, effect,
            dict(self.settings.additional_eni_tags),
        )  # fmt: skip

    async def drain_effects(self, timeout: float = 10.0) -> None:
        """Wait (real time, bounded) for effects in flight to finish."""
        if self._effects:
            await asyncio.wait(set(self._effects), timeout=timeout)

    @property
    def effects_in_flight(self) -> int:
        return len(self._effects)

    def note_force_removed(self, removed: tuple[Allocation, ...], enis: int) -> None:
        if enis:
            self.metrics.force_removed_enis.inc(enis)
        if removed:
            self.metrics.force_removed_ips.inc(len(removed))
            for allocation in removed:
                self.hints.forget(allocation.key)
            self.log.error(
                "allocations force-removed: their address vanished from the instance",
                keys=[str(a.key) for a in removed],
            )


def _describe(effect: Effect) -> dict[str, object]:
    fields = attrs.asdict(effect)
    fields.pop("effect_id", None)
    return {"effect_id": effect.effect_id, **fields}
