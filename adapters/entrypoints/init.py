"""``aws-vpc-cni-init``: the aws-node DaemonSet's init container (upstream's aws-vpc-cni-init).

1. Installs the CNI binaries into the host's bin directory (``HOST_CNI_BIN_PATH``, default
   ``/host/opt/cni/bin``, a hostPath mount of ``/opt/cni/bin``): the self-contained
   ``vpc-cni`` plugin (``vpc-cni.d/``, its own interpreter: no Python needed on the node, and
   ``vpc-cni``, a symlink into it) and, as upstream, ``loopback``,
   ``portmap``, ``bandwidth`` and ``host-local``. Each file lands atomically.
2. Finds the primary interface: the link whose MAC is instance metadata's ``mac``
   (IMDSv2 at ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, default ``http://169.254.169.254``).
3. Sysctls, as upstream: ``net/ipv4/conf/<primary>/rp_filter=2`` (loose: replies to pods on
   secondary ENIs arrive on the primary); ``net/ipv4/ip_forward=1`` (ipamd's node setting,
   written here because the aws-node container's /proc/sys is read-only);
   ``net/ipv4/tcp_early_demux`` 0 when ``DISABLE_TCP_EARLY_DEMUX=true`` else 1 (where the
   kernel has it); with ``ENABLE_IPv6=true``
   ``net/ipv6/conf/all/disable_ipv6=0``, and with it or ``ENABLE_V6_EGRESS=true``
   ``net/ipv6/conf/all/forwarding=1`` and ``net/ipv6/conf/<primary>/accept_ra=2``.

Exit 0 when done, 1 on any failure (kubelet restarts the init container). Paths for tests:
``--bin-source`` (default ``/app``), ``--sys-class-net`` (``/sys/class/net``), ``--proc-sys``
(``/proc/sys``).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.entrypoints.files import (
    env_bool,
    install_file,
    install_symlink,
    install_tree,
    log,
)

DEFAULT_HOST_BIN = "/host/opt/cni/bin"
DEFAULT_METADATA = "http://169.254.169.254"
PLUGIN = "vpc-cni"
PLUGIN_DIR = "vpc-cni.d"  # the plugin with its own interpreter (deploy/plugin_bundle.py)
PLUGIN_LINK = f"{PLUGIN_DIR}/bin/{PLUGIN}"  # vpc-cni -> vpc-cni.d/bin/vpc-cni
UPSTREAM_BINS = ("loopback", "portmap", "bandwidth", "host-local")


class InitError(Exception):
    pass


def metadata_mac(endpoint: str, timeout: float = 2.0, attempts: int = 5) -> str:
    """The primary ENI's MAC from IMDSv2 (token first), retried a few times."""
    base = endpoint.rstrip("/")
    last: Exception | None = None
    for _ in range(attempts):
        try:
            put = urllib.request.Request(
                base + "/latest/api/token", method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
            )  # fmt: skip
            with urllib.request.urlopen(put, timeout=timeout) as resp:
                token = resp.read().decode().strip()
            get = urllib.request.Request(
                base + "/latest/meta-data/mac", headers={"X-aws-ec2-metadata-token": token}
            )
            with urllib.request.urlopen(get, timeout=timeout) as resp:
                mac: str = resp.read().decode().strip().lower()
                return mac
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
    raise InitError(f"instance metadata {base}: cannot read the primary MAC: {last}")


def interface_by_mac(mac: str, sys_class_net: Path) -> str:
    for entry in sorted(sys_class_net.iterdir()):
        try:
            if (entry / "address").read_text().strip().lower() == mac:
                return entry.name
        except OSError:
            continue
    raise InitError(f"no interface has the primary MAC {mac} (in {sys_class_net})")


def sysctl_settings(env: Mapping[str, str], primary: str, proc_sys: Path) -> list[tuple[str, str]]:
    """The (key, value) pairs to write, in order; keys are paths under /proc/sys."""
    # ip_forward: ipamd's too, but its container cannot write /proc/sys (it skips a value
    # already in place), so the init container sets it first
    settings = [("net/ipv4/ip_forward", "1"), (f"net/ipv4/conf/{primary}/rp_filter", "2")]
    if (proc_sys / "net/ipv4/tcp_early_demux").exists():
        disable = env.get("DISABLE_TCP_EARLY_DEMUX", "false").strip().lower() == "true"
        settings.append(("net/ipv4/tcp_early_demux", "0" if disable else "1"))
    ipv6 = env_bool(env, "ENABLE_IPv6", False)
    if ipv6:
        settings.append(("net/ipv6/conf/all/disable_ipv6", "0"))
    if ipv6 or env_bool(env, "ENABLE_V6_EGRESS", False):
        settings.append(("net/ipv6/conf/all/forwarding", "1"))
        settings.append((f"net/ipv6/conf/{primary}/accept_ra", "2"))
    return settings


def write_sysctl(proc_sys: Path, key: str, value: str) -> None:
    path = proc_sys / key
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise InitError(f"cannot set {key}={value}: {exc}") from exc
    log("init", f"set {key} = {path.read_text().strip()}")


def install_binaries(source: Path, host_bin: Path) -> list[str]:
    """Install the plugin and upstream's helper plugins; returns the names that changed."""
    host_bin.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    bundle = source / PLUGIN_DIR
    if bundle.is_dir():
        if install_tree(bundle, host_bin / PLUGIN_DIR):
            changed.append(PLUGIN_DIR)
        if install_symlink(PLUGIN_LINK, host_bin / PLUGIN):
            changed.append(PLUGIN)
    elif (source / PLUGIN).is_file():
        if (host_bin / PLUGIN).is_symlink():
            (host_bin / PLUGIN).unlink()
        if install_file(source / PLUGIN, host_bin / PLUGIN):
            changed.append(PLUGIN)
    else:
        raise InitError(f"{source}: neither {PLUGIN_DIR}/ nor {PLUGIN} to install")
    for name in UPSTREAM_BINS:
        src = source / name
        if not src.exists():
            raise InitError(f"required executable {src} not found")
        if install_file(src, host_bin / name):
            changed.append(name)
    return changed


def run(
    env: Mapping[str, str], source: Path, sys_class_net: Path, proc_sys: Path
) -> None:
    host_bin = Path(env.get("HOST_CNI_BIN_PATH") or DEFAULT_HOST_BIN)
    changed = install_binaries(source, host_bin)
    log("init", f"CNI binaries in {host_bin}: " + (", ".join(changed) or "already up to date"))
    endpoint = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_METADATA
    mac = metadata_mac(endpoint)
    primary = interface_by_mac(mac, sys_class_net)
    log("init", f"primary interface {primary} (MAC {mac})")
    for key, value in sysctl_settings(env, primary, proc_sys):
        write_sysctl(proc_sys, key, value)
    log("init", "CNI init container done")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aws-vpc-cni-init", description=__doc__.split("\n")[0])
    ap.add_argument("--bin-source", type=Path, default=Path("/app"))
    ap.add_argument("--sys-class-net", type=Path, default=Path("/sys/class/net"))
    ap.add_argument("--proc-sys", type=Path, default=Path("/proc/sys"))
    opts = ap.parse_args(argv)
    try:
        run(os.environ if env is None else env, opts.bin_source, opts.sys_class_net,
            opts.proc_sys)  # fmt: skip
    except (InitError, OSError) as exc:
        log("init", str(exc), "error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
