"""``ipamctl doctor``: is this node's CNI healthy? Each check says ok, warn or fail.

Checks: the daemon's socket answers STATUS; the checkpoint file decodes; introspection
answers; kernel settings (``net.ipv4.ip_forward`` = 1; ``rp_filter`` not strict on ``all``);
and the Kubernetes version against the minimum VPC CNI version for it. Any ``fail`` makes
the exit code 1.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable

import attrs

from adapters import protocol as p
from backends.checkpoint import read_checkpoint_file
from ipamcore.errors import CheckpointError

# Kubernetes minor version -> minimum VPC CNI add-on version (EKS documentation).
MIN_CNI_FOR_KUBERNETES = {f"1.{minor}": "v1.21.1-eksbuild.8" for minor in range(29, 36)}

OK, WARN, FAIL = "ok", "warn", "fail"


@attrs.frozen
class Check:
    name: str
    status: str
    detail: str


def parse_cni_version(text: str) -> tuple[int, int, int, int] | None:
    """``v1.21.1-eksbuild.8`` -> (1, 21, 1, 8); a version without eksbuild has build 0."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-eksbuild\.(\d+))?", text.strip())
    if m is None:
        return None
    major, minor, patch, build = m.groups()
    return int(major), int(minor), int(patch), int(build or 0)


def kubernetes_minor(text: str) -> str | None:
    m = re.match(r"v?(\d+)\.(\d+)", text.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else None


def check_versions(kubernetes: str, cni: str) -> Check:
    minor = kubernetes_minor(kubernetes)
    if minor is None:
        return Check("versions", FAIL, f"cannot parse Kubernetes version {kubernetes!r}")
    needed = MIN_CNI_FOR_KUBERNETES.get(minor)
    if needed is None:
        return Check("versions", WARN, f"no minimum VPC CNI version known for Kubernetes {minor}")
    if not cni:
        return Check("versions", OK, f"Kubernetes {minor} needs VPC CNI {needed} or later")
    have = parse_cni_version(cni)
    if have is None:
        return Check("versions", FAIL, f"cannot parse VPC CNI version {cni!r}")
    need = parse_cni_version(needed)
    assert need is not None
    if have < need:
        return Check("versions", FAIL, f"Kubernetes {minor} needs VPC CNI {needed}; have {cni}")
    return Check("versions", OK, f"VPC CNI {cni} >= {needed} for Kubernetes {minor}")


def configured(introspection_url: str, timeout: float) -> dict[str, str]:
    """The daemon's own settings (``/v1/ipamd-env-settings``); empty when unreachable, so the
    doctor checks the paths and namespace the daemon uses, not this tool's defaults."""
    try:
        with urllib.request.urlopen(
            introspection_url + "/v1/ipamd-env-settings", timeout=timeout
        ) as response:
            doc = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


def check_socket(path: str, timeout: float) -> Check:
    try:
        reply = p.request(path, p.Request(p.OP_STATUS, network_name="aws-cni"), timeout)
    except p.ProtocolError as exc:
        return Check("socket", FAIL, f"{path}: {exc.code}: {exc.message}")
    if not reply.ok:
        return Check("socket", FAIL, f"{path}: {reply.error_code}: {reply.error_message}")
    result = reply.result or {}
    return Check(
        "socket", OK,
        f"{path}: ready, {result.get('assigned')}/{result.get('total')} addresses assigned",
    )  # fmt: skip


def check_checkpoint(path: str) -> Check:
    try:
        checkpoint = read_checkpoint_file(path)
    except CheckpointError as exc:
        return Check("checkpoint", FAIL, f"{path}: {exc}")
    except OSError as exc:
        return Check("checkpoint", FAIL, f"{path}: {exc.strerror or exc}")
    if checkpoint is None:
        return Check("checkpoint", WARN, f"{path}: no checkpoint yet")
    return Check("checkpoint", OK, f"{path}: {len(checkpoint.allocations)} allocations")


def check_introspection(base_url: str, timeout: float) -> Check:
    try:
        with urllib.request.urlopen(base_url + "/stats", timeout=timeout) as response:
            stats = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check("introspection", FAIL, f"{base_url}: {exc}")
    return Check(
        "introspection", OK,
        f"{base_url}: {stats.get('enis')} ENIs, {stats.get('available')} available",
    )  # fmt: skip


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _reader(proc_root: str, host_netns: str | None) -> Callable[[str], str | None]:
    """Reads ``net/ipv4/...`` keys: under ``proc_root``, or inside the daemon's host namespace
    (``IPAMD_HOST_NETNS``), where the datapath applies them."""
    if not host_netns:
        return lambda key: _read(os.path.join(proc_root, "sys", key))
    from backends.datapath.sysctls import ProcSysctlWriter

    writer = ProcSysctlWriter(host_netns)

    def read(key: str) -> str | None:
        try:
            return writer.read(key)
        except Exception:
            return None

    return read


def check_kernel(proc_root: str, host_netns: str | None = None) -> list[Check]:
    read = _reader(proc_root, host_netns)
    forward = read("net/ipv4/ip_forward")
    checks = []
    if forward is None:
        checks.append(Check("ip_forward", WARN, "cannot read net.ipv4.ip_forward"))
    elif forward != "1":
        checks.append(Check("ip_forward", FAIL, f"net.ipv4.ip_forward = {forward}, need 1"))
    else:
        checks.append(Check("ip_forward", OK, "net.ipv4.ip_forward = 1"))
    rp = read("net/ipv4/conf/all/rp_filter")
    if rp is None:
        checks.append(Check("rp_filter", WARN, "cannot read net.ipv4.conf.all.rp_filter"))
    elif rp == "1":
        checks.append(
            Check("rp_filter", FAIL, "net.ipv4.conf.all.rp_filter = 1 (strict) drops traffic "
                  "of pods on secondary ENIs; use 2 (loose) or 0")
        )  # fmt: skip
    else:
        checks.append(Check("rp_filter", OK, f"net.ipv4.conf.all.rp_filter = {rp}"))
    return checks


def run_doctor(
    socket_path: str,
    checkpoint_path: str,
    introspection_url: str,
    proc_root: str = "/proc",
    kubernetes: str = "",
    cni: str = "",
    timeout: float = 3.0,
    extra: Callable[[], list[Check]] | None = None,
    host_netns: str | None = None,
) -> list[Check]:
    checks = [
        check_socket(socket_path, timeout),
        check_checkpoint(checkpoint_path),
        check_introspection(introspection_url, timeout),
        *check_kernel(proc_root, host_netns),
    ]
    if kubernetes:
        checks.append(check_versions(kubernetes, cni))
    if extra is not None:
        checks.extend(extra())
    return checks
