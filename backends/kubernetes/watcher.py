"""KubeWatcher: the one Kubernetes component the daemon starts.

It runs a reflector for this node's Node (``fieldSelector=metadata.name=<node>``), one for
the pods on the node (``spec.nodeName=<node>``) and, with custom networking, one for the
ENIConfigs; it answers reads from their cache (:class:`ipamcore.kube.KubeView`) and does
the writes ipamd makes: the pod-ips annotation, Events on the aws-node pod, the CNINode
feature. How the daemon wires it (the daemon itself is not changed here)::

    settings = KubeSettings.from_env(os.environ)
    api = LightkubeApi(cluster_config(settings), reporting_instance=settings.node_name)
    kube = KubeWatcher(api, settings, clock)
    kube.subscribe(on_change)        # CacheChange: node labels, ENIConfigs, pods
    await kube.start()               # returns at once; reflectors run as tasks
    if settings.needs_api_server:    # custom networking or ANNOTATE_POD_IP: wait, as upstream
        await kube.wait_synced()     # (forever; the pod is not ready meanwhile)
    else:
        await kube.wait_synced(settings.start_wait_s)   # then go on without it
    choice = kube.eniconfig_for_node()   # None: custom networking off; .spec None: missing
    max_pods = kube.max_pods(fallback)
    await kube.annotate_pod_ips(ns, name, ip)             # on ADD (ANNOTATE_POD_IP)
    await kube.annotate_pod_ips(ns, name, "", released)   # on DEL
    await kube.report(Observations(eniconfig=choice, subnet_full=..., pods_waiting=...))
                                     # Events for what an operator must act on (or post_event)
    await kube.ensure_cninode_feature()  # once the node's ENIConfig is known
    await kube.stop()

Writes never raise: they log and return False (the API server being away must not fail an
ADD or a DEL; upstream logs these failures too). Upstream awaits the annotation inside the
ADD; here it is best run after the reply, in a task serialized with that pod's other
ADD/DEL work (the daemon's per-key locks), so that an API server that is slow or away adds
no latency to pods and a DEL's clear never overtakes its ADD's set.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable

import attrs

from backends.kubernetes import logs
from backends.kubernetes.informer import (
    Backoff,
    CacheChange,
    Clock,
    KubeCache,
    Reflector,
)
from backends.kubernetes.settings import KubeSettings
from ipamcore.eniconfig import (
    AnnotationAction,
    EniConfigChoice,
    EventGate,
    Observations,
    choose_eniconfig,
    cninode_feature_for,
    eniconfig_name,
    max_pods,
    pod_ips_patch,
    with_feature,
)
from ipamcore.kube import (
    EniConfig,
    KubeApiPort,
    KubeError,
    KubeEvent,
    KubeFailure,
    NodeInfo,
    ObjectRef,
    PodInfo,
    Selector,
)

CONFLICT_DELAYS_S = (0.01, 0.05, 0.25, 1.25)  # client-go's retry.DefaultBackoff, no jitter


def spread_watch_timeout(node_name: str) -> int:
    """300 to 599 s, fixed per node: client-go picks 5 to 10 min at random so that a fleet's
    watches do not all end and reopen together; a hash of the node name does the same
    without randomness."""
    return 300 + zlib.crc32(node_name.encode()) % 300


class KubeWatcher:
    def __init__(
        self,
        api: KubeApiPort,
        settings: KubeSettings,
        clock: Clock,
        backoff: Backoff | None = None,
        watch_timeout_s: int | None = None,
    ) -> None:
        self.api, self.settings, self.clock = api, settings, clock
        self.cache = KubeCache()
        node = settings.node_name
        if backoff is None:
            backoff = Backoff(jitter=0.5, seed=node)
        if watch_timeout_s is None:
            watch_timeout_s = spread_watch_timeout(node)
        self.reflectors = [
            Reflector(
                api, self.cache, "node", clock,
                Selector(fields=f"metadata.name={node}"), backoff, watch_timeout_s,
            ),
            Reflector(
                api, self.cache, "pod", clock,
                Selector(fields=f"spec.nodeName={node}"), backoff, watch_timeout_s,
            ),
        ]  # fmt: skip
        if settings.custom_networking:
            self.reflectors.append(
                Reflector(api, self.cache, "eniconfig", clock, Selector(), backoff, watch_timeout_s)
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._aws_node_uid = ""
        self._last_choice: EniConfigChoice | None = None
        self.events = EventGate(settings.event_thresholds)
        if settings.custom_networking:
            self.cache.listeners.append(self._log_eniconfig_choice)

    def _log_eniconfig_choice(self, change: CacheChange) -> None:
        """A log line whenever the node's ENIConfig changes, goes missing or comes back."""
        if change.kind in ("node", "eniconfig"):
            self._log_choice()

    def _log_choice(self) -> None:
        # Not before every watch listed: the Node may be known and the ENIConfigs not yet,
        # which is no missing ENIConfig (an error line an operator would act on).
        if not self.synced():
            return
        choice = self.eniconfig_for_node()
        if choice is None or choice == self._last_choice:
            return
        self._last_choice = choice
        if choice.spec is None:
            logs.log.error("eniconfig_missing", eniconfig=choice.name, node=self.settings.node_name)
        else:
            logs.log.info(
                "eniconfig_for_node",
                eniconfig=choice.name,
                subnet=choice.spec.subnet,
                security_groups=list(choice.spec.security_groups),
            )

    # ------------------------------------------------------------ lifecycle

    def subscribe(self, listener: Callable[[CacheChange], None]) -> None:
        self.cache.listeners.append(listener)

    async def start(self) -> None:
        for r in self.reflectors:
            self._tasks.append(asyncio.ensure_future(r.run()))

    async def stop(self) -> None:
        for r in self.reflectors:
            r.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def wait_synced(self, timeout_s: float | None = None) -> bool:
        """Until every reflector has listed once; False when ``timeout_s`` of the clock
        passed first."""
        waits = asyncio.ensure_future(self._all_synced())
        if timeout_s is None:
            await waits
            self._synced_now()
            return True
        timer = asyncio.ensure_future(self.clock.sleep(timeout_s))
        done, _ = await asyncio.wait({waits, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        if waits in done:
            self._synced_now()
            return True
        waits.cancel()
        return False

    def _synced_now(self) -> None:
        if self.settings.custom_networking:
            self._log_choice()  # the changes while listing were not logged

    async def _all_synced(self) -> None:
        for r in self.reflectors:
            await r.synced.wait()

    # ------------------------------------------------------------ reads (KubeView)

    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def connected(self) -> bool:
        return all(r.connected for r in self.reflectors)

    def stats(self) -> dict[str, object]:
        """For introspection and metrics: per kind, its version, whether its watch is up,
        and its LIST, WATCH, error, 410 and bookmark counts."""
        return {
            "synced": self.synced(),
            "connected": self.connected(),
            "kinds": {
                r.kind: {
                    "resourceVersion": r.resource_version,
                    "connected": r.connected,
                    **attrs.asdict(r.stats),
                    "lastError": str(r.last_error) if r.last_error else "",
                }
                for r in self.reflectors
            },
        }

    def node(self) -> NodeInfo | None:
        return self.cache.node()

    def eniconfig(self, name: str) -> EniConfig | None:
        return self.cache.eniconfig(name)

    def pods(self) -> tuple[PodInfo, ...]:
        return self.cache.pods()

    def eniconfig_for_node(self) -> EniConfigChoice | None:
        """The node's ENIConfig with custom networking on (its ``spec`` None when no such
        object exists); None when custom networking is off or the Node is not known yet."""
        node = self.node()
        if not self.settings.custom_networking or node is None:
            return None
        return choose_eniconfig(node, self.eniconfig, self.settings.eniconfig_keys)

    def max_pods(self, fallback: int) -> int:
        return max_pods(self.node(), fallback)

    # ------------------------------------------------------------ writes

    async def annotate_pod_ips(
        self, namespace: str, name: str, ip: str, released: str = ""
    ) -> bool:
        """Set ``vpc.amazonaws.com/pod-ips`` to ``ip`` (ADD) or clear it when it names
        ``released`` (DEL); a 409 re-reads the pod and tries again (4 times, as upstream's
        ``RetryOnConflict``). The first try uses the cached pod: no GET in the common case."""
        pod = self.cache.pod(namespace, name)
        for attempt in range(len(CONFLICT_DELAYS_S) + 1):
            try:
                if pod is None:
                    pod = await self.api.get_pod(namespace, name)
                decision = pod_ips_patch(pod, ip, released)
                if decision.action is AnnotationAction.MISMATCH:
                    logs.log.warning(
                        "pod_ips_mismatch", pod=f"{namespace}/{name}", released=released
                    )
                    return False
                if decision.action is AnnotationAction.SKIP:
                    return True
                await self.api.patch_pod_annotations(
                    namespace, name, decision.annotations, pod.resource_version
                )
                return True
            except KubeError as e:
                if e.kind is KubeFailure.NOT_FOUND:
                    return not ip  # a DEL of a pod already gone needs nothing
                if e.kind is not KubeFailure.CONFLICT or attempt == len(CONFLICT_DELAYS_S):
                    logs.log.warning(
                        "pod_ips_annotate_failed", pod=f"{namespace}/{name}", error=str(e)
                    )
                    return False
                pod = None  # read it again
                await self.clock.sleep(CONFLICT_DELAYS_S[attempt])
        return False

    async def post_event(self, event: KubeEvent) -> bool:
        """Post ``event`` on this node's aws-node pod (``MY_POD_NAME``); False when there
        is no such pod name or the API server refused."""
        s = self.settings
        if not s.pod_name:
            return False
        if not self._aws_node_uid:
            with contextlib.suppress(KubeError):
                self._aws_node_uid = (await self.api.get_pod(s.pod_namespace, s.pod_name)).uid
        ref = ObjectRef("Pod", s.pod_name, s.pod_namespace, self._aws_node_uid)
        try:
            await self.api.create_event(event, ref)
            return True
        except KubeError as e:
            logs.log.warning("kube_event_failed", reason=event.reason, error=str(e))
            return False

    async def report(self, observations: Observations) -> list[KubeEvent]:
        """Post the Events the observations call for now (:class:`EventGate`: each when its
        condition starts, then every 10 min while it lasts); the ones posted."""
        due = self.events.step(observations, self.clock.now())
        return [e for e in due if await self.post_event(e)]

    async def ensure_cninode_feature(self) -> bool:
        """Upstream's ``AddFeatureToCNINode(CustomNetworking, <ENIConfig name>)``: with
        custom networking and security groups for pods (``ENABLE_POD_ENI``) on, and an
        ENIConfig other than ``default``. True when nothing was needed or the patch took."""
        node = self.node()
        if node is None or not self.settings.pod_eni:
            return node is not None
        name = eniconfig_name(node, self.settings.eniconfig_keys)
        feature = cninode_feature_for(self.settings.custom_networking, name)
        if feature is None:
            return True
        for attempt in range(len(CONFLICT_DELAYS_S) + 1):
            try:
                cninode = await self.api.get_cninode(self.settings.node_name)
                features = with_feature(cninode.features, feature)
                if features is None:
                    return True
                await self.api.patch_cninode_features(
                    cninode.name, features, cninode.resource_version
                )
                return True
            except KubeError as e:
                if e.kind is not KubeFailure.CONFLICT or attempt == len(CONFLICT_DELAYS_S):
                    logs.log.warning("cninode_patch_failed", error=str(e))
                    return False
                await self.clock.sleep(CONFLICT_DELAYS_S[attempt])
        return False
