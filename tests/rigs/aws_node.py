"""Nodes whose aws-node pod is the project's image run by podman, as the DaemonSet runs it.

Each :class:`ContainerNode` is an EC2 instance (moto_server) with:

- a node network namespace standing in for its host network: ``eth0`` carries the primary
  ENI's MAC and address, and the ENIs attached later appear as links there
  (:class:`tests.rigs.eni_hotplug.EniHotplug`, the hypervisor's part);
- a temporary root standing in for its filesystem: the DaemonSet's hostPath volumes
  (``/opt/cni/bin``, ``/etc/cni/net.d``, ``/var/log/aws-routed-eni``, ``/var/run/aws-node``,
  ``/run/xtables.lock``) live under it; only ``/var/run/netns`` is the machine's own, since
  ``ip netns add`` makes the pods' namespaces there;
- its instance metadata (:class:`tests.rigs.metadata_server.MetadataServer`) and the EC2 and
  API server endpoints on the namespace's loopback (:mod:`tests.rigs.netns_forward`);
- the ``aws-vpc-cni-init`` and ``aws-node`` containers made from the DaemonSet of
  ``deploy/aws-k8s-cni.yaml`` (:func:`podman_args`: its command, securityContext, volume
  mounts and environment, the downward API's values filled in, a service-account token
  mounted as kubelet mounts it), plus the test's environment (endpoints, features);
- the node's container runtime (:class:`HostCni`): the libcni runner, in the node namespace,
  runs the plugin the init container installed with the conflist the main container wrote,
  in a private mount namespace where the temporary root's directories are at their host
  paths, so the plugin finds ipamd's socket, pending-DEL directory and log where the conflist
  says.

Everything made is removed by :func:`cleanup_node` (the test's ``finally``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import yaml

from deploy import image
from tests.rigs.cni_runtime import pod_args, runner_result
from tests.rigs.eni_hotplug import EniHotplug
from tests.rigs.metadata_server import MetadataServer

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "aws-k8s-cni.yaml"
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
NETNS_DIR = "/var/run/netns"  # the machine's: pods' namespaces are made there
IPAMD_PORTS = (61678, 61679)  # the daemon's, in each node namespace


def daemonset() -> dict[str, Any]:
    """The DaemonSet object of the shipped manifest."""
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc.get("kind") == "DaemonSet":
            return dict(doc)
    raise AssertionError(f"no DaemonSet in {MANIFEST}")


def host_path(root: Path, path: str) -> Path:
    return Path(path) if path == NETNS_DIR else root / path.lstrip("/")


def podman_args(
    container: dict[str, Any],
    volumes: dict[str, dict[str, Any]],
    root: Path,
    field_values: dict[str, str],
    extra_env: dict[str, str],
) -> list[str]:
    """``podman run`` flags for one container of the DaemonSet's pod template: hostPath volumes
    under ``root`` (made as their ``type`` says), the securityContext, the environment with
    the downward API's ``fieldPath`` values from ``field_values``, then ``extra_env``."""
    args: list[str] = []
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        args.append("--privileged")
    else:
        args += ["--cap-drop", "ALL"]
        for cap in (sc.get("capabilities") or {}).get("add") or ():
            args += ["--cap-add", cap]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
    for mount in container.get("volumeMounts") or ():
        hp = volumes[mount["name"]]["hostPath"]
        src = host_path(root, hp["path"])
        kind = hp.get("type", "")
        if kind == "FileOrCreate" and not src.exists():
            src.parent.mkdir(parents=True, exist_ok=True)
            src.touch()
        elif not src.exists():
            src.mkdir(parents=True, exist_ok=True)
        opts = ["ro"] if mount.get("readOnly") else []
        propagation = mount.get("mountPropagation")
        if propagation == "HostToContainer":
            opts.append("rslave")
        elif propagation == "Bidirectional":
            opts.append("rshared")
        args += ["-v", f"{src}:{mount['mountPath']}" + (":" + ",".join(opts) if opts else "")]
    env: dict[str, str] = {}
    for var in container.get("env") or ():
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = field_values[var["valueFrom"]["fieldRef"]["fieldPath"]]
    env.update(extra_env)
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return args


# In the runtime's mount namespace: the temporary root's directories at their host paths
# (/var/run and /var/log get a tmpfs where a directory is missing on this machine, so nothing
# is made on it), the machine's /var/run/netns kept, then the runner in the node namespace.
HOST_MOUNTS = r"""
set -e
mount --make-rprivate /
mount --rbind /var/run/netns "$SAVE"
mount -t tmpfs tmpfs /var/run
mkdir -p /var/run/netns /var/run/aws-node
mount --rbind "$SAVE" /var/run/netns
mount --bind "$ROOT/var/run/aws-node" /var/run/aws-node
touch /var/run/xtables.lock
mount --bind "$ROOT/run/xtables.lock" /var/run/xtables.lock
if [ ! -d /var/log/aws-routed-eni ]; then mount -t tmpfs tmpfs /var/log; fi
mkdir -p /var/log/aws-routed-eni
mount --bind "$ROOT/var/log/aws-routed-eni" /var/log/aws-routed-eni
exec ip netns exec "$NODE" "$@"
"""


class HostCni:
    """The node's container runtime: libcni with ``<root>/etc/cni/net.d/10-aws.conflist`` and
    ``<root>/opt/cni/bin``, an empty environment but ``PATH``."""

    def __init__(self, runner: Path, root: Path, node_ns: str) -> None:
        self.runner, self.root, self.node_ns = runner, root, node_ns
        self.cache = root / "var" / "lib" / "cni"
        self.save = root / ".netns-save"
        for d in (self.cache, self.save):
            d.mkdir(parents=True, exist_ok=True)

    def __call__(self, command: str, pod: str, netns: str, container_id: str) -> dict[str, Any]:
        argv = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", HOST_MOUNTS, "host",
            str(self.runner), "-cmd", command.lower(),
            "-conflist", str(self.root / "etc/cni/net.d/10-aws.conflist"),
            "-bin-dirs", str(self.root / "opt/cni/bin"), "-cache-dir", str(self.cache),
            "-container-id", container_id, "-netns", netns, "-ifname", "eth0",
            "-args", pod_args(pod),
        ]  # fmt: skip
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(self.root),
               "SAVE": str(self.save), "NODE": self.node_ns}  # fmt: skip
        done = subprocess.run(argv, capture_output=True, timeout=90, env=env)
        return runner_result(done, command, pod)


@attrs.define
class Pod:
    name: str
    netns: str
    container_id: str
    ip: str


@attrs.define
class ContainerNode:
    name: str
    zone: str
    instance_id: str
    primary_ip: str
    primary_mac: str
    root: Path
    netns: str
    store: image.Store
    tag: str
    hotplug: EniHotplug | None = None
    metadata: MetadataServer | None = None
    forwarder: subprocess.Popen[str] | None = None
    cni: HostCni | None = None
    containers: list[str] = attrs.field(factory=list)
    pods: dict[str, Pod] = attrs.field(factory=dict)
    pod_netns: list[str] = attrs.field(factory=list)

    @property
    def conflist(self) -> Path:
        return self.root / "etc/cni/net.d/10-aws.conflist"

    @property
    def socket(self) -> Path:
        return self.root / "var/run/aws-node/ipam.sock"

    @property
    def bin_dir(self) -> Path:
        return self.root / "opt/cni/bin"

    @property
    def main(self) -> str:
        return f"{self.netns}-aws-node"

    def in_ns(self, *cmd: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    def exec(self, *cmd: str) -> str:
        """``kubectl exec aws-node-... -c aws-node -- cmd``."""
        done = self.store.podman("exec", self.main, *cmd, check=False, timeout=60)
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
        return done.stdout

    def logs(self, name: str | None = None) -> str:
        done = self.store.podman("logs", name or self.main, check=False)
        return done.stdout + done.stderr

    def running(self) -> bool:
        done = self.store.podman("inspect", "-f", "{{.State.Running}}", self.main, check=False)
        return done.stdout.strip() == "true"

    # ------------------------------------------------------------ the DaemonSet's pod

    def run_init(self, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        ds = daemonset()["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in ds["volumes"]}
        init = ds["initContainers"][0]
        args = podman_args(init, volumes, self.root, {}, extra_env)
        return self.store.podman(
            "run", "--rm", "--network", f"ns:{NETNS_DIR}/{self.netns}", *args, self.tag,
            *init["command"], check=False, timeout=120,
        )  # fmt: skip

    def start_main(self, extra_env: dict[str, str], service_account: Path) -> None:
        ds = daemonset()["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in ds["volumes"]}
        node = next(c for c in ds["containers"] if c["name"] == "aws-node")
        fields = {"spec.nodeName": self.name, "metadata.name": f"aws-node-{self.name}"}
        args = podman_args(node, volumes, self.root, fields, extra_env)
        self.containers.append(self.main)
        self.store.podman(
            "run", "-d", "--name", self.main, "--network", f"ns:{NETNS_DIR}/{self.netns}",
            "-v", f"{service_account}:{SERVICE_ACCOUNT}:ro", *args, self.tag, *node["command"],
        )  # fmt: skip

    def start_aws_cni(self) -> str:
        """The DaemonSet's ``aws-cni`` container (the plugin's log on its stdout: ``kubectl
        logs -c aws-cni``); no network, as it needs none."""
        ds = daemonset()["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in ds["volumes"]}
        tail = next(c for c in ds["containers"] if c["name"] == "aws-cni")
        name = f"{self.netns}-aws-cni"
        self.containers.append(name)
        args = podman_args(tail, volumes, self.root, {}, {})
        self.store.podman("run", "-d", "--name", name, "--network", "none", *args, self.tag,
                          *tail["command"])  # fmt: skip
        return name

    # ------------------------------------------------------------ pods, as kubelet

    def ping(self, pod: Pod, address: str) -> bool:
        done = subprocess.run(["ip", "netns", "exec", pod.netns, "ping", "-c", "1", "-W", "3",
                               address], capture_output=True)  # fmt: skip
        return done.returncode == 0

    def add_pod(self, name: str) -> Pod:
        assert self.cni is not None
        ns = f"{self.netns}-{name}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.pod_netns.append(ns)
        cid = f"c{name.replace('-', '')}{os.getpid()}"
        result = self.cni("ADD", name, f"{NETNS_DIR}/{ns}", cid)
        ip = str(result["ips"][0]["address"]).split("/")[0]
        pod = self.pods[name] = Pod(name, ns, cid, ip)
        return pod

    def del_pod(self, name: str) -> None:
        assert self.cni is not None
        pod = self.pods.pop(name)
        self.cni("DEL", name, f"{NETNS_DIR}/{pod.netns}", pod.container_id)
        subprocess.run(["ip", "netns", "del", pod.netns], check=False, capture_output=True)
        self.pod_netns.remove(pod.netns)

    def pod_view(self, pod: Pod) -> tuple[str, str]:
        """The pod's addresses and routes (for "unchanged" checks)."""
        run = ["ip", "-n", pod.netns]
        addr = subprocess.run([*run, "-4", "-o", "addr", "show", "dev", "eth0"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        route = subprocess.run([*run, "-4", "route", "show"], capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
        return " ".join(addr.split()), route.strip()


def make_node_netns(name: str, primary_ip: str, mac: str) -> None:
    """The node's host network: ``eth0`` with the primary ENI's MAC and address."""
    run = ["ip", "netns", "exec", name]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    for key in ("all", "default"):  # no IPv6 link-local churn in the node's tables
        subprocess.run([*run, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
    subprocess.run(["ip", "-n", name, "link", "add", "eth0", "address", mac, "type", "veth",
                    "peer", "name", "uplink0"], check=True)  # fmt: skip
    subprocess.run(["ip", "-n", name, "addr", "add", f"{primary_ip}/20", "dev", "eth0"], check=True)
    for dev in ("eth0", "uplink0"):
        subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)


def forward_ports(netns: str, ports: list[int]) -> subprocess.Popen[str]:
    """This machine's ``ports`` on the node's loopback (:mod:`tests.rigs.netns_forward`)."""
    clash = set(ports) & set(IPAMD_PORTS)
    assert not clash, f"port {clash} is the daemon's own in the node"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.rigs.netns_forward", "--netns", f"{NETNS_DIR}/{netns}",
         *map(str, ports)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"netns forwarder did not start: {line!r}")
    return proc


def service_account(directory: Path, token: str, ca: Path) -> Path:
    """What kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    shutil.copy2(ca, directory / "ca.crt")
    (directory / "namespace").write_text("kube-system")
    return directory


def cleanup_node(node: ContainerNode, show_logs: bool = False) -> None:
    """Containers, pods' and the node's namespaces, servers; never raises. ``show_logs``
    (a failed test): each container's last log lines on stdout first; with
    ``IPAMCORE_E2E_LOGS=<dir>`` their whole logs are kept there."""
    keep = os.environ.get("IPAMCORE_E2E_LOGS", "")
    for name in node.containers:
        logs = node.logs(name)
        if show_logs:
            print(f"==== {name} (last lines)\n{logs[-6000:]}")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"{name}.log").write_text(logs)
        node.store.podman("rm", "-f", "-t", "0", name, check=False)
    for ns in node.pod_netns:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    if node.forwarder is not None:
        node.forwarder.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.forwarder.wait(timeout=10)
        if node.forwarder.poll() is None:
            node.forwarder.kill()
    for stop in (node.hotplug, node.metadata):
        if stop is not None:
            with contextlib.suppress(Exception):
                stop.stop()
    subprocess.run(["ip", "netns", "del", node.netns], check=False, capture_output=True)


def wait_for(check: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds (exceptions: not yet)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not there yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"not reached in {timeout:.0f} s: {what} (last error: {last!r})")
