"""The :class:`ipamcore.kube.KubeApiPort` on lightkube (and httpx for watches).

Every failure leaves as :class:`ipamcore.kube.KubeError` (lightkube's and httpx's exceptions
are translated here). Objects are decoded from the API's JSON into the core's values.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig, SingleConfig, operators
from lightkube.config import client_adapter
from lightkube.config.models import Cluster, User
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from backends.kubernetes.settings import KubeSettings
from ipamcore.kube import (
    CNINODE_GROUP,
    CNINODE_VERSION,
    ENICONFIG_GROUP,
    ENICONFIG_VERSION,
    CniNode,
    CniNodeFeature,
    EniConfig,
    EniConfigSpec,
    KubeError,
    KubeEvent,
    KubeFailure,
    KubeObject,
    Listing,
    NodeInfo,
    ObjectRef,
    PodInfo,
    ResourceKind,
    Selector,
    WatchEvent,
)

ENIConfigResource = create_global_resource(
    ENICONFIG_GROUP, ENICONFIG_VERSION, "ENIConfig", "eniconfigs"
)
CNINodeResource = create_global_resource(CNINODE_GROUP, CNINODE_VERSION, "CNINode", "cninodes")
# Generic (untyped) resources for the core kinds too: lightkube's typed models reject an
# object missing a field they require, and ipamd reads only a few fields of each.
Node = create_global_resource("", "v1", "Node", "nodes")
Pod = create_namespaced_resource("", "v1", "Pod", "pods")
Event = create_namespaced_resource("events.k8s.io", "v1", "Event", "events")
Obj = dict[str, Any]

# ------------------------------------------------------------------ configuration


def cluster_config(settings: KubeSettings) -> SingleConfig:
    """In a pod: the service account's token file (re-read by lightkube when the server
    answers 401, as after a rotation) and CA, and ``CLUSTER_ENDPOINT`` or
    ``KUBERNETES_SERVICE_HOST``/``_PORT``. Elsewhere: the ``KUBECONFIG`` file."""
    if settings.in_cluster:
        account = Path(settings.service_account_dir)
        server = settings.cluster_endpoint
        if not server:
            host = settings.service_host
            host = f"[{host}]" if ":" in host else host
            server = f"https://{host}:{settings.service_port}"
        config = KubeConfig.from_one(
            cluster=Cluster(server=server, certificate_auth=str(account / "ca.crt")),
            user=User(token_file=str(account / "token")),
            namespace=settings.pod_namespace,
        )
    elif settings.kubeconfig:
        try:
            config = KubeConfig.from_file(settings.kubeconfig)
        except ConfigError as e:
            raise KubeError(KubeFailure.INVALID, str(e)) from e
    else:
        raise KubeError(
            KubeFailure.INVALID,
            "no API server: not in a pod (no service-account token with "
            "KUBERNETES_SERVICE_HOST or CLUSTER_ENDPOINT) and no KUBECONFIG",
        )
    single = config.get()
    if single is None:
        raise KubeError(KubeFailure.INVALID, "the kubeconfig has no current context")
    return single


# ------------------------------------------------------------------ decoding


def _meta(d: Obj) -> Obj:
    return d.get("metadata") or {}


def node_from(d: Obj) -> NodeInfo:
    meta = _meta(d)
    capacity = (d.get("status") or {}).get("capacity") or {}
    pods = capacity.get("pods")
    return NodeInfo(
        name=meta.get("name", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        capacity_pods=None if pods is None else str(pods),
        unschedulable=bool((d.get("spec") or {}).get("unschedulable")),
        resource_version=meta.get("resourceVersion", ""),
    )


def pod_from(d: Obj) -> PodInfo:
    meta, spec, st = _meta(d), d.get("spec") or {}, d.get("status") or {}
    ips = tuple(p.get("ip", "") for p in st.get("podIPs") or () if p.get("ip"))
    return PodInfo(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node_name=spec.get("nodeName", ""),
        annotations=dict(meta.get("annotations") or {}),
        phase=st.get("phase", ""),
        pod_ips=ips or ((st["podIP"],) if st.get("podIP") else ()),
        host_network=bool(spec.get("hostNetwork")),
        resource_version=meta.get("resourceVersion", ""),
    )


def eniconfig_from(d: Obj) -> EniConfig:
    spec = d.get("spec") or {}
    return EniConfig(
        name=_meta(d).get("name", ""),
        spec=EniConfigSpec(
            subnet=str(spec.get("subnet", "")),
            security_groups=tuple(str(g) for g in spec.get("securityGroups") or ()),
        ),
        resource_version=_meta(d).get("resourceVersion", ""),
    )


def cninode_from(d: Obj) -> CniNode:
    features = (d.get("spec") or {}).get("features") or ()
    return CniNode(
        name=_meta(d).get("name", ""),
        features=tuple(CniNodeFeature(f.get("name", ""), f.get("value", "")) for f in features),
        resource_version=_meta(d).get("resourceVersion", ""),
    )


DECODERS: dict[ResourceKind, Callable[[Obj], KubeObject]] = {
    "node": node_from,
    "pod": pod_from,
    "eniconfig": eniconfig_from,
}
PATHS: dict[ResourceKind, str] = {
    "node": "api/v1/nodes",
    "pod": "api/v1/pods",
    "eniconfig": f"apis/{ENICONFIG_GROUP}/{ENICONFIG_VERSION}/eniconfigs",
}
RESOURCES: dict[ResourceKind, Any] = {"node": Node, "pod": Pod, "eniconfig": ENIConfigResource}


def as_dict(obj: Any) -> Obj:
    return obj if isinstance(obj, dict) else dict(obj.to_dict())


# ------------------------------------------------------------------ errors

_BY_STATUS = {
    401: KubeFailure.UNAUTHORIZED,
    403: KubeFailure.FORBIDDEN,
    404: KubeFailure.NOT_FOUND,
    409: KubeFailure.CONFLICT,
    410: KubeFailure.EXPIRED,
    429: KubeFailure.THROTTLED,
}


def failure_for(code: int) -> KubeFailure:
    if code in _BY_STATUS:
        return _BY_STATUS[code]
    return KubeFailure.SERVER if code >= 500 else KubeFailure.INVALID


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    raw = response.headers.get("Retry-After", "")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def translate(e: BaseException) -> KubeError:
    """A library exception as the core's KubeError."""
    if isinstance(e, KubeError):
        return e
    if isinstance(e, ApiError):
        code = e.status.code or (e.response.status_code if e.response is not None else 0)
        return KubeError(
            failure_for(int(code)), str(e.status.message or e), _retry_after(e.response)
        )
    if isinstance(e, httpx2.HTTPStatusError):
        code = e.response.status_code
        return KubeError(failure_for(code), f"HTTP {code}", _retry_after(e.response))
    if isinstance(e, httpx2.TransportError | httpx2.StreamError | ConnectionError | TimeoutError):
        return KubeError(KubeFailure.UNAVAILABLE, f"{type(e).__name__}: {e}")
    if isinstance(e, ConfigError):
        return KubeError(KubeFailure.INVALID, str(e))
    return KubeError(KubeFailure.INVALID, f"{type(e).__name__}: {e}")


def rfc3339_micro(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------ the port


class LightkubeApi:
    """:class:`ipamcore.kube.KubeApiPort` for one cluster.

    ``watch_idle_s`` is the read deadline of a watch stream: with bookmarks asked for, a
    live server writes at least every minute or so; silence longer than this means a dead
    connection, and the stream raises ``UNAVAILABLE`` (the reflector resumes from its last
    resourceVersion).
    """

    def __init__(
        self,
        config: SingleConfig,
        request_timeout_s: float = 10.0,
        watch_idle_s: float = 150.0,
        reporting_instance: str = "",
        now: Callable[[], float] | None = None,
    ) -> None:
        timeout = httpx2.Timeout(request_timeout_s)
        self._client = AsyncClient(config=config, timeout=timeout, field_manager="aws-node")
        self._stream = client_adapter.AsyncClient(
            config,
            client_adapter.ConnectionParams(
                timeout=httpx2.Timeout(request_timeout_s, read=watch_idle_s)
            ),
        )
        self._reporting_instance = reporting_instance
        self._now = now
        self._event_ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._client.close()
        await self._stream.aclose()

    async def list(self, kind: ResourceKind, selector: Selector = Selector()) -> Listing:
        decode = DECODERS[kind]
        try:
            iterable = self._client.list(
                RESOURCES[kind],
                namespace="*" if kind == "pod" else None,
                fields=_selector_dict(selector.fields),  # type: ignore[arg-type]
                labels=_selector_dict(selector.labels),  # type: ignore[arg-type]
            )
            items = tuple([decode(as_dict(o)) async for o in iterable])
            return Listing(items, iterable.resourceVersion)
        except Exception as e:
            raise translate(e) from e

    async def watch(
        self,
        kind: ResourceKind,
        resource_version: str,
        selector: Selector = Selector(),
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if selector.fields:
            params["fieldSelector"] = selector.fields
        if selector.labels:
            params["labelSelector"] = selector.labels
        decode = DECODERS[kind]
        request = self._stream.build_request("GET", PATHS[kind], params=params)
        try:
            response = await self._stream.send(request, stream=True)
        except Exception as e:
            raise translate(e) from e
        try:
            if response.status_code != 200:
                await response.aread()
                raise KubeError(
                    failure_for(response.status_code),
                    response.text[:200],
                    _retry_after(response),
                )
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                yield _watch_event(line, decode)
        except KubeError:
            raise
        except Exception as e:
            raise translate(e) from e
        finally:
            await response.aclose()

    async def get_node(self, name: str) -> NodeInfo:
        return node_from(await self._get(Node, name))

    async def get_pod(self, namespace: str, name: str) -> PodInfo:
        return pod_from(await self._get(Pod, name, namespace))

    async def get_eniconfig(self, name: str) -> EniConfig:
        return eniconfig_from(await self._get(ENIConfigResource, name))

    async def get_cninode(self, name: str) -> CniNode:
        return cninode_from(await self._get(CNINodeResource, name))

    async def _get(self, res: Any, name: str, namespace: str | None = None) -> Obj:
        try:
            return as_dict(await self._client.get(res, name, namespace=namespace))
        except Exception as e:
            raise translate(e) from e

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> PodInfo:
        meta: Obj = {"annotations": dict(annotations)}
        if resource_version:
            meta["resourceVersion"] = resource_version
        patch = {"metadata": meta}
        return pod_from(await self._merge_patch(Pod, name, patch, namespace))

    async def patch_cninode_features(
        self, name: str, features: tuple[CniNodeFeature, ...], resource_version: str
    ) -> CniNode:
        patch: Obj = {
            "metadata": {"resourceVersion": resource_version},
            "spec": {"features": [{"name": f.name, "value": f.value} for f in features]},
        }
        return cninode_from(await self._merge_patch(CNINodeResource, name, patch))

    async def _merge_patch(
        self, res: Any, name: str, patch: Obj, namespace: str | None = None
    ) -> Obj:
        try:
            out = await self._client.patch(
                res, name, patch, namespace=namespace, patch_type=PatchType.MERGE
            )
            return as_dict(out)
        except Exception as e:
            raise translate(e) from e

    async def create_event(self, event: KubeEvent, regarding: ObjectRef) -> None:
        """An ``events.k8s.io/v1`` Event, as upstream's recorder (``aws-node`` reporting)."""
        now = self._now() if self._now is not None else dt.datetime.now(dt.UTC).timestamp()
        body: Obj = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{regarding.name}.{int(now * 1e6):x}{next(self._event_ids):x}",
                "namespace": regarding.namespace or "default",
            },
            "eventTime": rfc3339_micro(now),
            "reportingController": "aws-node",
            "reportingInstance": self._reporting_instance or "aws-node",
            "action": event.action or event.reason,
            "reason": event.reason,
            "note": event.note[:1024],
            "type": event.type,
            "regarding": {
                "apiVersion": regarding.api_version,
                "kind": regarding.kind,
                "name": regarding.name,
                **({"namespace": regarding.namespace} if regarding.namespace else {}),
                **({"uid": regarding.uid} if regarding.uid else {}),
            },
        }
        try:
            event_obj: Any = Event.from_dict(body)
            await self._client.create(event_obj)
        except Exception as e:
            raise translate(e) from e


def _selector_dict(text: str) -> list[tuple[str, Any]] | None:
    """``a=b,c!=d`` as lightkube's selector pairs (equality and inequality terms)."""
    if not text:
        return None
    out: list[tuple[str, Any]] = []
    for term in text.split(","):
        if "!=" in term:
            key, _, value = term.partition("!=")
            out.append((key.strip(), operators.not_equal(value.strip())))
        else:
            key, _, value = term.partition("=")
            out.append((key.strip(), value.lstrip("=").strip()))
    return out


def _watch_event(line: str, decode: Callable[[Obj], KubeObject]) -> WatchEvent:
    try:
        raw = json.loads(line)
        type_, obj = raw["type"], raw["object"]
    except (ValueError, KeyError, TypeError) as e:
        raise KubeError(KubeFailure.INVALID, f"bad watch line: {line[:200]!r}") from e
    if type_ == "ERROR":
        code = int(obj.get("code") or 500)
        raise KubeError(failure_for(code), str(obj.get("message", "")))
    rv = str(_meta(obj).get("resourceVersion", ""))
    if type_ == "BOOKMARK":
        return WatchEvent("BOOKMARK", rv)
    if type_ not in ("ADDED", "MODIFIED", "DELETED"):
        raise KubeError(KubeFailure.INVALID, f"unknown watch event type {type_!r}")
    return WatchEvent(type_, rv, decode(obj))
