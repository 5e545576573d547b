"""``vpc-cni``: the CNI plugin. A thin client of ipamd over its Unix socket.

Imports only the standard library and :mod:`adapters.protocol`, and nothing heavy, so that its
cold start stays close to the interpreter's: kubelet's runtime exec's it for every pod. All
netlink work (veth pair, addresses, routes, rules) happens in the daemon.

Spec versions: 0.4.0, 1.0.0 and 1.1.0. Commands: ADD, DEL, CHECK, VERSION, STATUS, GC.

Network configuration keys of our own (all optional; paths must be absolute and normalized,
no ``.`` or ``..`` components):

- ``socketPath``: ipamd's socket (default ``/var/run/aws-node/ipam.sock``)
- ``pendingDelDir``: where DEL leaves a record when ipamd is unreachable
  (default ``/var/run/aws-node/pending-del``)
- ``pluginLogFile``: appended to, one line per event (default
  ``/var/log/aws-routed-eni/plugin.log``; ``""`` disables, ``"stderr"`` logs to stderr)
- ``pluginLogLevel``: ``debug``, ``info`` (default), ``warn``, ``error``
- ``mtu``: pod interface MTU, forwarded to ipamd (which may apply it)
- ``timeoutSeconds``: how long to wait for ipamd's reply (default 10)

DEL while ipamd is unreachable succeeds: the plugin writes a pending-DEL record (see
:func:`adapters.pending_dels.write_pending_del`) that ipamd processes when it starts, and, where the
prevResult names the host-side veth and that veth carries this attachment's tag (its ifalias),
deletes it with ``ip link del`` (best effort: this plugin has no netlink library; deleting the
host end also removes the pod end). A veth of that name without the tag is another
attachment's and is left alone. Where ``ip`` is missing or fails, ipamd's own processing of
the pending record removes the veth.
"""

from __future__ import annotations

import json
import os
import sys

from adapters import protocol as p

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
DEFAULT_LOG_FILE = "/var/log/aws-routed-eni/plugin.log"
DEFAULT_LOG_LEVEL = "info"
MAX_STDIN = 1024 * 1024

# CNI error codes (spec section "Error").
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_NOT_AVAILABLE = 50
E_OTHER = 999

# The daemon is not there, did not answer in time, or went away mid-request (a crash, a
# stop): the runtime should try again later (spec code 11), not give up (999).
_RETRYABLE = (p.ERR_UNAVAILABLE, p.ERR_TIMEOUT, p.ERR_CONNECTION_LOST)

# Upstream's multi-NIC opt-in (v1.20): the pod annotation, handed to the plugin by the runtime
# in runtimeConfig because the conflist declares the capability (no API server call).
POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
MULTI_NIC_ANNOTATION = "k8s.amazonaws.com/nicConfig"
MULTI_NIC_ATTACHMENT = "multi-nic-attachment"
MULTI_NIC_IF_PREFIX = "mNicIf"

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.version = ""  # the configuration's cniVersion, once known


class Logger:
    """Appends one line per event to a file; never raises, never writes to stdout."""

    def __init__(self, path: str = DEFAULT_LOG_FILE, level: str = DEFAULT_LOG_LEVEL) -> None:
        self.path = path
        self.level = _LEVELS.get(level.lower(), 20)
        self.context = ""

    def log(self, level: str, msg: str) -> None:
        if _LEVELS[level] < self.level or not self.path:
            return
        import time

        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        line = f"{stamp} {level.upper()} pid={os.getpid()} {self.context}{msg}"
        if not line.isprintable():  # hostile names cannot forge or garble log lines
            line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
        line += "\n"
        try:
            if self.path == "stderr":
                sys.stderr.write(line)
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except (OSError, ValueError):
                return
        except (OSError, ValueError):
            return
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)

    def debug(self, msg: str) -> None:
        self.log("debug", msg)

    def info(self, msg: str) -> None:
        self.log("info", msg)

    def warn(self, msg: str) -> None:
        self.log("warn", msg)

    def error(self, msg: str) -> None:
        self.log("error", msg)


class NetConf:
    """The parts of the network configuration (stdin) that the plugin uses."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.cni_version: str = raw["cniVersion"]
        self.name: str = raw.get("name", "")
        self.socket_path: str = p.DEFAULT_SOCKET_PATH
        self.pending_del_dir: str = p.DEFAULT_PENDING_DEL_DIR
        self.log_file: str = DEFAULT_LOG_FILE
        self.log_level: str = DEFAULT_LOG_LEVEL
        self.mtu: int | None = None
        self.timeout: float = p.DEFAULT_TIMEOUT
        self.prev_result: dict[str, Any] | None = None
        self.multi_nic = False


MAX_PATH_LEN = 4096


def _abs_path(raw: Mapping[str, Any], key: str, default: str) -> str:
    """An absolute, normalized path (no ``.``/``..`` components, no NUL): the plugin writes
    its records and log only where the configuration says, never somewhere a ``..`` leads."""
    v = raw.get(key, default)
    if (
        not isinstance(v, str)
        or not v.startswith("/")
        or len(v) > MAX_PATH_LEN
        or "\x00" in v
        or not v.isprintable()
        or os.path.normpath(v) != v
        or v.startswith("//")
    ):
        raise CniError(
            E_INVALID_CONFIG, f"{key} must be an absolute, normalized path", repr(v)[:200]
        )
    return v


def parse_conf(data: bytes, command: str) -> NetConf:
    """Decode stdin; version and field problems are CniErrors with the spec's codes."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CniError(E_DECODE, "cannot decode the network configuration", str(e)[:200]) from None
    if not isinstance(raw, dict):
        raise CniError(E_DECODE, "the network configuration must be a JSON object")
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(E_INVALID_CONFIG, "the network configuration has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            E_INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version}",
            f"supported versions: {', '.join(SUPPORTED_VERSIONS)}",
        )
    conf = NetConf(raw)
    if command == "VERSION":
        return conf
    try:
        _parse_conf_fields(conf, raw)
    except CniError as e:
        e.version = version
        raise
    return conf


def _parse_conf_fields(conf: NetConf, raw: dict[str, Any]) -> None:
    try:
        p.validate_network_name(raw.get("name"))
    except p.ProtocolError as e:
        raise CniError(E_INVALID_CONFIG, "invalid network name", e.message) from None
    conf.socket_path = _abs_path(raw, "socketPath", conf.socket_path)
    conf.pending_del_dir = _abs_path(raw, "pendingDelDir", conf.pending_del_dir)
    log_file = raw.get("pluginLogFile", conf.log_file)
    if log_file not in ("", "stderr"):
        log_file = _abs_path(raw, "pluginLogFile", conf.log_file)
    conf.log_file = log_file
    level = raw.get("pluginLogLevel", conf.log_level)
    if not isinstance(level, str) or level.lower() not in _LEVELS:
        raise CniError(E_INVALID_CONFIG, f"pluginLogLevel must be one of {', '.join(_LEVELS)}")
    conf.log_level = level
    if "mtu" in raw:
        try:
            conf.mtu = p.validate_mtu(raw["mtu"])
        except p.ProtocolError as e:
            raise CniError(E_INVALID_CONFIG, "invalid mtu", e.message) from None
    timeout = raw.get("timeoutSeconds", conf.timeout)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
        raise CniError(E_INVALID_CONFIG, "timeoutSeconds must be a number in (0, 300]")
    conf.timeout = float(timeout)
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(E_INVALID_CONFIG, "prevResult must be an object")
    conf.prev_result = prev
    conf.multi_nic = _multi_nic_requested(raw.get("runtimeConfig"))


def _multi_nic_requested(runtime_config: object) -> bool:
    """Whether the pod's annotations (runtimeConfig) ask for one interface per network card;
    any other value of the annotation is the default single interface, as upstream's."""
    if runtime_config is None:
        return False
    if not isinstance(runtime_config, dict):
        raise CniError(E_INVALID_CONFIG, "runtimeConfig must be an object")
    annotations = runtime_config.get(POD_ANNOTATIONS_CAPABILITY)
    if annotations is None:
        return False
    if not isinstance(annotations, dict):
        raise CniError(
            E_INVALID_CONFIG, f"runtimeConfig {POD_ANNOTATIONS_CAPABILITY} must be an object"
        )
    return annotations.get(MULTI_NIC_ANNOTATION) == MULTI_NIC_ATTACHMENT


def parse_cni_args(value: str) -> dict[str, str]:
    """``K1=V1;K2=V2`` -> dict. Unknown keys are kept (and ignored by the caller)."""
    out: dict[str, str] = {}
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise CniError(E_INVALID_ENV, "invalid CNI_ARGS", f"malformed pair {item[:100]!r}")
        out[key] = val
    return out


class Env:
    def __init__(self, environ: Mapping[str, str], command: str) -> None:
        self.command = command
        self.container_id = environ.get("CNI_CONTAINERID", "")
        self.netns = environ.get("CNI_NETNS", "")
        self.if_name = environ.get("CNI_IFNAME", "")
        self.args = parse_cni_args(environ.get("CNI_ARGS", ""))
        self.pod_namespace = self.args.get("K8S_POD_NAMESPACE", "")
        self.pod_name = self.args.get("K8S_POD_NAME", "")
        self.skipped: list[str] = []  # DEL: what was not sent, and why (validate_del)
        self.nothing_to_release = ""  # DEL: why no address can exist (validate_del)

    def validate(self) -> None:
        """Check the variables this command needs (spec error 4 for a bad one)."""
        if self.command == "DEL":
            self.validate_del()
            return
        try:
            if self.command in ("ADD", "DEL", "CHECK"):
                p.validate_container_id(self.container_id)
                p.validate_if_name(self.if_name)
            if self.command in ("ADD", "CHECK") or self.netns:
                p.validate_netns(self.netns)
            p.validate_pod_namespace(self.pod_namespace)
            p.validate_pod_name(self.pod_name)
        except p.ProtocolError as e:
            name = {
                "container_id": "CNI_CONTAINERID",
                "if_name": "CNI_IFNAME",
                "netns": "CNI_NETNS",
                "pod_namespace": "K8S_POD_NAMESPACE",
                "pod_name": "K8S_POD_NAME",
            }.get(e.message.split(" ", 1)[0], "environment")
            raise CniError(E_INVALID_ENV, f"invalid {name}", e.message) from None

    def validate_del(self) -> None:
        """DEL must always be able to finish: what ADD would refuse is dropped, not refused.

        A netns outside the allowed directories is not sent (ipamd releases the address and
        skips entering the namespace); a pod namespace or name that is not a Kubernetes name
        is not sent (they only label the request). ``skipped`` says what was dropped, for the
        log. A container id or interface name that ADD refuses cannot hold an address:
        ``nothing_to_release`` is set and the DEL succeeds without asking ipamd."""
        try:
            p.validate_container_id(self.container_id)
            p.validate_if_name(self.if_name)
        except p.ProtocolError as e:
            self.nothing_to_release = e.message
            return
        checks = (
            ("netns", self.netns, p.validate_netns),
            ("pod_namespace", self.pod_namespace, p.validate_pod_namespace),
            ("pod_name", self.pod_name, p.validate_pod_name),
        )
        for field, value, check in checks:
            if not value:
                continue
            try:
                check(value)
            except p.ProtocolError as e:
                self.skipped.append(f"{field} not sent ({e.message})")
                setattr(self, field, "")


# --------------------------------------------------------------------------- results


def format_result(res: p.AddResult, version: str, netns: str) -> dict[str, Any]:
    """The CNI result for ``version`` from the daemon's ADD result: a host veth and a pod
    interface per attachment (a multi-NIC pod has one per network card, as upstream lists
    them), each address pointing at its pod interface; the default route is the first's."""
    result = _format_one(res, version, netns, 0)
    for n, extra in enumerate(res.attachments, 1):
        more = _format_one(extra, version, netns, 2 * n)
        result["interfaces"] += more["interfaces"]
        result["ips"] += more["ips"]
    return result


def _format_one(res: p.AddResult, version: str, netns: str, base: int) -> dict[str, Any]:
    host: dict[str, Any] = {"name": res.host_veth}
    if res.host_mac:
        host["mac"] = res.host_mac
    pod: dict[str, Any] = {"name": res.if_name, "sandbox": netns}
    if res.mac:
        pod["mac"] = res.mac
    if version == "1.1.0":
        pod["mtu"] = res.mtu
        host["mtu"] = res.mtu
    elif version == "0.4.0":
        # 0.4.0 marks "mac" required on interfaces; libcni accepts an empty one.
        host.setdefault("mac", "")
        pod.setdefault("mac", "")
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    if res.ipv4:
        ip: dict[str, Any] = {
            "address": f"{res.ipv4}/{res.prefix_len}",
            "gateway": res.gateway,
            "interface": base + 1,
        }
        if version == "0.4.0":
            ip = {"version": "4", **ip}
        ips.append(ip)
        routes.append({"dst": "0.0.0.0/0", "gw": res.gateway})
    if res.ipv6:
        ip6: dict[str, Any] = {
            "address": f"{res.ipv6}/{res.ipv6_prefix_len}", "interface": base + 1,
        }  # fmt: skip
        if res.gateway_v6:
            ip6["gateway"] = res.gateway_v6
            routes.append({"dst": "::/0", "gw": res.gateway_v6})
        if version == "0.4.0":
            ip6 = {"version": "6", **ip6}
        ips.append(ip6)
    return {
        "cniVersion": version,
        "interfaces": [host, pod],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }


def attachment_tag(network_name: str, container_id: str, if_name: str) -> str:
    """The ifalias ipamd sets on an attachment's host veth (``ipamcore.netspec.attachment_tag``,
    repeated here: the plugin imports nothing beyond the standard library and the protocol)."""
    import hashlib

    raw = f"{network_name}\0{container_id}\0{if_name}".encode()
    return "vpc-cni:" + hashlib.sha256(raw).hexdigest()[:32]


def prev_result_addresses(prev: dict[str, Any] | None) -> set[str]:
    """The ``ips[].address`` values of a prevResult (CIDR text)."""
    ips = prev.get("ips") if prev else None
    if not isinstance(ips, list):
        return set()
    return {
        ip["address"] for ip in ips if isinstance(ip, dict) and isinstance(ip.get("address"), str)
    }


def host_veths_from_prev_result(prev: dict[str, Any] | None) -> list[str]:
    """The host-side interfaces named in a prevResult, in order (one per network card for a
    multi-NIC pod); stops at the first malformed name."""
    interfaces = prev.get("interfaces") if prev else None
    if not isinstance(interfaces, list):
        return []
    veths: list[str] = []
    for itf in interfaces:
        if isinstance(itf, dict) and not itf.get("sandbox"):
            try:
                veths.append(p.validate_if_name(itf.get("name")))
            except p.ProtocolError:
                break
    return veths


# --------------------------------------------------------------------------- commands


class Plugin:
    def __init__(self, environ: Mapping[str, str], stdin: bytes, stdout: TextIO) -> None:
        self.environ = environ
        self.stdin = stdin
        self.stdout = stdout
        # No log file until the configuration names one (or its default applies): an error
        # before that (unreadable stdin, a bad configuration) is reported on stdout in the
        # spec's error shape, which the runtime logs.
        self.log = Logger(path="")
        self.version = LATEST_VERSION

    def make_logger(self, conf: NetConf) -> Logger:
        return Logger(conf.log_file, conf.log_level)

    def emit(self, obj: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.stdout.flush()

    def run(self) -> int:
        command = self.environ.get("CNI_COMMAND", "")
        try:
            if command not in ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"):
                raise CniError(
                    E_INVALID_ENV, "invalid CNI_COMMAND", f"unknown command {command[:32]!r}"
                )
            if command == "VERSION":
                return self.cmd_version()
            conf = parse_conf(self.stdin, command)
            self.version = conf.cni_version
            self.log = self.make_logger(conf)
            env = Env(self.environ, command)
            self.log.context = f"cmd={command} container={env.container_id[:64]} "
            env.validate()
            handler = {
                "ADD": self.cmd_add,
                "DEL": self.cmd_del,
                "CHECK": self.cmd_check,
                "STATUS": self.cmd_status,
                "GC": self.cmd_gc,
            }[command]
            return handler(conf, env)
        except CniError as e:
            self.log.error(f"code={e.code} msg={e.msg} details={e.details}")
            self.emit(
                {
                    "cniVersion": e.version or self.version,
                    "code": e.code,
                    "msg": e.msg,
                    "details": e.details,
                }
            )
            return 1
        except Exception as e:  # a bug: still answer in the spec's shape
            self.log.error(f"unexpected {type(e).__name__}: {e}")
            self.emit(
                {
                    "cniVersion": self.version,
                    "code": E_OTHER,
                    "msg": "internal plugin error",
                    "details": f"{type(e).__name__}: {e}"[:500],
                }
            )
            return 1

    def cmd_version(self) -> int:
        requested = ""
        if self.stdin.strip():
            try:
                raw = json.loads(self.stdin.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raw = None
            if isinstance(raw, dict) and isinstance(raw.get("cniVersion"), str):
                requested = raw["cniVersion"]
        self.emit(
            {
                "cniVersion": requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION,
                "supportedVersions": list(SUPPORTED_VERSIONS),
            }
        )
        return 0

    def _request(self, conf: NetConf, env: Env, op: str, **extra: Any) -> p.Request:
        return p.Request(
            op,
            network_name=conf.name,
            container_id=env.container_id,
            if_name=env.if_name,
            netns=env.netns,
            pod_namespace=env.pod_namespace,
            pod_name=env.pod_name,
            **extra,
        )

    def _call(self, conf: NetConf, req: p.Request) -> p.Reply:
        self.log.debug(f"-> ipamd {req.op} if={req.if_name} netns={req.netns}")
        reply = p.request(conf.socket_path, req, conf.timeout)
        if reply.ok:
            self.log.debug(f"<- ipamd ok {req.op}")
        else:
            self.log.warn(f"<- ipamd {req.op} {reply.error_code}: {reply.error_message}")
        return reply

    @staticmethod
    def _daemon_error(reply: p.Reply, what: str) -> CniError:
        code = {
            p.ERR_POOL_EMPTY: E_TRY_AGAIN,
            p.ERR_SHUTTING_DOWN: E_TRY_AGAIN,
            p.ERR_NOT_FOUND: E_UNKNOWN_CONTAINER,
        }.get(reply.error_code, E_OTHER)
        return CniError(code, f"{what}: ipamd: {reply.error_code}", reply.error_message)

    def cmd_add(self, conf: NetConf, env: Env) -> int:
        req = self._request(
            conf, env, p.OP_ADD, prev_result=conf.prev_result, mtu=conf.mtu,
            multi_nic=conf.multi_nic,
        )  # fmt: skip
        try:
            reply = self._call(conf, req)
        except p.ProtocolError as e:
            code = E_TRY_AGAIN if e.code in _RETRYABLE else E_OTHER
            raise CniError(code, f"add: cannot reach ipamd ({e.code})", e.message) from None
        if not reply.ok:
            raise self._daemon_error(reply, "add")
        try:
            res = p.AddResult.from_dict(reply.result)
        except p.ProtocolError as e:
            raise CniError(E_OTHER, "add: malformed reply from ipamd", e.message) from None
        if res.if_name != env.if_name:
            raise CniError(
                E_OTHER,
                "add: ipamd configured another interface",
                f"asked for {env.if_name}, got {res.if_name}",
            )
        wanted = [f"{MULTI_NIC_IF_PREFIX}{n}" for n in range(1, len(res.attachments) + 1)]
        if [a.if_name for a in res.attachments] != wanted or (
            res.attachments and not conf.multi_nic
        ):
            raise CniError(
                E_OTHER, "add: ipamd configured unexpected interfaces",
                ", ".join(a.if_name for a in res.attachments),
            )  # fmt: skip
        self.log.info(
            f"added ipv4={res.ipv4} ipv6={res.ipv6} veth={res.host_veth} eni={res.eni_id} "
            f"pod={env.pod_namespace}/{env.pod_name}"
        )
        self.emit(format_result(res, conf.cni_version, env.netns))
        return 0

    def cmd_del(self, conf: NetConf, env: Env) -> int:
        if env.nothing_to_release:
            self.log.warn(f"del: nothing to release ({env.nothing_to_release}); done")
            return 0
        for note in env.skipped:
            self.log.warn(f"del: {note}; releasing anyway")
        req = self._request(conf, env, p.OP_DEL, prev_result=conf.prev_result)
        try:
            p.encode_request(req)
        except p.ProtocolError as e:
            if e.code != p.ERR_TOO_LARGE:
                raise CniError(E_OTHER, "del: invalid request", e.message) from None
            self.log.warn("prevResult too large to forward; sending DEL without it")
            req.prev_result = None
        try:
            reply = self._call(conf, req)
        except p.ProtocolError as e:
            if e.code != p.ERR_UNAVAILABLE:
                raise CniError(
                    E_TRY_AGAIN, f"del: no answer from ipamd ({e.code})", e.message
                ) from None
            self._record_pending_del(conf, req, e.message)
            return 0
        if reply.ok or reply.error_code == p.ERR_NOT_FOUND:
            self.log.info(f"deleted pod={env.pod_namespace}/{env.pod_name}")
            return 0
        if reply.error_code == p.ERR_SHUTTING_DOWN:
            self._record_pending_del(conf, req, reply.error_message)
            return 0
        raise self._daemon_error(reply, "del")

    def _record_pending_del(self, conf: NetConf, req: p.Request, why: str) -> None:
        try:
            from adapters.pending_dels import write_pending_del  # rare path: keep start fast

            path = write_pending_del(conf.pending_del_dir, req)
        except p.ProtocolError as e:
            raise CniError(
                E_TRY_AGAIN,
                "del: ipamd is unreachable and the DEL could not be recorded",
                f"{why}; {e.message}",
            ) from None
        self.log.warn(f"ipamd unreachable ({why}); recorded pending DEL {path}")
        for index, veth in enumerate(host_veths_from_prev_result(conf.prev_result)):
            if_name = req.if_name if index == 0 else f"{MULTI_NIC_IF_PREFIX}{index}"
            self._delete_link(veth, attachment_tag(req.network_name, req.container_id, if_name))

    def _delete_link(self, veth: str, tag: str) -> None:
        """Best effort ``ip link del <veth>`` (validated name, no shell), only when the veth
        carries this attachment's tag (its ifalias): a veth of that name without it belongs to
        another attachment (a newer sandbox of the same pod named the upstream way) or predates
        tags, and ipamd's processing of the pending record removes this attachment's own."""
        import subprocess

        try:
            shown = subprocess.run(
                ["ip", "-j", "link", "show", "dev", veth],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                check=False,
            )
            links = json.loads(shown.stdout or b"[]") if shown.returncode == 0 else []
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            self.log.warn(f"ip link show {veth} failed: {e}")
            return
        alias = links[0].get("ifalias") if links and isinstance(links[0], dict) else None
        if alias != tag:
            self.log.info(f"host veth {veth} is not this attachment's (alias {alias!r}); kept")
            return
        try:
            done = subprocess.run(
                ["ip", "link", "del", veth],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as e:
            self.log.warn(f"ip link del {veth} failed: {e}")
            return
        if done.returncode == 0:
            self.log.info(f"deleted host veth {veth}")
        else:
            err = done.stderr.decode("utf-8", "replace").strip()[:200]
            self.log.warn(f"ip link del {veth} exited {done.returncode}: {err}")

    def cmd_check(self, conf: NetConf, env: Env) -> int:
        if conf.prev_result is None:
            raise CniError(E_INVALID_CONFIG, "check: the configuration has no prevResult")
        req = self._request(conf, env, p.OP_CHECK, prev_result=conf.prev_result, mtu=conf.mtu)
        try:
            reply = self._call(conf, req)
        except p.ProtocolError as e:
            code = E_TRY_AGAIN if e.code in _RETRYABLE else E_OTHER
            raise CniError(code, f"check: cannot reach ipamd ({e.code})", e.message) from None
        if not reply.ok:
            raise self._daemon_error(reply, "check")
        held = reply.result.get("ipv4") if isinstance(reply.result, dict) else None
        listed = prev_result_addresses(conf.prev_result)
        if held and f"{held}/32" not in listed:
            # The spec: CHECK fails when the runtime's prevResult no longer matches.
            raise CniError(
                E_OTHER,
                "check: the address differs from prevResult",
                f"ipamd holds {held}; prevResult lists {', '.join(sorted(listed)) or 'none'}",
            )
        return 0

    def cmd_status(self, conf: NetConf, env: Env) -> int:
        req = p.Request(p.OP_STATUS, network_name=conf.name)
        try:
            reply = self._call(conf, req)
        except p.ProtocolError as e:
            raise CniError(E_NOT_AVAILABLE, "ipamd is not available", e.message) from None
        if not reply.ok:
            raise CniError(
                E_NOT_AVAILABLE,
                f"ipamd is not ready: {reply.error_code}",
                reply.error_message,
            )
        return 0

    def cmd_gc(self, conf: NetConf, env: Env) -> int:
        raw = conf.raw.get("cni.dev/valid-attachments", conf.raw.get("cni.dev/attachments", []))
        if not isinstance(raw, list):
            raise CniError(E_INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
        attachments: list[tuple[str, str]] = []
        try:
            for a in raw:
                if not isinstance(a, dict):
                    raise p.ProtocolError(p.ERR_BAD_REQUEST, "an attachment must be an object")
                attachments.append(
                    (
                        p.validate_container_id(a.get("containerID")),
                        p.validate_if_name(a.get("ifname")),
                    )
                )
        except p.ProtocolError as e:
            raise CniError(
                E_INVALID_CONFIG, "invalid cni.dev/valid-attachments", e.message
            ) from None
        req = p.Request(p.OP_GC, network_name=conf.name, valid_attachments=attachments)
        try:
            reply = self._call(conf, req)
        except p.ProtocolError as e:
            code = E_TRY_AGAIN if e.code in _RETRYABLE else E_OTHER
            if e.code == p.ERR_TOO_LARGE:
                code = E_OTHER
            raise CniError(code, f"gc: cannot reach ipamd ({e.code})", e.message) from None
        if not reply.ok:
            raise self._daemon_error(reply, "gc")
        self.log.info(f"gc with {len(attachments)} valid attachments")
        return 0


def _read_stdin() -> bytes:
    try:
        data = sys.stdin.buffer.read(MAX_STDIN + 1)
    except (OSError, ValueError, AttributeError):
        return b""
    return data


def main(argv: list[str] | None = None) -> int:
    stdin = _read_stdin()
    plugin = Plugin(os.environ, stdin, sys.stdout)
    if len(stdin) > MAX_STDIN:
        plugin.emit(
            {
                "cniVersion": LATEST_VERSION,
                "code": E_DECODE,
                "msg": "the network configuration is too large",
                "details": f"more than {MAX_STDIN} bytes",
            }
        )
        return 1
    return plugin.run()


if __name__ == "__main__":
    sys.exit(main())
