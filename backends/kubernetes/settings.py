"""The environment the Kubernetes side of ipamd reads (parsed from a mapping the daemon
passes in; nothing here reads ``os.environ``).

- ``MY_NODE_NAME`` (required): this node's Node name (downward API ``spec.nodeName``).
- ``MY_POD_NAME``: the aws-node pod Events are posted on (none when empty);
  ``MY_POD_NAMESPACE``: its namespace, ``kube-system`` by default.
- ``CLUSTER_ENDPOINT``: the API server URL, used instead of ``KUBERNETES_SERVICE_HOST`` and
  ``KUBERNETES_SERVICE_PORT`` (upstream's: reach the server before kube-proxy runs).
- ``KUBECONFIG``: a kubeconfig file (development, tests), used when not in a pod.
- ``AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG`` (false): custom networking from ENIConfig;
  ``ENI_CONFIG_ANNOTATION_DEF`` and ``ENI_CONFIG_LABEL_DEF`` (both
  ``k8s.amazonaws.com/eniConfig``): the node keys naming the ENIConfig.
- ``ANNOTATE_POD_IP`` (false): set ``vpc.amazonaws.com/pod-ips`` on ADD, clear it on DEL.
- ``ENABLE_POD_ENI`` (false): as upstream, the CNINode ``CustomNetworking`` feature is
  patched only with security groups for pods on.
- ``IPAMD_KUBE_SERVICE_ACCOUNT_DIR`` (``/var/run/secrets/kubernetes.io/serviceaccount``):
  where ``token`` and ``ca.crt`` are.
- ``IPAMD_KUBE_START_WAIT_SECONDS`` (30): how long start waits for the API server when no
  feature needs it (upstream's 30 s), before going on without it.
- ``IPAMD_KUBE_EVENT_THROTTLED_SECONDS`` (300), ``IPAMD_KUBE_EVENT_WAITING_SECONDS`` (30):
  how long EC2 throttles, or pods wait for addresses, before it is an Event;
  ``IPAMD_KUBE_EVENT_INTERVAL_SECONDS`` (10): how often the conditions are looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from ipamcore.eniconfig import EniConfigKeys, EventThresholds

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TRUE = {"1", "t", "true", "yes", "on"}
FALSE = {"", "0", "f", "false", "no", "off"}


class KubeSettingsError(ValueError):
    """A variable with a value it does not accept (the message names both)."""


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise KubeSettingsError(f"{name}={env[name]!r}: expected true or false")


def _seconds(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value < float("inf"):
        raise KubeSettingsError(f"{name}={raw!r}: expected seconds, at least {low:g}")
    return value


@attrs.frozen
class KubeSettings:
    node_name: str
    pod_name: str = ""
    pod_namespace: str = "kube-system"
    cluster_endpoint: str = ""
    service_host: str = ""
    service_port: str = ""
    kubeconfig: str = ""
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    custom_networking: bool = False
    eniconfig_keys: EniConfigKeys = attrs.field(factory=EniConfigKeys)
    annotate_pod_ip: bool = False
    pod_eni: bool = False
    start_wait_s: float = 30.0
    event_thresholds: EventThresholds = attrs.field(factory=EventThresholds)
    event_interval_s: float = 10.0

    @property
    def needs_api_server(self) -> bool:
        """Upstream waits for the API server at start only when a feature needs it."""
        return self.custom_networking or self.annotate_pod_ip

    @property
    def in_cluster(self) -> bool:
        token = Path(self.service_account_dir, "token")
        return bool(self.cluster_endpoint or self.service_host) and token.is_file()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubeSettings:
        node = env.get("MY_NODE_NAME", "").strip()
        if not node:
            raise KubeSettingsError("MY_NODE_NAME is required (the downward API's spec.nodeName)")
        wait_raw = env.get("IPAMD_KUBE_START_WAIT_SECONDS", "30")
        try:
            wait = float(wait_raw)
        except ValueError:
            raise KubeSettingsError(
                f"IPAMD_KUBE_START_WAIT_SECONDS={wait_raw!r}: expected seconds"
            ) from None
        defaults = EventThresholds()
        thresholds = EventThresholds(
            throttled_s=_seconds(env, "IPAMD_KUBE_EVENT_THROTTLED_SECONDS", defaults.throttled_s),
            waiting_s=_seconds(env, "IPAMD_KUBE_EVENT_WAITING_SECONDS", defaults.waiting_s),
            repeat_s=defaults.repeat_s,
        )
        endpoint = env.get("CLUSTER_ENDPOINT", "").strip().rstrip("/")
        if endpoint and not endpoint.startswith(("https://", "http://")):
            raise KubeSettingsError(f"CLUSTER_ENDPOINT={endpoint!r}: expected an https:// URL")
        return cls(
            node_name=node,
            pod_name=env.get("MY_POD_NAME", "").strip(),
            pod_namespace=env.get("MY_POD_NAMESPACE", "").strip() or "kube-system",
            cluster_endpoint=endpoint,
            service_host=env.get("KUBERNETES_SERVICE_HOST", "").strip(),
            service_port=env.get("KUBERNETES_SERVICE_PORT", "").strip() or "443",
            kubeconfig=env.get("KUBECONFIG", "").strip(),
            service_account_dir=env.get("IPAMD_KUBE_SERVICE_ACCOUNT_DIR", "").strip()
            or SERVICE_ACCOUNT_DIR,
            custom_networking=_bool(env, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"),
            eniconfig_keys=EniConfigKeys.of(
                env.get("ENI_CONFIG_ANNOTATION_DEF"), env.get("ENI_CONFIG_LABEL_DEF")
            ),
            annotate_pod_ip=_bool(env, "ANNOTATE_POD_IP"),
            pod_eni=_bool(env, "ENABLE_POD_ENI"),
            start_wait_s=wait,
            event_thresholds=thresholds,
            event_interval_s=_seconds(env, "IPAMD_KUBE_EVENT_INTERVAL_SECONDS", 10.0, low=0.1),
        )
