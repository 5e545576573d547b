"""The daemon's side of the Kubernetes API: :class:`KubeLink` wires a
:class:`backends.kubernetes.KubeWatcher` to the node's executor.

- **Start like upstream**: with custom networking or ``ANNOTATE_POD_IP`` the daemon waits for
  the API server (forever: the pod is not ready meanwhile); otherwise for
  ``IPAMD_KUBE_START_WAIT_SECONDS`` (30 s), then starts without it and the watches connect
  when it comes. Pods are served from the warm pool while it is away (nothing on the ADD or
  DEL path waits for it).
- **What the node decides on** is fed to it as inputs (the decisions stay in the pure core):
  the node's ENIConfig (:class:`~ipamcore.node.inputs.EniConfigChanged`: subnet and groups of
  new ENIs, or missing: no new ENI) and the Node's capacity ``pods``
  (:class:`~ipamcore.node.inputs.MaxPodsChanged`), each time the watch cache changes them.
- **Writes**, never on a request's path: the pod-ips annotation after an ADD's reply and
  its clear after a DEL's, in a chain per pod (a DEL's clear waits for its ADD's set; one
  the API server's absence stopped is written when it returns, within 10 min); the
  CNINode feature when the ENIConfig name is known; Events on the aws-node pod for what an
  operator must act on, from the node's state every ``REPORT_INTERVAL_S`` of the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from adapters.ipamd.clock import Clock
from adapters.ipamd.executor import NodeExecutor
from backends.kubernetes import logs as kube_logs
from backends.kubernetes.client import LightkubeApi, cluster_config
from backends.kubernetes.informer import CacheChange
from backends.kubernetes.settings import KubeSettings
from backends.kubernetes.watcher import KubeWatcher
from ipamcore.effects import CreateEni
from ipamcore.eniconfig import EniConfigChoice, Observations
from ipamcore.errors import FailureKind
from ipamcore.events import EffectFailed
from ipamcore.kube import KubeError
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node.replies import POOL_EMPTY

REPORT_INTERVAL_S = 10.0
ANNOTATION_DRAIN_S = 2.0  # at stop, annotations in flight get this long
ANNOTATION_RETRY_EVERY_S = 5.0  # an annotation the API server's absence stopped: tried again
ANNOTATION_RETRY_FOR_S = 600.0  # ... once it is back, for at most this long
# A pod whose ADD was turned away for want of an address counts as waiting from its first
# such ADD until one succeeds, its DEL, or no retry for this long (kubelet gave it up).
TURNED_AWAY_FORGET_S = 300.0


class KubeLink:
    def __init__(
        self,
        watcher: KubeWatcher,
        executor: NodeExecutor,
        clock: Clock,
        log: Any,
        report_interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        self.watcher, self.executor, self.clock, self.log = watcher, executor, clock, log
        self._logger: Any = None  # the backend's logger before ours (None: not swapped)
        self.settings: KubeSettings = watcher.settings
        self.report_interval_s = report_interval_s
        self._fed_eniconfig: EniConfigChoice | None = None
        self._fed_max_pods: int | bool | None = False  # False: nothing fed yet
        self._cninode_for = ""
        self._chains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reporter: asyncio.Task[None] | None = None
        # What the node's inputs show, for Events.
        self._subnet_full = ""
        self._unauthorized = ""
        self._throttled_since: float | None = None
        self._create_subnets: dict[int, str] = {}
        # pod -> (first, last) monotonic times of ADDs turned away with no address: an ADD
        # waits IPAMD_ADD_WAIT_SECONDS (5 s) and kubelet retries, so a pod waits across ADDs
        self._turned_away: dict[tuple[str, str], tuple[float, float]] = {}
        self.events_posted: list[str] = []  # reasons, for tests and introspection

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], executor: NodeExecutor, clock: Clock, log: Any
    ) -> KubeLink | None:
        """The link when this node runs under Kubernetes (``MY_NODE_NAME`` and an API server
        to reach: in a pod, or ``KUBECONFIG``); None otherwise (the daemon runs as before)."""
        settings = kube_settings(env)
        if settings is None:
            return None
        try:
            config = cluster_config(settings)
        except KubeError as exc:
            log.error("no Kubernetes API: cannot read its configuration", error=str(exc))
            return None
        api = LightkubeApi(config, reporting_instance=settings.node_name, now=clock.now)
        watcher = KubeWatcher(api, settings, clock)
        return cls(watcher, executor, clock, log, settings.event_interval_s)

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Start the watches and wait for the API server as upstream does; then feed the
        node what is known (before its start-up, so its first ENI is placed right)."""
        log = self.log.bind(component="kube") if hasattr(self.log, "bind") else self.log
        self._logger = kube_logs.use_logger(log)
        self.watcher.subscribe(self._on_change)
        self.executor.input_hooks.append(self._on_input)
        self.executor.reply_hooks.append(self._on_reply)
        await self.watcher.start()
        s = self.settings
        wait = None if s.needs_api_server else s.start_wait_s
        if wait is None:
            self.log.info("waiting for the API server (custom networking or ANNOTATE_POD_IP)")
        synced = await self.watcher.wait_synced(wait)
        if not synced:
            self.log.warning(
                "API server not reached; starting without it (the watches go on trying)",
                waited_s=wait,
            )
        self._feed()
        self._reporter = asyncio.ensure_future(self._report_loop())

    async def stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reporter
        pending = [t for t in (*self._chains.values(), *self._tasks) if not t.done()]
        if pending:  # real time: the clock may be virtual
            await asyncio.wait(pending, timeout=ANNOTATION_DRAIN_S)
            for t in pending:
                t.cancel()
        await self.watcher.stop()
        aclose = getattr(self.watcher.api, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        if self._logger is not None:
            kube_logs.use_logger(self._logger)
            self._logger = None

    def stats(self) -> dict[str, object]:
        return {**self.watcher.stats(), "eventsPosted": list(self.events_posted)}

    # ------------------------------------------------------------ cache -> node inputs

    def _on_change(self, change: CacheChange) -> None:
        if change.kind in ("node", "eniconfig"):
            self._feed()

    def _feed(self) -> None:
        now = self.executor.clock.monotonic()
        node = self.watcher.node()
        if node is not None:
            max_pods = self.watcher.max_pods(0) or None
            if max_pods != self._fed_max_pods:
                self._fed_max_pods = max_pods
                self.executor.feed(i.MaxPodsChanged(now, max_pods))
        choice = self._choice()
        if choice is None or choice == self._fed_eniconfig:
            return
        self._fed_eniconfig = choice
        spec = choice.spec
        self.executor.feed(
            i.EniConfigChanged(
                now, choice.name, spec.subnet if spec else None,
                spec.security_groups if spec else (),
            )
        )  # fmt: skip
        if choice.name != self._cninode_for:
            self._cninode_for = choice.name
            self._spawn(self.watcher.ensure_cninode_feature())
        if spec is None:
            self._spawn(self._report_now())

    # ------------------------------------------------------------ annotations

    def _on_reply(self, request: i.Input, reply: c.Reply) -> None:
        """After an ADD's or a DEL's reply: note a pod turned away for want of an address
        (for the Event), set or clear the pod's pod-ips annotation, in the pod's chain (the
        clear never overtakes the set)."""
        self._note_waiting(request, reply)
        if not self.settings.annotate_pod_ip or reply.error or reply.allocation is None:
            return
        allocation = reply.allocation
        ip = allocation.ipv4 or allocation.ipv6 or ""
        if isinstance(request, i.Add):
            args = (ip, "")
        elif isinstance(request, i.Del) and reply.released:
            args = ("", ip)
        else:
            return
        pod = allocation.pod
        if not pod.namespace or not pod.name:
            return
        key = (pod.namespace, pod.name)
        before = self._chains.get(key)
        task = asyncio.ensure_future(self._annotate(before, key, *args))
        self._chains[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(key) is done:
                del self._chains[key]

        task.add_done_callback(forget)

    async def _annotate(
        self, before: asyncio.Task[None] | None, key: tuple[str, str], ip: str, released: str
    ) -> None:
        if before is not None:
            with contextlib.suppress(BaseException):
                await before
        ok = await self.watcher.annotate_pod_ips(key[0], key[1], ip, released)
        waited = 0.0
        while not ok and not self.watcher.connected() and waited < ANNOTATION_RETRY_FOR_S:
            # The API server is away: try again once the watches are back (the chain keeps
            # this pod's later set or clear behind this one).
            await self.clock.sleep(ANNOTATION_RETRY_EVERY_S)
            waited += ANNOTATION_RETRY_EVERY_S
            if self.watcher.connected():
                ok = await self.watcher.annotate_pod_ips(key[0], key[1], ip, released)
        if not ok:
            self.log.warning(
                "pod-ips annotation not written", pod=f"{key[0]}/{key[1]}",
                action="set" if ip else "clear",
            )  # fmt: skip

    # ------------------------------------------------------------ events

    def _note_waiting(self, request: i.Input, reply: c.Reply) -> None:
        if not isinstance(request, i.Add | i.Del):
            return
        key = (request.pod.namespace, request.pod.name) if isinstance(request, i.Add) else (
            (reply.allocation.pod.namespace, reply.allocation.pod.name)
            if reply.allocation is not None else ("", "")
        )  # fmt: skip
        if not key[1]:
            return
        if isinstance(request, i.Add) and reply.error == POOL_EMPTY:
            first, _ = self._turned_away.get(key, (request.now, 0.0))
            self._turned_away[key] = (min(first, request.now), self.executor.clock.monotonic())
        elif isinstance(request, i.Del) or not reply.error:
            self._turned_away.pop(key, None)

    def _waiting(self) -> tuple[int, float | None]:
        """Pods waiting for an address (ADDs waiting now, or turned away and retried by
        kubelet), and since when (monotonic)."""
        count, since = self.executor.node.waiting_adds()
        mono = self.executor.clock.monotonic()
        for key, (_, last) in list(self._turned_away.items()):
            if mono - last > TURNED_AWAY_FORGET_S:
                del self._turned_away[key]
        if self._turned_away:
            count = max(count, len(self._turned_away))
            first = min(f for f, _ in self._turned_away.values())
            since = first if since is None else min(since, first)
        return count, since

    def _on_input(self, inp: i.Input, commands: list[c.Command]) -> None:
        """What the node's inputs say about EC2, for the Events (no decision here)."""
        for command in commands:
            if isinstance(command, c.PerformEffect) and isinstance(command.effect, CreateEni):
                self._create_subnets[command.cid] = command.effect.subnet_id
        if isinstance(inp, i.EffectDone):
            subnet = self._create_subnets.pop(inp.cid, "")
            outcome = inp.outcome
            if isinstance(outcome, EffectFailed):
                self._failed(outcome.kind, outcome.message, subnet)
            else:
                self._subnet_full = self._unauthorized = ""
                self._throttled_since = None
        elif isinstance(inp, i.Failed):
            self._create_subnets.pop(inp.cid, None)
            if inp.kind is not None:
                self._failed(inp.kind, inp.message, "")

    def _failed(self, kind: FailureKind, message: str, subnet: str) -> None:
        if kind is FailureKind.SUBNET_FULL:
            self._subnet_full = subnet or "(new ENI's subnet)"
        elif kind is FailureKind.THROTTLED:
            if self._throttled_since is None:
                self._throttled_since = self.clock.now()
        elif "Unauthorized" in message or "AccessDenied" in message:
            self._unauthorized = message.split(":")[0][:120]

    def _choice(self) -> EniConfigChoice | None:
        """The node's ENIConfig, once every watch has listed (before, the Node may be known
        and the ENIConfigs not yet: no false "missing")."""
        return self.watcher.eniconfig_for_node() if self.watcher.synced() else None

    def observations(self) -> Observations:
        count, since = self._waiting()
        offset = self.clock.now() - self.clock.monotonic()
        return Observations(
            eniconfig=self._choice(),
            subnet_full=self._subnet_full,
            ec2_unauthorized=self._unauthorized,
            throttled_since=self._throttled_since,
            pods_waiting=count,
            waiting_since=None if since is None else since + offset,
        )

    async def _report_now(self) -> None:
        posted = await self.watcher.report(self.observations())
        self.events_posted.extend(e.reason for e in posted)

    async def _report_loop(self) -> None:
        while True:
            try:
                await self._report_now()
            except Exception as exc:  # an Event is never worth stopping the daemon
                self.log.warning("kube events failed", error=str(exc))
            await self.clock.sleep(self.report_interval_s)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def kube_settings(env: Mapping[str, str]) -> KubeSettings | None:
    """The Kubernetes settings when the node has an API server to reach: ``MY_NODE_NAME``
    and either in-cluster configuration (``KUBERNETES_SERVICE_HOST`` or ``CLUSTER_ENDPOINT``
    with a service-account token) or ``KUBECONFIG``. Raises KubeSettingsError for a bad value."""
    if not env.get("MY_NODE_NAME", "").strip():
        return None
    settings = KubeSettings.from_env(env)
    if not (settings.in_cluster or settings.kubeconfig):
        return None
    return settings
