"""The daemon's executor: performs the commands of :class:`ipamcore.node.Node` with asyncio.

The node decides; this module only does I/O and feeds each result back as an input (with
the clock's ``now``). Threading: every Node call happens on the event loop thread (it is
not thread-safe); cloud and datapath calls run in worker threads of their own
(:mod:`adapters.ipamd.workers`), so a burst of pod setups never queues ahead of the
checkpoint writer's thread hop and a slow EC2 call never delays a pod. Checkpoint writes go
through the store (aiofiles). One timer task feeds a :class:`~ipamcore.node.inputs.Tick`
whenever the clock reaches :attr:`Node.wake_at`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

from adapters import protocol as p
from adapters.ipamd.clock import Clock, race_timeout
from adapters.ipamd.flight import FlightRecorder, record_path
from adapters.ipamd.hints import NetnsHints, _netns_ok
from adapters.ipamd.settings import Settings
from adapters.ipamd.workers import WorkerThreads
from adapters.metrics import Metrics
from adapters.pending_dels import read_pending_dels, remove_pending_del
from backends.observe import CallCounter, CallRecord
from backends.perform import perform
from backends.steps import Step, no_step
from ipamcore.checkpoint import Checkpoint, CheckpointChange
from ipamcore.errors import CheckpointError, CloudError, UnsupportedCheckpointVersion
from ipamcore.ipv6 import V6Stats
from ipamcore.model import AllocationKey
from ipamcore.node import Node, NodeConfig
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.ports import ChangeStore, CheckpointStore, CloudPort, DatapathPort, MetadataPort
from ipamcore.views import EniView, PoolStats

T = TypeVar("T")
DATAPATH_THREADS = 8
OFFSET_SLACK_S = 0.5  # a wall-clock change smaller than this keeps the stored times
CLOUD_THREADS = 8


@attrs.define
class Ports:
    """The backends the executor drives."""

    cloud: CloudPort
    metadata: MetadataPort
    datapath: DatapathPort
    store: CheckpointStore
    crash: Step = no_step  # crash-injection hook (backends.steps), tests only


class StartFailed(RuntimeError):
    """The node gave up starting (its message says why)."""


def node_config(settings: Settings) -> NodeConfig:
    """The node's configuration from the daemon's settings."""
    return NodeConfig(
        pool=settings.pool,
        add_wait_s=settings.add_wait_s,
        policy_interval_s=settings.policy_interval_s,
        reconcile_interval_s=settings.reconcile_interval_s,
        leaked_eni_interval_s=settings.leaked_eni_interval_s,
        leaked_eni_cleanup=settings.leaked_eni_cleanup,
        eni_mtu=settings.eni_mtu,
        pod_mtu=settings.pod_mtu,
        veth_prefix=settings.veth_prefix,
        external_snat=settings.external_snat,
        v4_egress=settings.v4_egress,
        v6_egress=settings.v6_egress,
        checkpoint_path=settings.checkpoint_path,
    )


class NodeExecutor:
    """Runs one :class:`Node` against the daemon's ports."""

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
        self._offset: float | None = None
        self.log = log
        self.metrics = metrics or Metrics()
        self.calls = calls if calls is not None else CallCounter()
        self.node = Node(node_config(settings))
        # Called with each input and the commands it led to (tests, the flight recorder).
        self.observe: Callable[[i.Input, list[c.Command]], None] | None = None
        # More watchers of inputs (the Kubernetes link's Events), and of requests' replies
        # (its pod-ips annotations), called on the event loop; they must not block.
        self.input_hooks: list[Callable[[i.Input, list[c.Command]], None]] = []
        self.reply_hooks: list[Callable[[i.Input, c.Reply], None]] = []
        self.recorder: FlightRecorder | None = None
        if settings.flight_recorder_bytes:
            path = record_path(settings.checkpoint_path)
            try:
                self.recorder = FlightRecorder(
                    path, settings.flight_recorder_bytes, self.node.config, self._wall_offset()
                )
            except OSError as exc:
                log.warning("flight recorder off: cannot open its file", path=path, error=str(exc))
        self.commands_in_flight = 0  # commands started and not answered yet
        self.hints = NetnsHints(settings.checkpoint_path + ".netns")
        self.stopping = False
        self._request_ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[c.Reply]] = {}
        self._request_of_task: dict[asyncio.Task[Any], int] = {}
        self._failures: dict[int, BaseException] = {}
        self._persist_failure: BaseException | None = None
        self._persisted_offset: float | None = None  # the wall offset of the last commit
        self._store_kind: tuple[object, bool] = (None, False)
        self._pending_dels: dict[AllocationKey, p.Request] = {}
        self._started: asyncio.Future[None] | None = None
        self._wake_changed: asyncio.Event | None = None
        self._armed_at: float | None = None
        self._timer: asyncio.Task[None] | None = None
        self._serving: asyncio.Event | None = None
        self._rescans: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._datapath_workers = WorkerThreads(DATAPATH_THREADS, "datapath")
        self._cloud_workers = WorkerThreads(CLOUD_THREADS, "cloud")
        self._perform: dict[type, Callable[[Any], None]] = {
            c.Reply: self._reply,
            c.Log: self._log,
            c.Count: self._count,
            c.Observe: self._observe,
            c.Ready: self._ready,
            c.Abort: self._abort,
            c.Persist: self._persist,
            c.SetUpPod: self._setup_pod,
            c.TearDownPod: lambda cmd: self._in_datapath(
                cmd.cid, self.ports.datapath.teardown_pod, cmd.network
            ),
            c.CheckPod: self._check_pod,
            c.PerformEffect: self._perform_effect,
            c.ReadMetadataEnis: self._read_metadata_enis,
            c.SetUpEni: self._setup_eni,
            c.TearDownEni: lambda cmd: self._in_datapath(
                cmd.cid, self.ports.datapath.teardown_eni, cmd.network
            ),
            c.RemoveStale: self._remove_stale,
            c.SetUpNode: lambda cmd: self._in_datapath(
                cmd.cid, self.ports.datapath.setup_node, cmd.network
            ),
            c.ReadIdentity: self._read_identity,
            c.DescribeInstanceType: self._describe_instance_type,
            c.DescribeEnis: self._describe_enis,
            c.DescribeSubnets: self._describe_subnets,
            c.FindLeakedEnis: self._find_leaked_enis,
            c.FreeLeakedEni: lambda cmd: self._in_cloud(
                cmd.cid, self.ports.cloud.free_eni, cmd.eni_id
            ),
            c.ReadCheckpoint: lambda cmd: self._spawn(self._read_checkpoint(cmd)),
            c.CheckPodsPresent: self._check_pods_present,
            c.ReadPendingDels: lambda cmd: self._spawn(self._read_pending_dels(cmd)),
            c.RemovePendingDels: lambda cmd: self._spawn(self._remove_pending_dels(cmd)),
            c.DropLegacyHints: self._drop_legacy_hints,
        }

    # ------------------------------------------------------------------ time
    def _now(self) -> float:
        """The node's ``now``: the monotonic clock (deadlines and cooldowns never step)."""
        return self.clock.monotonic()

    def _wall_offset(self) -> float:
        """Wall time minus monotonic time: what converts the node's times at the boundary
        (the checkpoint file, the HTTP views and EC2 tags hold wall time).

        Kept as long as the clocks agree with it within :data:`OFFSET_SLACK_S`: reading the
        two clocks again gives a slightly different sum each time, which would change every
        allocation's stored time at every commit (the journaled store writes only what
        changed; it would write the whole pool). A step of the wall clock moves it."""
        offset = self.clock.now() - self.clock.monotonic()
        kept = self._offset
        if kept is None or abs(offset - kept) > OFFSET_SLACK_S:
            self._offset = kept = offset
        return kept

    # ------------------------------------------------------------------ feeding
    def feed(self, inp: i.Input) -> None:
        """Give the node one input and start every command it returns."""
        commands = self.node.receive(inp)
        if self.recorder is not None:
            self.recorder(inp, commands)
        if self.observe is not None:
            self.observe(inp, commands)
        for hook in self.input_hooks:
            hook(inp, commands)
        if hasattr(inp, "cid"):
            self.commands_in_flight -= 1
        for command in commands:
            if hasattr(command, "cid"):
                self.commands_in_flight += 1
            self._perform[type(command)](command)
        wake = self.node.wake_at
        if wake != self._armed_at and self._wake_changed is not None:
            self._armed_at = wake
            self._wake_changed.set()

    async def _run_timer(self) -> None:
        assert self._wake_changed is not None
        changed = self._wake_changed
        serving = self._serving
        assert serving is not None
        while True:
            if self.node.ready and not serving.is_set():
                await serving.wait()  # the first policy pass once the daemon serves
            wake = self.node.wake_at
            self._armed_at = wake
            changed.clear()
            if wake is None:
                await changed.wait()
                continue
            delay = wake - self._now()
            if delay > 0:
                await race_timeout(self.clock, changed.wait(), delay)
                continue
            try:
                self.feed(i.Tick(self._now()))
            except Exception as exc:  # a bug must not stop the node's timers
                self.log.exception("tick failed", error=str(exc))
                await self.clock.sleep(self.settings.policy_interval_s)
            await asyncio.sleep(0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_from(self, cid: int, make: Callable[[Any], i.Input]) -> Callable[[Any], None]:
        """A done-callback of a worker future: feed its result (via ``make``) or failure."""

        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is None:
                self.feed(make(future.result()))
            else:
                self.feed(self._failed(cid, exc))

        return done

    def _failed(self, cid: int, exc: BaseException) -> i.Failed:
        if not self.node.ready:
            self._failures[cid] = exc  # a start that aborts raises it
        kind = exc.kind if isinstance(exc, CloudError) else None
        return i.Failed(self._now(), cid, str(exc), kind, type(exc).__name__)

    def _done(self, cid: int) -> Callable[[Any], i.Input]:
        return lambda _result: i.Done(self._now(), cid)

    def _in_datapath(self, cid: int, fn: Callable[..., Any], *args: Any) -> None:
        future = self._datapath_workers.submit(fn, *args)
        future.add_done_callback(self._answer_from(cid, self._done(cid)))

    def _in_cloud(self, cid: int, fn: Callable[..., Any], *args: Any, make: Any = None) -> None:
        future = self._cloud_workers.submit(fn, *args)
        future.add_done_callback(self._answer_from(cid, make or self._done(cid)))

    # ------------------------------------------------------------------ one-way commands
    def _reply(self, cmd: c.Reply) -> None:
        future = self._replies.pop(cmd.request_id, None)
        if future is not None and not future.done():
            future.set_result(cmd)

    def _log(self, cmd: c.Log) -> None:
        getattr(self.log, cmd.level)(cmd.event, **dict(cmd.fields))

    def _count(self, cmd: c.Count) -> None:
        metric = getattr(self.metrics, cmd.metric)
        (metric.labels(cmd.label) if cmd.label else metric).inc(cmd.amount)

    def _observe(self, cmd: c.Observe) -> None:
        getattr(self.metrics, cmd.metric).observe(cmd.value)

    def _ready(self, cmd: c.Ready) -> None:
        self.metrics.bind_pool(self.stats, self.card_stats)
        self.metrics.bind_ipv6(self.v6_stats)
        self.metrics.bind_node(self.eni_views, lambda: self.waiting, self.ports.cloud)
        self.metrics.startup_duration.set(cmd.startup_s)
        if self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _abort(self, cmd: c.Abort) -> None:
        cause = self._failures.get(cmd.cause_cid)
        if self._started is not None and not self._started.done():
            self._started.set_exception(cause or StartFailed(cmd.message))

    # ------------------------------------------------------------------ answered commands
    def _persist(self, cmd: c.Persist) -> None:
        self._spawn(self._write_checkpoint(cmd.cid, cmd.change))

    async def _write_checkpoint(self, cid: int, change: CheckpointChange | None) -> None:
        """A store that takes changes (the journal) gets the node's change, in wall time;
        the whole checkpoint when the node sends none or the wall offset moved (every
        stored time moves with it). Others rewrite the whole checkpoint."""
        offset = self._wall_offset()
        node = self.node

        def snapshot() -> Checkpoint:
            return shift(node.checkpoint(), offset)

        store = self.ports.store
        if store is not self._store_kind[0]:  # (isinstance on a Protocol is slow)
            self._store_kind = (store, isinstance(store, ChangeStore))
        try:
            if self._store_kind[1]:
                changes = cast(ChangeStore, store)
                # other requests waiting (their replies pending besides this commit's):
                # the sync leaves the loop free to gather them into the next commit
                busy = len(self._replies) > 1
                if change is not None and offset == self._persisted_offset:
                    await changes.commit(change.shifted(offset), snapshot, others_waiting=busy)
                else:
                    await changes.commit(None, snapshot, others_waiting=busy)
                self._persisted_offset = offset
            else:
                await store.save(snapshot())
        except Exception as exc:
            self._persist_failure = exc
            self.feed(self._failed(cid, exc))
        else:
            self._persist_failure = None
            self.feed(i.Done(self._now(), cid))

    def _setup_pod(self, cmd: c.SetUpPod) -> None:
        self._in_datapath(cmd.cid, _setup_pod, self.ports.datapath, cmd.network, cmd.repeat)

    def _check_pod(self, cmd: c.CheckPod) -> None:
        future = self._datapath_workers.submit(self.ports.datapath.check_pod, cmd.network)
        make = lambda missing: i.PodChecked(self._now(), cmd.cid, tuple(missing))  # noqa: E731
        future.add_done_callback(self._answer_from(cmd.cid, make))

    def _setup_eni(self, cmd: c.SetUpEni) -> None:
        def setup() -> None:
            self.ports.datapath.setup_eni(cmd.network)

        def make(_result: Any) -> i.Input:
            if cmd.created:
                self.ports.crash("eni.recorded")
            return i.Done(self._now(), cmd.cid)

        future = self._datapath_workers.submit(setup)
        future.add_done_callback(self._answer_from(cmd.cid, make))

    def _perform_effect(self, cmd: c.PerformEffect) -> None:
        identity = self.node.identity
        assert identity is not None
        tags = dict(self.settings.additional_eni_tags)
        make = lambda outcome: i.EffectDone(self._now(), cmd.cid, outcome)  # noqa: E731
        self._in_cloud(
            cmd.cid, perform, self.ports.cloud, identity.instance_id, cmd.effect, tags, make=make
        )

    def _read_metadata_enis(self, cmd: c.ReadMetadataEnis) -> None:
        make = lambda enis: i.MetadataEnisRead(self._now(), cmd.cid, tuple(enis))  # noqa: E731
        self._in_cloud(cmd.cid, self.ports.metadata.enis, make=make)

    def _read_identity(self, cmd: c.ReadIdentity) -> None:
        make = lambda identity: i.IdentityRead(self._now(), cmd.cid, identity)  # noqa: E731
        self._in_cloud(cmd.cid, self.ports.metadata.identity, make=make)

    def _describe_instance_type(self, cmd: c.DescribeInstanceType) -> None:
        make = lambda limits: i.InstanceTypeDescribed(self._now(), cmd.cid, limits)  # noqa: E731
        self._in_cloud(
            cmd.cid, self.ports.cloud.describe_instance_type, cmd.instance_type, make=make
        )

    def _describe_enis(self, cmd: c.DescribeEnis) -> None:
        make = lambda enis: i.EnisDescribed(self._now(), cmd.cid, tuple(enis))  # noqa: E731
        self._in_cloud(cmd.cid, self.ports.cloud.describe_enis, cmd.instance_id, make=make)

    def _describe_subnets(self, cmd: c.DescribeSubnets) -> None:
        make = lambda subnets: i.SubnetsDescribed(self._now(), cmd.cid, tuple(subnets))  # noqa: E731
        self._in_cloud(
            cmd.cid, self.ports.cloud.describe_subnets, cmd.subnet_ids, cmd.tag_key, make=make
        )

    def _find_leaked_enis(self, cmd: c.FindLeakedEnis) -> None:
        make = lambda ids: i.LeakedEnisFound(self._now(), cmd.cid, tuple(ids))  # noqa: E731
        cloud = self.ports.cloud

        def find() -> list[str]:
            return cloud.find_leaked_enis(  # createdAt tags hold wall time
                cmd.instance_id, self.clock.now(), cmd.any_instance, min_age_s=cmd.min_age_s
            )

        self._in_cloud(cmd.cid, find, make=make)

    def _remove_stale(self, cmd: c.RemoveStale) -> None:
        future = self._datapath_workers.submit(self.ports.datapath.remove_stale, cmd.live)
        make = lambda removed: i.StaleRemoved(self._now(), cmd.cid, tuple(removed))  # noqa: E731
        future.add_done_callback(self._answer_from(cmd.cid, make))

    def _check_pods_present(self, cmd: c.CheckPodsPresent) -> None:
        """In a datapath thread (never on the event loop): which pods are gone. A check
        that fails keeps the pod's address (logged)."""
        datapath, log = self.ports.datapath, self.log

        def check() -> frozenset[AllocationKey]:
            gone = set()
            for pod in cmd.pods:
                try:
                    present = datapath.pod_present(pod.netns, pod.host_veth, pod.ipv4)
                except Exception as exc:
                    log.warning("pod_present failed; keeping", key=str(pod.key), error=str(exc))
                    present = True
                if not present:
                    gone.add(pod.key)
            return frozenset(gone)

        make = lambda gone: i.PodsPresent(self._now(), cmd.cid, gone)  # noqa: E731
        future = self._datapath_workers.submit(check)
        future.add_done_callback(self._answer_from(cmd.cid, make))

    async def _read_checkpoint(self, cmd: c.ReadCheckpoint) -> None:
        hints = self.hints
        try:
            legacy_file = await asyncio.to_thread(hints.load_legacy)
            legacy = hints.pairs()
            try:
                checkpoint = await self.ports.store.load()
            except UnsupportedCheckpointVersion as exc:
                answer = i.CheckpointRead(
                    self._now(), cmd.cid, None, i.NEWER_VERSION, str(exc.version),
                    getattr(exc, "moved_to", ""), legacy, legacy_file,
                )  # fmt: skip
            except CheckpointError as exc:
                answer = i.CheckpointRead(
                    self._now(), cmd.cid, None, i.UNREADABLE, str(exc),
                    getattr(exc, "moved_to", ""), legacy, legacy_file,
                )  # fmt: skip
            else:
                if checkpoint is not None:  # the paths are input too: keep valid ones only
                    valid = tuple(pair for pair in checkpoint.netns if _netns_ok(pair[1]))
                    checkpoint = attrs.evolve(checkpoint, netns=valid)
                    checkpoint = shift(checkpoint, -self._wall_offset())
                answer = i.CheckpointRead(
                    self._now(), cmd.cid, checkpoint, legacy_hints=legacy,
                    legacy_file=legacy_file,
                )  # fmt: skip
        except Exception as exc:
            self.feed(self._failed(cmd.cid, exc))
            return
        self.feed(answer)

    async def _read_pending_dels(self, cmd: c.ReadPendingDels) -> None:
        directory = self.settings.pending_del_dir

        def on_error(path: str, err: p.ProtocolError) -> None:
            self.log.warning("bad pending DEL record skipped", path=path, error=err.message)

        try:
            requests = await asyncio.to_thread(read_pending_dels, directory, on_error)
        except p.ProtocolError as exc:
            self.feed(i.Failed(self._now(), cmd.cid, exc.message))
            return
        dels = []
        for req in requests:
            key = AllocationKey(req.network_name, req.container_id, req.if_name)
            self._pending_dels[key] = req
            dels.append(i.PendingDel(key, req.netns))
        self.feed(i.PendingDelsRead(self._now(), cmd.cid, tuple(dels)))

    async def _remove_pending_dels(self, cmd: c.RemovePendingDels) -> None:
        directory = self.settings.pending_del_dir
        for key in cmd.keys:
            req = self._pending_dels.pop(key, None)
            if req is None:
                continue
            try:
                remove_pending_del(directory, req)
            except p.ProtocolError as exc:
                self.log.error("cannot remove pending DEL record", error=exc.message)
        self.feed(i.Done(self._now(), cmd.cid))

    def _drop_legacy_hints(self, cmd: c.DropLegacyHints) -> None:
        self.hints.drop_legacy_file()
        self.feed(i.Done(self._now(), cmd.cid))

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Bring the node to ready (raises what made the start fail)."""
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        self._wake_changed = asyncio.Event()
        self._serving = asyncio.Event()
        self._timer = loop.create_task(self._run_timer(), name="node-timer")
        self.feed(i.Start(self._now()))
        await self._started

    def serve(self) -> None:
        """The daemon serves requests: the node's timers run from now on (during the start
        only its retries do), and DELs the plugin recorded meanwhile are rescanned."""
        if self._serving is not None:
            self._serving.set()
            self._rescans = asyncio.get_running_loop().create_task(
                self._rescan_pending_dels(), name="pending-dels"
            )

    async def _rescan_pending_dels(self) -> None:
        """A DEL the plugin could not deliver is recorded on disk; the start releases the
        records it finds before it listens. Records written after that scan (during the rest
        of the start, or while the daemon was too busy to answer) are picked up here: once
        the daemon listens, then every reconcile interval. Each goes through the node as an
        ordinary DEL (ordered with any request for the same attachment); its record is
        removed once the DEL succeeded."""
        directory = self.settings.pending_del_dir

        def on_error(path: str, err: p.ProtocolError) -> None:
            self.log.warning("bad pending DEL record skipped", path=path, error=err.message)

        while not self.stopping:
            try:
                requests = await asyncio.to_thread(read_pending_dels, directory, on_error)
            except p.ProtocolError as exc:
                self.log.error("pending DEL records unreadable", error=exc.message)
                requests = []
            for req in requests:
                if self.stopping:
                    return
                key = AllocationKey(req.network_name, req.container_id, req.if_name)
                reply = await self.request(
                    lambda now, rid, key=key, netns=req.netns: i.Del(now, rid, key, netns)
                )
                if reply.error:
                    self.log.warning("pending DEL not done yet", key=str(key), error=reply.error)
                    continue
                self.log.info("pending DEL processed after the start", key=str(key))
                try:
                    await asyncio.to_thread(remove_pending_del, directory, req)
                except p.ProtocolError as exc:
                    self.log.error("cannot remove pending DEL record", error=exc.message)
            await self.clock.sleep(self.settings.reconcile_interval_s)

    async def request(self, make: Callable[[float, int], i.Request]) -> c.Reply:
        """Feed a request made by ``make(now, request_id)`` and wait for its reply."""
        request_id = next(self._request_ids)
        future: asyncio.Future[c.Reply] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        task = asyncio.current_task()
        if task is not None:
            self._request_of_task[task] = request_id
        inp = make(self._now(), request_id)
        self.feed(inp)
        try:
            reply = await future
            for hook in self.reply_hooks:
                hook(inp, reply)
            return reply
        except asyncio.CancelledError:  # the caller is gone: the node keeps nothing for it
            self._replies.pop(request_id, None)
            self.feed(i.Cancel(self._now(), request_id))
            raise
        finally:
            if task is not None:
                self._request_of_task.pop(task, None)

    def client_gone(self, task: asyncio.Task[Any]) -> None:
        """The client of the request ``task`` serves has closed its connection: the node
        is told (an ADD then keeps no address); the request still gets its answer."""
        request_id = self._request_of_task.get(task)
        if request_id is not None:
            self.feed(i.Cancel(self._now(), request_id))

    async def stop(self, timeout: float = 10.0) -> None:
        """No new requests or effects; wait (real time, bounded) for effects in flight,
        then write the checkpoint a last time (raises if that write fails)."""
        self.stopping = True
        self.feed(i.Stop(self._now()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.node.effects_in_flight and loop.time() < deadline:
            await asyncio.sleep(0.005)
        try:
            if self.node.ipam is not None:
                reply = await self.request(lambda now, rid: i.Flush(now, rid))  # type: ignore[arg-type,return-value]
                if reply.error:
                    raise self._persist_failure or RuntimeError(reply.message)
                # A journaled store folds its journal into the checkpoint file now, so a
                # rollback to upstream (which reads only that file) finds every allocation.
                compact = getattr(self.ports.store, "compact", None)
                if compact is not None:
                    await compact()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._rescans is not None:
                self._rescans.cancel()

    def close(self) -> None:
        """Release the worker threads and the flight record (after stop)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.recorder is not None:
            self.recorder.close()
        self._datapath_workers.close()
        self._cloud_workers.close()

    # ------------------------------------------------------------------ queries
    @property
    def ready(self) -> bool:
        return self.node.ready

    @property
    def core(self) -> Any:
        return self.node.core

    @property
    def effects_in_flight(self) -> int:
        return self.node.effects_in_flight

    @property
    def waiting(self) -> int:
        """ADDs waiting for an address now."""
        return self.node.waiting_adds()[0]

    def stats(self) -> PoolStats:
        return self.node.stats(self._now())

    def card_stats(self) -> dict[int, PoolStats]:
        """The figures of each network card above 0 carrying multi-NIC pods."""
        return self.node.card_stats(self._now())

    def eni_views(self) -> list[EniView]:
        """The node's ENIs, with assignment and release times in wall time."""
        offset = self._wall_offset()
        return [
            attrs.evolve(view, blocks=tuple(
                attrs.evolve(block, addresses=tuple(
                    attrs.evolve(
                        a,
                        assigned_at=None if a.assigned_at is None else a.assigned_at + offset,
                        released_at=None if a.released_at is None else a.released_at + offset,
                    )
                    for a in block.addresses
                ))
                for block in view.blocks
            ), ipv6_blocks=tuple(
                attrs.evolve(block, addresses=tuple(
                    attrs.evolve(
                        a, assigned_at=None if a.assigned_at is None else a.assigned_at + offset
                    )
                    for a in block.addresses
                ))
                for block in view.ipv6_blocks
            ))
            for view in self.node.eni_views(self._now())
        ]  # fmt: skip

    def v6_stats(self) -> V6Stats:
        """The node's IPv6 figures (zeros before ready or without IPv6)."""
        core = self.node.core if self.node.ipam is not None else None
        return core.v6_stats() if core is not None else V6Stats()

    def observe_call(self, record: CallRecord) -> None:
        """CallObserver for the cloud backend: counts for /stats, metrics for Prometheus."""
        self.calls(record)
        self.metrics.observe_call(record)


def shift(checkpoint: Checkpoint, seconds: float) -> Checkpoint:
    """``checkpoint`` with every time moved by ``seconds`` (monotonic <-> wall)."""
    if not seconds:
        return checkpoint
    return attrs.evolve(
        checkpoint,
        allocations=tuple(
            a._replace(allocated_at=a.allocated_at + seconds) for a in checkpoint.allocations
        ),
        released_at=tuple((address, t + seconds) for address, t in checkpoint.released_at),
    )


def _setup_pod(datapath: DatapathPort, net: Any, repeat: bool) -> None:
    """In a worker thread: build the pod's datapath; for a repeated ADD, rebuild it only if
    a piece is missing."""
    if repeat:
        if not datapath.check_pod(net):
            return
        datapath.teardown_pod(net)
    datapath.setup_pod(net)
