"""The daemon's composition root, part one: the environment -> one frozen, validated Settings.

Only this module reads environment variables (from the mapping it is given, never from
``os.environ`` directly), so the core and the backends never see the environment. Every bad
value raises :class:`SettingsError` naming the variable and what it accepts; ``main`` turns
that into exit code 2.

Choices beyond upstream's variables (documented in the README of the daemon, ``--help``):

* custom networking: under Kubernetes (``MY_NODE_NAME`` with an API server: in a pod or
  ``KUBECONFIG``; :mod:`adapters.ipamd.kube`) the subnet and security groups of new ENIs
  come from the node's ENIConfig, as upstream. Without Kubernetes they come from
  ``ENI_CONFIG_SUBNET`` (``subnet-...``) and ``ENI_CONFIG_SECURITY_GROUPS``
  (comma-separated ``sg-...``): with ``AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true`` the subnet
  is then required; without it, a set ``ENI_CONFIG_SUBNET`` still places new ENIs there.
  The Kubernetes variables themselves are parsed by :mod:`backends.kubernetes.settings`.
* ``IPAMD_DATAPATH`` = ``linux`` (default) | ``fake``; ``IPAMD_CLOUD`` = ``aws`` (default) |
  ``fake`` (an in-memory cloud with one instance: demos, benchmarks, subprocess tests).
  With the fake cloud, ``IPAMD_FAKE_LATENCY`` = ``none`` (default: every call answers at
  once) | ``realistic`` (each call takes its time and metadata lags, see
  :mod:`backends.fakecloud.latency`), and ``IPAMD_FAKE_CALL_LOG`` (an absolute path) appends
  one JSON line per EC2 call (action, target, outcome, latency) for benchmarks.
* ``IPAMD_POLICY`` = ``upstream`` (default) | ``upstream-faithful`` | ``adaptive`` (see
  :class:`ipamcore.config.PolicyName`; ``adaptive`` is the project's own policy,
  :mod:`ipamcore.adaptive`, where the WARM_* knobs only set floors).
* ``ENI_DELETE_ON_TERMINATION`` = ``true`` (default, upstream's behaviour: one
  ModifyNetworkInterfaceAttribute call per new ENI sets DeleteOnTermination) | ``false``
  (that call skipped: two mutating calls per ENI; an ENI a terminated node leaves is freed by
  another node's hourly leaked-ENI cleanup, see :mod:`ipamcore.node.upkeep`).
* ``IPAMD_CHECKPOINT_JOURNAL`` = ``true`` (default) | ``false``: ``true`` commits each change
  as one record appended to ``<checkpoint>.journal`` (one ``fdatasync`` per commit batch,
  compacted into the checkpoint in the background and at every orderly stop; see
  :mod:`backends.checkpoint.journal`); ``false`` rewrites the whole checkpoint per commit.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import attrs

from adapters.protocol import DEFAULT_PENDING_DEL_DIR, DEFAULT_SOCKET_PATH
from adapters.redact import redact_url
from backends.kubernetes.settings import KubeSettings, KubeSettingsError
from ipamcore.config import EniPlacement, PolicyName, PoolConfig
from ipamcore.errors import ConfigError

T = TypeVar("T")

DEFAULT_CHECKPOINT_PATH = "/var/run/aws-node/ipam.json"
DEFAULT_INTROSPECTION = "127.0.0.1:61679"
DEFAULT_METRICS = "0.0.0.0:61678"
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254"
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR")
_TRUE = frozenset({"1", "t", "true", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "no", "off"})
BOOL_ACCEPTS = "true or false (also 1/0, t/f, yes/no, on/off)"
RESERVED_VETH_PREFIXES = ("eth", "lo", "vlan")


class SettingsError(Exception):
    """A bad environment value: ``variable`` names it, ``accepts`` says what would do."""

    def __init__(self, variable: str, accepts: str, got: str | None = None) -> None:
        text = repr(got)
        if len(text) > 120:
            text = text[:117] + "..."
        shown = "" if got is None else f", got {text}"
        super().__init__(f"{variable}: expected {accepts}{shown}")
        self.variable = variable
        self.accepts = accepts


@attrs.frozen
class BindAddress:
    """A TCP host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@attrs.frozen
class Settings:
    """Everything the daemon is configured with. Frozen: built once at start."""

    pool: PoolConfig
    eni_mtu: int = 9001
    pod_mtu: int = 9001
    veth_prefix: str = "eni"
    external_snat: bool = False
    v4_egress: bool = True  # ENABLE_V4_EGRESS (IPv6 mode)
    v6_egress: bool = False  # ENABLE_V6_EGRESS (IPv4 mode, node with an IPv6 address)
    checkpoint_path: str = DEFAULT_CHECKPOINT_PATH
    socket_path: str = DEFAULT_SOCKET_PATH
    pending_del_dir: str = DEFAULT_PENDING_DEL_DIR
    socket_allowed_uids: tuple[int, ...] = ()  # besides root and the daemon's own user
    introspection: BindAddress = BindAddress("127.0.0.1", 61679)
    introspection_enabled: bool = True
    introspection_allow_non_loopback: bool = False
    metrics: BindAddress = BindAddress("0.0.0.0", 61678)
    metrics_enabled: bool = True
    leaked_eni_cleanup: bool = True
    eni_delete_on_termination: bool = True
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON unless stderr is a TTY
    region: str = ""
    ec2_endpoint: str = ""
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT
    cluster_name: str = ""
    additional_eni_tags: tuple[tuple[str, str], ...] = ()
    datapath: str = "linux"
    host_netns: str | None = None  # run the datapath's host side in this netns (tests, demo)
    cloud: str = "aws"
    fake_instance_type: str = "m5.large"
    fake_latency: str = "none"
    fake_call_log: str = ""
    add_wait_s: float = 5.0
    policy_interval_s: float = 5.0  # NodeConfig.policy_interval_s: not a fixed beat
    reconcile_interval_s: float = 60.0
    leaked_eni_interval_s: float = 3600.0
    # The flight recorder (adapters.ipamd.flight): <checkpoint dir>/flight.log and .1, each
    # up to this many bytes; 0 turns it off.
    flight_recorder_bytes: int = 2 * 1024 * 1024
    checkpoint_journal: bool = True
    # Under Kubernetes (MY_NODE_NAME and an API server: in a pod or KUBECONFIG); its own
    # variables are parsed by backends.kubernetes.settings.
    kubernetes: bool = False

    def public(self) -> dict[str, object]:
        """A JSON-able view for introspection and logs (URL credentials removed; Settings holds
        no other secret)."""
        doc = attrs.asdict(self, recurse=True, value_serializer=_serialize)
        doc["introspection"] = str(self.introspection)
        doc["metrics"] = str(self.metrics)
        doc["ec2_endpoint"] = redact_url(self.ec2_endpoint)
        doc["metadata_endpoint"] = redact_url(self.metadata_endpoint)
        return doc


def _serialize(_inst: object, _field: object, value: object) -> object:
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value
    return value


# ------------------------------------------------------------------------- parsers


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise SettingsError(name, BOOL_ACCEPTS, raw)


def parse_int(
    env: Mapping[str, str], name: str, default: T, lo: int = 0, hi: int | None = None
) -> int | T:
    raw = _get(env, name)
    if raw is None:
        return default
    accepts = f"an integer from {lo}" + (f" to {hi}" if hi is not None else " up")
    try:
        value = int(raw, 10)
    except ValueError:
        raise SettingsError(name, accepts, raw) from None
    if value < lo or (hi is not None and value > hi):
        raise SettingsError(name, accepts, raw)
    return value


def parse_float(env: Mapping[str, str], name: str, default: float, lo: float = 0.0) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    accepts = f"a number of seconds >= {lo:g}"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, accepts, raw) from None
    if not value >= lo or value == float("inf"):
        raise SettingsError(name, accepts, raw)
    return value


def state_env(directory: str) -> dict[str, str]:
    """The variables that put a daemon's files (checkpoint, socket, pending-DEL records) in
    one ``directory``: for tests, benchmarks and local nodes."""
    return {
        "AWS_VPC_K8S_CNI_BACKING_STORE": os.path.join(directory, "ipam.json"),
        "IPAMD_SOCKET": os.path.join(directory, "ipam.sock"),
        "IPAMD_PENDING_DEL_DIR": os.path.join(directory, "pending-del"),
    }


def parse_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise SettingsError(name, "one of " + ", ".join(choices), raw)
    return raw.lower()


def parse_bind(env: Mapping[str, str], name: str, default: str) -> BindAddress:
    raw = _get(env, name) or default
    accepts = "HOST:PORT (e.g. 127.0.0.1:61679, [::1]:61679 or :61678 for every address)"
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(name, accepts, raw)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingsError(name, accepts + " with an IP address or localhost", raw) from None
    return BindAddress(host, int(port_text))


def parse_tags(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    raw = _get(env, name)
    if raw is None:
        return ()
    accepts = 'a JSON object of string tags, e.g. {"team": "net"} (keys not starting with aws:)'
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise SettingsError(name, accepts, raw) from None
    if not isinstance(doc, dict):
        raise SettingsError(name, accepts, raw)
    tags: list[tuple[str, str]] = []
    for key, value in doc.items():
        ok = isinstance(value, str) and 0 < len(key) <= 128 and len(value) <= 256
        if not ok or key.lower().startswith("aws:"):
            raise SettingsError(name, accepts, raw)
        tags.append((key, value))
    return tuple(sorted(tags))


def parse_ids(env: Mapping[str, str], name: str, prefix: str) -> tuple[str, ...]:
    raw = _get(env, name)
    if raw is None:
        return ()
    ids = tuple(part.strip() for part in raw.split(",") if part.strip())
    for ident in ids:
        if not ident.startswith(prefix) or not ident[len(prefix) :].isalnum():
            raise SettingsError(name, f"comma-separated {prefix}... ids", raw)
    return ids


def parse_uids(env: Mapping[str, str], name: str) -> tuple[int, ...]:
    raw = _get(env, name)
    if raw is None:
        return ()
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not all(part.isascii() and part.isdigit() and int(part) < 2**32 for part in parts):
        raise SettingsError(name, "comma-separated numeric user ids", raw)
    return tuple(sorted({int(part) for part in parts}))


def _veth_prefix(env: Mapping[str, str]) -> str:
    name = "AWS_VPC_K8S_CNI_VETHPREFIX"
    raw = _get(env, name)
    if raw is None:
        return "eni"
    accepts = "1 to 4 letters or digits, not eth, lo or vlan"
    if len(raw) > 4 or not raw.isascii() or not raw.isalnum() or raw in RESERVED_VETH_PREFIXES:
        raise SettingsError(name, accepts, raw)
    return raw


def _max_eni(env: Mapping[str, str]) -> int | None:
    raw = _get(env, "MAX_ENI")
    if raw == "-1":  # upstream's "unset"
        return None
    return parse_int(env, "MAX_ENI", None, lo=1)


def _policy(env: Mapping[str, str]) -> PolicyName:
    choices = tuple(p.value for p in PolicyName)
    return PolicyName(parse_choice(env, "IPAMD_POLICY", PolicyName.UPSTREAM.value, choices))


def _kubernetes(env: Mapping[str, str]) -> bool:
    if not _get(env, "MY_NODE_NAME"):
        return False
    try:
        settings = KubeSettings.from_env(env)
    except KubeSettingsError as exc:
        variable = str(exc).split("=")[0].split(" ")[0]
        raise SettingsError(variable, str(exc)) from None
    return bool(settings.cluster_endpoint or settings.service_host or settings.kubeconfig)


def _pool(env: Mapping[str, str], kubernetes: bool = False) -> PoolConfig:
    custom = parse_bool(env, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", False)
    subnet = parse_ids(env, "ENI_CONFIG_SUBNET", "subnet-")
    if len(subnet) > 1:
        raise SettingsError("ENI_CONFIG_SUBNET", "one subnet-... id", ",".join(subnet))
    if custom and not subnet and not kubernetes:  # under Kubernetes: the node's ENIConfig
        raise SettingsError(
            "ENI_CONFIG_SUBNET",
            "a subnet-... id when AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true",
        )
    placement = EniPlacement(
        subnet_id=subnet[0] if subnet else "",
        security_groups=parse_ids(env, "ENI_CONFIG_SECURITY_GROUPS", "sg-"),
        custom_networking=custom,
        subnet_discovery=parse_bool(env, "ENABLE_SUBNET_DISCOVERY", True),
        cluster_name=_get(env, "CLUSTER_NAME") or "",
    )
    _check_ip_families(env, custom)
    try:
        return PoolConfig(
            warm_eni_target=parse_int(env, "WARM_ENI_TARGET", 1),
            warm_ip_target=parse_int(env, "WARM_IP_TARGET", 0),
            minimum_ip_target=parse_int(env, "MINIMUM_IP_TARGET", 0),
            warm_prefix_target=parse_int(env, "WARM_PREFIX_TARGET", 1),
            prefix_delegation=parse_bool(env, "ENABLE_PREFIX_DELEGATION", False),
            ipv6=parse_bool(env, "ENABLE_IPv6", False),
            ipv4=parse_bool(env, "ENABLE_IPv4", True),
            multi_nic=parse_bool(env, "ENABLE_MULTI_NIC", False),
            max_eni=_max_eni(env),
            cooldown_s=float(parse_int(env, "IP_COOLDOWN_PERIOD", 30)),
            placement=placement,
            policy=_policy(env),
        )
    except ConfigError as exc:
        raise SettingsError(exc.setting, exc.message) from None


def _check_ip_families(env: Mapping[str, str], custom_networking: bool) -> None:
    """Upstream's rules for IPv6 single stack (ENABLE_IPv6=true, ENABLE_IPv4=false): prefix
    delegation on, no custom networking. Dual stack (both true) is this project's own."""
    ipv6 = parse_bool(env, "ENABLE_IPv6", False)
    ipv4 = parse_bool(env, "ENABLE_IPv4", True)
    if not ipv6 and not ipv4:
        raise SettingsError("ENABLE_IPv4", "true unless ENABLE_IPv6=true", "false")
    if ipv6 and custom_networking:
        raise SettingsError(
            "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG",
            "false with ENABLE_IPv6=true (as upstream)",
            "true",
        )
    if ipv6 and ipv4 and parse_bool(env, "ENABLE_MULTI_NIC", False):
        raise SettingsError(
            "ENABLE_MULTI_NIC",
            "false in dual stack (ENABLE_IPv6=true with ENABLE_IPv4=true; multi-NIC pods run "
            "with IPv4, or in IPv6 mode with ENABLE_IPv4=false, as upstream v1.20+)",
            "true",
        )
    if ipv6 and not ipv4 and not parse_bool(env, "ENABLE_PREFIX_DELEGATION", False):
        raise SettingsError(
            "ENABLE_PREFIX_DELEGATION",
            "true with ENABLE_IPv6=true (IPv6 pods take addresses from a /80 prefix, as upstream)",
            _get(env, "ENABLE_PREFIX_DELEGATION") or "unset",
        )


def _checked(
    env: Mapping[str, str], name: str, default: str, check: Callable[[str], bool], accepts: str
) -> str:
    raw = _get(env, name)
    if raw is None:
        return default
    if not check(raw):
        raise SettingsError(name, accepts, raw)
    return raw


def _absolute(value: str) -> bool:
    return value.startswith("/") and "\x00" not in value


def _url(value: str) -> bool:
    return value.startswith(("http://", "https://")) and " " not in value


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from ``env`` (e.g. ``os.environ``); SettingsError on any bad value."""
    eni_mtu = parse_int(env, "AWS_VPC_ENI_MTU", 9001, lo=576, hi=9001)
    introspection = parse_bind(env, "INTROSPECTION_BIND_ADDRESS", DEFAULT_INTROSPECTION)
    allow_remote = parse_bool(env, "INTROSPECTION_ALLOW_NON_LOOPBACK", False)
    introspection_enabled = not parse_bool(env, "DISABLE_INTROSPECTION", False)
    if introspection_enabled and not introspection.is_loopback and not allow_remote:
        raise SettingsError(
            "INTROSPECTION_BIND_ADDRESS",
            "a loopback address (set INTROSPECTION_ALLOW_NON_LOOPBACK=true to expose it)",
            str(introspection),
        )
    levels = tuple(x.lower() for x in LOG_LEVELS)
    level = parse_choice(env, "AWS_VPC_K8S_CNI_LOGLEVEL", "info", levels)
    log_format = parse_choice(env, "IPAMD_LOG_FORMAT", "auto", ("auto", "json", "text"))
    path_accepts = "an absolute path"
    kubernetes = _kubernetes(env)
    return Settings(
        pool=_pool(env, kubernetes),
        kubernetes=kubernetes,
        eni_mtu=eni_mtu,
        pod_mtu=parse_int(env, "POD_MTU", eni_mtu, lo=576, hi=9001),
        veth_prefix=_veth_prefix(env),
        external_snat=parse_bool(env, "AWS_VPC_K8S_CNI_EXTERNALSNAT", False),
        v4_egress=parse_bool(env, "ENABLE_V4_EGRESS", True),
        v6_egress=parse_bool(env, "ENABLE_V6_EGRESS", False),
        checkpoint_path=_checked(
            env, "AWS_VPC_K8S_CNI_BACKING_STORE", DEFAULT_CHECKPOINT_PATH, _absolute, path_accepts
        ),
        socket_path=_checked(env, "IPAMD_SOCKET", DEFAULT_SOCKET_PATH, _absolute, path_accepts),
        pending_del_dir=_checked(
            env, "IPAMD_PENDING_DEL_DIR", DEFAULT_PENDING_DEL_DIR, _absolute, path_accepts
        ),
        socket_allowed_uids=parse_uids(env, "IPAMD_SOCKET_ALLOWED_UIDS"),
        introspection=introspection,
        introspection_enabled=introspection_enabled,
        introspection_allow_non_loopback=allow_remote,
        metrics=parse_bind(env, "METRICS_BIND_ADDRESS", DEFAULT_METRICS),
        metrics_enabled=not parse_bool(env, "DISABLE_METRICS", False),
        leaked_eni_cleanup=not parse_bool(env, "DISABLE_LEAKED_ENI_CLEANUP", False),
        eni_delete_on_termination=parse_bool(env, "ENI_DELETE_ON_TERMINATION", True),
        log_level="WARNING" if level == "warn" else level.upper(),
        log_json=None if log_format == "auto" else log_format == "json",
        region=_get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION") or "",
        ec2_endpoint=_checked(env, "AWS_EC2_ENDPOINT", "", _url, "an http(s):// URL"),
        metadata_endpoint=_checked(
            env,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            DEFAULT_METADATA_ENDPOINT,
            _url,
            "an http(s):// URL",
        ),
        cluster_name=_get(env, "CLUSTER_NAME") or "",
        additional_eni_tags=parse_tags(env, "ADDITIONAL_ENI_TAGS"),
        datapath=parse_choice(env, "IPAMD_DATAPATH", "linux", ("linux", "fake")),
        host_netns=_get(env, "IPAMD_HOST_NETNS") or None,
        cloud=parse_choice(env, "IPAMD_CLOUD", "aws", ("aws", "fake")),
        fake_instance_type=_get(env, "IPAMD_FAKE_INSTANCE_TYPE") or "m5.large",
        fake_latency=parse_choice(env, "IPAMD_FAKE_LATENCY", "none", ("none", "realistic")),
        fake_call_log=_checked(env, "IPAMD_FAKE_CALL_LOG", "", _absolute, path_accepts),
        add_wait_s=parse_float(env, "IPAMD_ADD_WAIT_SECONDS", 5.0),
        policy_interval_s=parse_float(env, "IPAMD_POLICY_INTERVAL_SECONDS", 5.0, lo=0.1),
        reconcile_interval_s=parse_float(env, "IPAMD_RECONCILE_INTERVAL_SECONDS", 60.0, lo=1.0),
        leaked_eni_interval_s=parse_float(env, "IPAMD_LEAKED_ENI_INTERVAL_SECONDS", 3600.0, lo=1.0),
        flight_recorder_bytes=parse_int(
            env, "IPAMD_FLIGHT_RECORDER_BYTES", 2 * 1024 * 1024, lo=0, hi=1 << 30
        ),
        checkpoint_journal=parse_bool(env, "IPAMD_CHECKPOINT_JOURNAL", True),
    )
