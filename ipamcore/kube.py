"""The Kubernetes API as the daemon needs it: values, failures and the port (typing only).

What ipamd reads from the API server: its own Node (labels, annotations, capacity ``pods``),
the pods on its node (``spec.nodeName``), the ENIConfigs (``crd.k8s.amazonaws.com/v1alpha1``,
spec ``{subnet, securityGroups}``) and its CNINode (``networking.k8s.aws/v1alpha1``). What it
writes: the ``vpc.amazonaws.com/pod-ips`` annotation of a pod, Events on its own aws-node pod,
and the CNINode's ``features``. The backend (``backends.kubernetes``) decodes the API's JSON
into the values below and raises :class:`KubeError` and nothing else; the decisions taken on
these values are pure functions in :mod:`ipamcore.eniconfig`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from typing import Literal, Protocol

import attrs

POD_IPS_ANNOTATION = "vpc.amazonaws.com/pod-ips"
ENICONFIG_GROUP = "crd.k8s.amazonaws.com"
ENICONFIG_VERSION = "v1alpha1"
CNINODE_GROUP = "networking.k8s.aws"
CNINODE_VERSION = "v1alpha1"


class KubeFailure(enum.Enum):
    """Why a request to the API server failed, as the caller must react to it."""

    UNAVAILABLE = "unavailable"  # no answer: connection refused or reset, timeout
    EXPIRED = "expired"  # 410 Gone: the resourceVersion is too old; list again
    CONFLICT = "conflict"  # 409: the object changed since it was read; read and retry
    NOT_FOUND = "not-found"  # 404
    THROTTLED = "throttled"  # 429 (Retry-After honoured by the backend's backoff)
    UNAUTHORIZED = "unauthorized"  # 401 (the token was re-read once already)
    FORBIDDEN = "forbidden"  # 403: RBAC
    SERVER = "server"  # 5xx
    INVALID = "invalid"  # 400, 422 or an answer that is not what the API defines


@attrs.frozen
class KubeError(Exception):
    """A failed request to the API server (the backend's only exception)."""

    kind: KubeFailure
    message: str = ""
    retry_after: float | None = None  # seconds, from a 429's Retry-After

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


@attrs.frozen
class NodeInfo:
    """This node's Node object, what ipamd reads of it."""

    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    capacity_pods: str | None = None  # a resource quantity as the API gives it ("110")
    unschedulable: bool = False
    resource_version: str = ""


@attrs.frozen
class PodInfo:
    """A pod on this node."""

    namespace: str
    name: str
    uid: str = ""
    node_name: str = ""
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    phase: str = ""
    pod_ips: tuple[str, ...] = ()
    host_network: bool = False
    resource_version: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)``."""
        return (self.namespace, self.name)


@attrs.frozen
class EniConfigSpec:
    """Where custom networking puts new ENIs: a subnet and its security groups."""

    subnet: str
    security_groups: tuple[str, ...] = ()


@attrs.frozen
class EniConfig:
    """An ENIConfig object: the subnet and security groups for a node's secondary ENIs."""

    name: str
    spec: EniConfigSpec
    resource_version: str = ""


@attrs.frozen
class CniNodeFeature:
    """One entry of a CNINode's ``spec.features``."""

    name: str  # "CustomNetworking", "SecurityGroupsForPods"
    value: str = ""


@attrs.frozen
class CniNode:
    """The node's CNINode (created by the VPC resource controller, same name as the Node)."""

    name: str
    features: tuple[CniNodeFeature, ...] = ()
    resource_version: str = ""


EventType = Literal["Normal", "Warning"]


@attrs.frozen
class KubeEvent:
    """An Event to post on the aws-node pod (``events.k8s.io/v1``): ``reason`` is one
    CamelCase word, ``note`` the human text, ``action`` what ipamd was doing."""

    type: EventType
    reason: str
    note: str
    action: str = ""


@attrs.frozen
class ObjectRef:
    """What an Event is about (``regarding``)."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"


ResourceKind = Literal["node", "pod", "eniconfig"]
KubeObject = NodeInfo | PodInfo | EniConfig
WatchType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@attrs.frozen
class Listing:
    """A LIST answer: the items and the collection's resourceVersion to watch from."""

    items: tuple[KubeObject, ...]
    resource_version: str


@attrs.frozen
class WatchEvent:
    """One line of a watch stream. A BOOKMARK carries only ``resource_version``."""

    type: WatchType
    resource_version: str
    obj: KubeObject | None = None


@attrs.frozen
class Selector:
    """A LIST/WATCH scope: ``fields`` and ``labels`` as the API's selector strings."""

    fields: str = ""
    labels: str = ""


class KubeApiPort(Protocol):
    """The API server, one request per call. Every method raises :class:`KubeError`."""

    async def list(self, kind: ResourceKind, selector: Selector = Selector()) -> Listing:
        """LIST ``kind`` with ``selector``: the objects and the resourceVersion to watch from."""

    def watch(
        self,
        kind: ResourceKind,
        resource_version: str,
        selector: Selector = Selector(),
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """Changes after ``resource_version``, with bookmarks. The stream ends when the
        server closes it (its timeout); an expired version raises ``EXPIRED``."""
        ...

    async def get_node(self, name: str) -> NodeInfo:
        """GET the Node ``name``."""

    async def get_pod(self, namespace: str, name: str) -> PodInfo:
        """GET the Pod ``namespace/name``."""

    async def get_eniconfig(self, name: str) -> EniConfig:
        """GET the ENIConfig ``name``."""

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> PodInfo:
        """JSON merge patch of the pod's annotations, refused with ``CONFLICT`` unless the
        pod is still at ``resource_version`` (optimistic lock)."""
        ...

    async def create_event(self, event: KubeEvent, regarding: ObjectRef) -> None:
        """POST ``event`` about the object ``regarding``."""

    async def get_cninode(self, name: str) -> CniNode:
        """GET the CNINode ``name``."""

    async def patch_cninode_features(
        self, name: str, features: tuple[CniNodeFeature, ...], resource_version: str
    ) -> CniNode:
        """Replace ``spec.features`` (JSON merge patch with the optimistic lock, as
        upstream's ``MergeFromWithOptimisticLock``)."""
        ...


class KubeView(Protocol):
    """What the daemon reads, served from a watch-fed cache (``backends.kubernetes``):
    answers at once, and keeps the last known state while the API server is away."""

    def node(self) -> NodeInfo | None:
        """The node's Node from the cache, or None before the first sync."""

    def eniconfig(self, name: str) -> EniConfig | None:
        """The ENIConfig ``name`` from the cache, or None."""

    def pods(self) -> tuple[PodInfo, ...]:
        """The pods on this node, from the cache."""

    def synced(self) -> bool:
        """Whether every watched kind has been listed once."""
        ...
