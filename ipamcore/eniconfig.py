"""Decisions on what the Kubernetes API shows: pure functions over :mod:`ipamcore.kube` values.

- which ENIConfig this node uses, chosen as upstream's ``GetNodeSpecificENIConfigName``
  (v1.23 ``pkg/eniconfig``): the label ``vpc.amazonaws.com/externalEniConfig``, then the
  annotation named by ``ENI_CONFIG_ANNOTATION_DEF``, then the label named by
  ``ENI_CONFIG_LABEL_DEF`` (both ``k8s.amazonaws.com/eniConfig`` by default), then
  ``default``. As upstream, a key that is present wins even with an empty value;
- the node's max pods, from the Node's ``status.capacity.pods`` (upstream's ``nodeInit``);
- the ``vpc.amazonaws.com/pod-ips`` patch for an ADD or a DEL (upstream's ``AnnotatePod``);
- the CNINode ``features`` after adding one (upstream's ``AddFeatureToCNINode``);
- which Kubernetes Events to raise for what an operator must act on, each at most once per
  ``repeat_s`` while the condition lasts (:class:`EventGate`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

import attrs

from ipamcore.kube import (
    POD_IPS_ANNOTATION,
    CniNodeFeature,
    EniConfig,
    EniConfigSpec,
    KubeEvent,
    NodeInfo,
    PodInfo,
)

EXTERNAL_ENICONFIG_LABEL = "vpc.amazonaws.com/externalEniConfig"
DEFAULT_ENICONFIG_KEY = "k8s.amazonaws.com/eniConfig"
DEFAULT_ENICONFIG_NAME = "default"
CUSTOM_NETWORKING_FEATURE = "CustomNetworking"
DEFAULT_MAX_PODS = 110  # upstream's defaultMaxPodsFromKubelet


@attrs.frozen
class EniConfigKeys:
    """``ENI_CONFIG_ANNOTATION_DEF`` and ``ENI_CONFIG_LABEL_DEF`` (empty means the default)."""

    annotation: str = DEFAULT_ENICONFIG_KEY
    label: str = DEFAULT_ENICONFIG_KEY

    @classmethod
    def of(cls, annotation: str | None, label: str | None) -> EniConfigKeys:
        """Keys from the two settings; an empty or missing one means upstream's default key."""
        return cls(annotation or DEFAULT_ENICONFIG_KEY, label or DEFAULT_ENICONFIG_KEY)


def eniconfig_name(node: NodeInfo, keys: EniConfigKeys = EniConfigKeys()) -> str:
    """The name of the ENIConfig this node's new ENIs take their subnet and groups from."""
    if EXTERNAL_ENICONFIG_LABEL in node.labels:
        return node.labels[EXTERNAL_ENICONFIG_LABEL]
    if keys.annotation in node.annotations:
        return node.annotations[keys.annotation]
    if keys.label in node.labels:
        return node.labels[keys.label]
    return DEFAULT_ENICONFIG_NAME


@attrs.frozen
class EniConfigChoice:
    """The ENIConfig chosen for the node: ``spec`` None when no such object exists (then no
    ENI may be created: never one in the wrong subnet)."""

    name: str
    spec: EniConfigSpec | None


def choose_eniconfig(
    node: NodeInfo,
    lookup: Callable[[str], EniConfig | None],
    keys: EniConfigKeys = EniConfigKeys(),
) -> EniConfigChoice:
    """The ENIConfig the node's labels and annotations name, looked up with ``lookup``."""
    name = eniconfig_name(node, keys)
    found = lookup(name) if name else None
    return EniConfigChoice(name, found.spec if found is not None else None)


_QUANTITY = re.compile(
    r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[kMGTPE]|m)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity_as_int(text: str) -> int | None:
    """A Kubernetes resource quantity as an integer, or None when it is not one (as Go's
    ``Quantity.AsInt64`` is not ok): ``"110"``, ``"1k"`` = 1000, ``"2Ki"`` = 2048."""
    m = _QUANTITY.match(text.strip())
    if not m:
        return None
    number, suffix = m.group(1), m.group(2) or ""
    if "." in number:
        whole, _, frac = number.partition(".")
        if frac.strip("0"):
            return None
        number = whole or "0"
    value = int(number)
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    if suffix == "m":
        return value // 1000 if value % 1000 == 0 else None
    if suffix[:1] in ("e", "E"):
        exp = int(suffix[1:])
        if exp < 0:
            scale: int = 10 ** (-exp)
            return value // scale if value % scale == 0 else None
        factor: int = 10**exp
        return value * factor
    return value


def max_pods(node: NodeInfo | None, fallback: int = DEFAULT_MAX_PODS) -> int:
    """The node's max pods: its capacity ``pods`` when the Node is known and gives an
    integer, ``fallback`` otherwise (upstream: kubelet's config file, else 110)."""
    if node is None or node.capacity_pods is None:
        return fallback
    value = quantity_as_int(node.capacity_pods)
    return value if value is not None and value > 0 else fallback


class AnnotationAction(enum.Enum):
    """What to do with a pod's ``vpc.amazonaws.com/pod-ips`` annotation."""

    PATCH = "patch"  # send ``annotations``
    SKIP = "skip"  # already as wanted (or the pod is gone on a DEL)
    MISMATCH = "mismatch"  # DEL of an address the annotation does not name: leave it


@attrs.frozen
class AnnotationPatch:
    """The annotation change :func:`pod_ips_patch` decided: an action and the annotations."""

    action: AnnotationAction
    annotations: Mapping[str, str] = attrs.field(factory=dict)


def pod_ips_patch(pod: PodInfo | None, new_ip: str, released_ip: str = "") -> AnnotationPatch:
    """Upstream's ``AnnotatePod``: on ADD (``new_ip``) set the annotation unless it already
    says so; on DEL (``released_ip``) set it to "" only when it names the released address
    (an absent annotation is left absent); a pod that is gone needs nothing on DEL."""
    if pod is None:
        return AnnotationPatch(AnnotationAction.SKIP)
    current = pod.annotations.get(POD_IPS_ANNOTATION)
    if new_ip:
        if current == new_ip:
            return AnnotationPatch(AnnotationAction.SKIP)
        return AnnotationPatch(AnnotationAction.PATCH, {POD_IPS_ANNOTATION: new_ip})
    if current is None or current == "":
        return AnnotationPatch(AnnotationAction.SKIP)
    if current != released_ip:
        return AnnotationPatch(AnnotationAction.MISMATCH)
    return AnnotationPatch(AnnotationAction.PATCH, {POD_IPS_ANNOTATION: ""})


def with_feature(
    features: tuple[CniNodeFeature, ...], feature: CniNodeFeature
) -> tuple[CniNodeFeature, ...] | None:
    """The CNINode features with ``feature`` added, replacing one of the same name (a renamed
    ENIConfig after a restart); None when it is already there (no patch)."""
    if feature in features:
        return None
    kept = tuple(f for f in features if f.name != feature.name)
    return (*kept, feature)


def cninode_feature_for(custom_networking: bool, eniconfig: str) -> CniNodeFeature | None:
    """Upstream patches ``CustomNetworking=<ENIConfig name>`` into the CNINode when custom
    networking is on and the node's ENIConfig is not ``default`` (the VPC resource controller
    reads it for security groups for pods)."""
    if not custom_networking or not eniconfig or eniconfig == DEFAULT_ENICONFIG_NAME:
        return None
    return CniNodeFeature(CUSTOM_NETWORKING_FEATURE, eniconfig)


# ---------------------------------------------------------------------------- events

MISSING_ENICONFIG = "MissingEniConfig"
SUBNET_FULL = "InsufficientSubnetAddresses"
EC2_UNAUTHORIZED = "Ec2Unauthorized"
EC2_THROTTLED = "Ec2Throttled"
PODS_WAITING = "PodsWaitingForAddresses"


@attrs.frozen
class Observations:
    """What the daemon saw, for the events an operator must act on."""

    eniconfig: EniConfigChoice | None = None  # None: custom networking is off
    subnet_full: str = ""  # the subnet EC2 said is out of addresses
    ec2_unauthorized: str = ""  # the EC2 action refused (UnauthorizedOperation)
    throttled_since: float | None = None  # first of an unbroken run of throttled calls
    pods_waiting: int = 0
    waiting_since: float | None = None  # when the oldest waiting ADD arrived


@attrs.frozen
class EventThresholds:
    """How long a condition lasts before it is an Event, and how often it repeats."""

    throttled_s: float = 300.0  # throttled for this long is an event
    waiting_s: float = 30.0  # an ADD waiting this long is an event
    repeat_s: float = 600.0  # the same event again at most this often


def conditions(obs: Observations, now: float, th: EventThresholds) -> dict[str, KubeEvent]:
    """The events the observations call for now, by reason."""
    out: dict[str, KubeEvent] = {}
    choice = obs.eniconfig
    if choice is not None and choice.spec is None:
        out[MISSING_ENICONFIG] = KubeEvent(
            "Warning",
            MISSING_ENICONFIG,
            f"ENIConfig {choice.name!r} not found: no new ENI until it exists "
            "(custom networking is on)",
            "CreateEni",
        )
    if obs.subnet_full:
        out[SUBNET_FULL] = KubeEvent(
            "Warning",
            SUBNET_FULL,
            f"subnet {obs.subnet_full} has no free address",
            "AssignAddresses",
        )
    if obs.ec2_unauthorized:
        out[EC2_UNAUTHORIZED] = KubeEvent(
            "Warning",
            EC2_UNAUTHORIZED,
            f"EC2 refused {obs.ec2_unauthorized}: check the node role or IRSA policy",
            obs.ec2_unauthorized,
        )
    if obs.throttled_since is not None and now - obs.throttled_since >= th.throttled_s:
        minutes = (now - obs.throttled_since) / 60
        out[EC2_THROTTLED] = KubeEvent(
            "Warning", EC2_THROTTLED, f"EC2 has throttled calls for {minutes:.0f} min", "EC2"
        )
    waited = now - obs.waiting_since if obs.waiting_since is not None else 0.0
    if obs.pods_waiting and obs.waiting_since is not None and waited >= th.waiting_s:
        out[PODS_WAITING] = KubeEvent(
            "Warning",
            PODS_WAITING,
            f"{obs.pods_waiting} pod(s) waiting for an address for {waited:.0f} s",
            "AssignPodIP",
        )
    return out


@attrs.define
class EventGate:
    """Which events to post now: each condition's event when it starts, then again every
    ``repeat_s`` while it lasts (so a long outage is not a flood); a condition that ended
    and comes back is posted at once."""

    thresholds: EventThresholds = EventThresholds()
    _posted: dict[str, float] = attrs.field(factory=dict)

    def step(self, obs: Observations, now: float) -> list[KubeEvent]:
        """The Events to post at ``now`` for ``obs``: new conditions, lasting ones again after
        ``repeat_s``."""
        active = conditions(obs, now, self.thresholds)
        for reason in list(self._posted):
            if reason not in active:
                del self._posted[reason]
        due = []
        for reason, event in sorted(active.items()):
            last = self._posted.get(reason)
            if last is None or now - last >= self.thresholds.repeat_s:
                self._posted[reason] = now
                due.append(event)
        return due
