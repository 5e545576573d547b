"""How a local node's container runtime invokes the CNI plugin: directly, or through libcni.

:class:`PluginExec` runs ``python -m adapters.cni.plugin`` with the CNI environment and one
network config on stdin (the demo's way: nothing to build). :class:`Libcni` runs a real libcni
client (``tests/cni/runner``, Go) on the shipped conflist, vpc-cni chained with portmap, from
inside the node network namespace as the node's container runtime would run, so whatever
portmap does to iptables stays in that namespace. libcni keeps each ADD's result in its cache
directory and hands it to CHECK and DEL itself.

Both raise :class:`CniError` when the runtime reports a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import adapters.cni

SHIPPED_CONFLIST = Path(adapters.cni.__file__).resolve().parent / "10-vpc-cni.conflist"
SYSTEM_CNI_DIR = "/usr/lib/cni"


class CniError(RuntimeError):
    """The runtime reported that a CNI command failed; ``doc`` is its error object."""

    def __init__(self, command: str, pod: str, doc: Any) -> None:
        super().__init__(f"CNI {command} {pod}: {doc}")
        self.doc = doc


POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations"  # the capability containerd fills


class CniRuntime(Protocol):
    def __call__(
        self,
        command: str,
        pod: str,
        netns: str,
        container_id: str,
        prev_result: dict[str, Any] | None = None,
        if_name: str = "eth0",
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]: ...


def pod_args(pod: str) -> str:
    return f"IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={pod}"


class PluginExec:
    """The plugin executed directly with one network config (``config``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def __call__(
        self,
        command: str,
        pod: str,
        netns: str,
        container_id: str,
        prev_result: dict[str, Any] | None = None,
        if_name: str = "eth0",
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": if_name,
            "CNI_PATH": os.path.dirname(sys.executable),
            "CNI_ARGS": pod_args(pod),
        }
        config = dict(self.config)
        if prev_result is not None:
            config["prevResult"] = prev_result
        if annotations is not None:  # what libcni does for a declared capability
            config["runtimeConfig"] = {POD_ANNOTATIONS: dict(annotations)}
        done = subprocess.run(
            [sys.executable, "-m", "adapters.cni.plugin"],
            input=json.dumps(config).encode(),
            env=env,
            capture_output=True,
            timeout=60,
        )
        out = done.stdout.decode().strip()
        doc: dict[str, Any] = json.loads(out) if out else {}
        if done.returncode != 0:
            raise CniError(command, pod, doc or done.stderr.decode())
        return doc


def plugin_executable(bin_dir: Path) -> Path:
    """The ``vpc-cni`` console script beside this interpreter, or a launcher made in
    ``bin_dir`` that is equivalent to it."""
    installed = Path(sys.executable).parent / "vpc-cni"
    if installed.is_file() and os.access(installed, os.X_OK):
        return installed
    launcher = bin_dir / "vpc-cni-launcher"
    launcher.write_text(
        f"#!{sys.executable}\nimport sys\nfrom adapters.cni.plugin import main\nsys.exit(main())\n"
    )
    launcher.chmod(0o755)
    return launcher


class Libcni:
    """The shipped conflist through the libcni runner ``runner``.

    Made in ``workdir``: ``10-vpc-cni.conflist`` (the shipped list with the socket, pending-DEL
    and log paths pointed at this node), ``bin/`` (``vpc-cni`` and the system ``portmap``) and
    ``cache/`` (libcni's results). ``netns``: the namespace the runner runs in (None: this one).
    """

    def __init__(
        self,
        runner: str,
        workdir: str,
        socket_path: str,
        pending_del_dir: str,
        netns: str | None,
    ) -> None:
        self.runner = runner
        self.netns = netns
        root = Path(workdir)
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        portmap = Path(SYSTEM_CNI_DIR, "portmap")
        if not os.access(portmap, os.X_OK):
            raise FileNotFoundError(f"no {portmap} (apt-get install containernetworking-plugins)")
        for name, target in (("vpc-cni", plugin_executable(self.bin_dir)), ("portmap", portmap)):
            link = self.bin_dir / name
            if not link.exists():
                link.symlink_to(target)
        self.cache_dir = root / "cache"
        conf = json.loads(SHIPPED_CONFLIST.read_text())
        ours = conf["plugins"][0]
        ours["socketPath"] = socket_path
        ours["pendingDelDir"] = pending_del_dir
        ours["pluginLogFile"] = str(root / "plugin.log")
        self.conflist = root / SHIPPED_CONFLIST.name
        self.conflist.write_text(json.dumps(conf, indent=2))

    def __call__(
        self,
        command: str,
        pod: str,
        netns: str,
        container_id: str,
        prev_result: dict[str, Any] | None = None,
        if_name: str = "eth0",
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        # prev_result is not passed: libcni hands DEL/CHECK the result it cached on ADD.
        # The annotations go in as capability args: libcni puts them in runtimeConfig only
        # because the shipped conflist declares the capability.
        inside = [] if self.netns is None else ["ip", "netns", "exec", self.netns]
        capability = (
            [] if annotations is None
            else ["-capability-args", json.dumps({POD_ANNOTATIONS: dict(annotations)})]
        )  # fmt: skip
        done = subprocess.run(
            [*inside, self.runner, "-cmd", command.lower(), "-conflist", str(self.conflist),
             "-bin-dirs", str(self.bin_dir), "-cache-dir", str(self.cache_dir),
             "-container-id", container_id, "-netns", netns, "-ifname", if_name,
             "-args", pod_args(pod), *capability],
            capture_output=True,
            timeout=90,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        )  # fmt: skip
        return runner_result(done, command, pod)


def runner_result(
    done: subprocess.CompletedProcess[bytes], command: str, pod: str
) -> dict[str, Any]:
    """The libcni runner's answer (its JSON on stdout); raises CniError when it failed."""
    out = done.stdout.decode().strip()
    try:
        doc: dict[str, Any] = json.loads(out) if out else {}
    except ValueError:
        doc = {"error": {"msg": out}}
    if done.returncode != 0:
        raise CniError(command, pod, doc.get("error") or done.stderr.decode())
    return doc
