"""A whole node on this machine: moto_server on loopback, the project's metadata server, the
daemon with the EC2 backend over HTTP, and pods created through the CNI plugin.

Used by the demo (``./dev demo``) and by the end-to-end tests. With root and ``ip netns`` the
datapath is real: the daemon's pyroute2 datapath works in a "node" network namespace made
here (so the machine's own links, rules and routes are never touched) and each pod gets a
real network namespace; the daemon reaches EC2 through :mod:`tests.rigs.eni_hotplug`, which
plays the hypervisor and hot-plugs a link with the MAC of every ENI attached to the instance,
so pods may use secondary ENIs. Without root it says so and uses the fake datapath.

The plugin is run directly (:class:`tests.rigs.cni_runtime.PluginExec`), or, given a built
libcni runner, through libcni with the shipped conflist (:class:`tests.rigs.cni_runtime.Libcni`).

Everything started is stopped, and every namespace made is deleted, on exit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import boto3  # type: ignore[import-untyped]

from adapters.ipamd.settings import state_env
from ipamcore.cards import card_limits
from ipamcore.limits import limits_for
from tests.rigs.cni_runtime import CniRuntime, Libcni, PluginExec
from tests.rigs.eni_hotplug import EniHotplug, ip_link_runner

REGION = "us-west-2"
ZONE = "us-west-2a"
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def real_datapath_possible() -> tuple[bool, str]:
    """(possible, reason): root, ``ip`` and ``ip netns`` are needed for the real datapath."""
    if os.geteuid() != 0:
        return False, "not running as root"
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is missing"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True)
    if probe.returncode != 0:
        return False, "ip netns is not available"
    return True, ""


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # an HTTP error still means it is up
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@attrs.define
class Pod:
    name: str
    container_id: str
    netns: str
    result: dict[str, Any]

    @property
    def ip(self) -> str:
        return str(self.result["ips"][0]["address"]).split("/")[0]


@attrs.define
class LocalNode:
    """The processes and namespaces of one simulated node. Use :func:`local_node`."""

    workdir: str
    real: bool
    node_netns: str
    moto_url: str
    metadata_url: str
    introspection_url: str
    instance_id: str
    env: dict[str, str]
    tag: str = ""
    cni: CniRuntime | None = None
    hotplug: EniHotplug | None = None
    procs: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    pods: dict[str, Pod] = attrs.field(factory=dict)
    daemon: subprocess.Popen[bytes] | None = None
    netns_made: list[str] = attrs.field(factory=list)

    @property
    def socket_path(self) -> str:
        return self.env["IPAMD_SOCKET"]

    def cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "aws-cni",
            "type": "vpc-cni",
            "socketPath": self.socket_path,
            "pendingDelDir": self.env["IPAMD_PENDING_DEL_DIR"],
            "pluginLogFile": os.path.join(self.workdir, "plugin.log"),
            "mtu": 9001,
        }

    def plugin(
        self,
        command: str,
        pod: str,
        netns: str,
        container_id: str,
        prev_result: dict[str, Any] | None = None,
        if_name: str = "eth0",
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One CNI command through this node's runtime; raises CniError when it fails.
        ``annotations``: the pod's, passed as the runtime does (capability
        ``io.kubernetes.cri.pod-annotations``, in runtimeConfig)."""
        cni = self.cni or PluginExec(self.cni_config())
        return cni(command, pod, netns, container_id, prev_result, if_name, annotations)

    def make_netns(self, name: str) -> str:
        if not self.real:
            return f"/var/run/netns/fake-{name}"
        ns = f"ipc-{self.tag or os.getpid()}-{name}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.netns_made.append(ns)
        return f"/var/run/netns/{ns}"

    def forget_netns(self, name: str) -> None:
        """Delete the namespace made for ``name`` (a failed ADD's, before a retry)."""
        if not self.real:
            return
        ns = f"ipc-{self.tag or os.getpid()}-{name}"
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        if ns in self.netns_made:
            self.netns_made.remove(ns)

    def add_pod(self, name: str) -> Pod:
        container_id = f"c{name.replace('-', '')}{self.tag.replace('-', '')}"
        netns = self.make_netns(name)
        pod = Pod(name, container_id, netns, self.plugin("ADD", name, netns, container_id))
        self.pods[name] = pod
        return pod

    def check_pod(self, name: str) -> dict[str, Any]:
        pod = self.pods[name]
        return self.plugin("CHECK", name, pod.netns, pod.container_id, pod.result)

    def del_pod(self, name: str) -> None:
        pod = self.pods.pop(name)
        self.plugin("DEL", name, pod.netns, pod.container_id, pod.result)
        if self.real:
            ns = os.path.basename(pod.netns)
            subprocess.run(["ip", "netns", "del", ns], check=False)
            if ns in self.netns_made:
                self.netns_made.remove(ns)

    def ping(self, pod: Pod, address: str) -> bool:
        """Ping ``address`` from inside ``pod`` (real datapath only)."""
        ns = os.path.basename(pod.netns)
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", address],
            capture_output=True,
        )
        return done.returncode == 0

    def ipamctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "adapters.ipamctl.main", "--introspection",
             self.introspection_url, *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return done.stdout + done.stderr

    def start_daemon(self) -> None:
        log = open(os.path.join(self.workdir, "ipamd.log"), "ab")  # noqa: SIM115
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "tests.rigs.crashpoints"],
            env={**os.environ, **self.env}, stdout=log, stderr=log,
        )  # fmt: skip
        wait_http(self.introspection_url + "/v1/enis", 60, self.daemon)

    def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        code = self.daemon.wait(timeout=30)
        self.daemon = None
        return code


def _start_moto(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(os.path.join(workdir, "moto.log"), "ab")  # noqa: SIM115
    # moto_server, with EC2's rules for the addresses it gives ENIs (tests.rigs.moto_addresses).
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.rigs.moto_addresses", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", 60, proc)
    return proc, url


def _make_world(moto_url: str, instance_type: str) -> tuple[str, str]:
    """A VPC, a /20 subnet tagged for subnet discovery, a security group, one instance."""
    ec2 = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("ec2", endpoint_url=moto_url)
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(
        VpcId=vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=ZONE,
        TagSpecifications=[{"ResourceType": "subnet",
                            "Tags": [{"Key": "kubernetes.io/role/cni", "Value": "1"}]}],
    )["Subnet"]["SubnetId"]  # fmt: skip
    sg = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    instance = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType=instance_type,
        SubnetId=subnet, SecurityGroupIds=[sg],
    )["Instances"][0]  # fmt: skip
    return instance["InstanceId"], instance["PrivateIpAddress"]


def _make_node_netns(name: str, primary_ip: str) -> None:
    """A namespace standing in for the node's host side, with eth0 holding the primary IP."""
    run = ["ip", "netns", "exec", name]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
    for key in ("all", "default"):  # no IPv6 link-local churn in the node's tables
        subprocess.run([*run, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)
    subprocess.run(
        [*run, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0"], check=True
    )
    subprocess.run([*run, "ip", "addr", "add", f"{primary_ip}/20", "dev", "eth0"], check=True)
    for dev in ("eth0", "uplink0"):
        subprocess.run([*run, "ip", "link", "set", dev, "up"], check=True)


def _mac_lookup(moto_url: str) -> Callable[[str], str]:
    """eni id -> its MAC address, asked of moto directly (not through the hot-plug proxy)."""
    ec2 = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("ec2", endpoint_url=moto_url)

    def mac_of(eni_id: str) -> str:
        found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return str(found["NetworkInterfaces"][0]["MacAddress"])

    return mac_of


@contextlib.contextmanager
def local_node(
    real: bool | None = None,
    extra_env: Mapping[str, str] | None = None,
    instance_type: str = "m5.large",
    libcni_runner: str | None = None,
    keep_workdir_on_error: bool = False,
) -> Iterator[LocalNode]:
    """Bring a node up; tear everything down on exit, whatever happened.

    ``keep_workdir_on_error``: when the block raises, the work directory (``ipamd.log``,
    ``moto.log``, ``plugin.log``, the checkpoint) is kept for a look, and its path is in
    :attr:`LocalNode.workdir`; otherwise it is removed.

    ``libcni_runner``: a built ``tests/cni/runner``; CNI commands then go through libcni with
    the shipped conflist (run inside the node namespace), else the plugin is run directly.
    """
    possible, _reason = real_datapath_possible()
    real = possible if real is None else real and possible
    workdir = tempfile.mkdtemp(prefix="ipamcore-node-", dir="/tmp")
    procs: list[subprocess.Popen[bytes]] = []
    node: LocalNode | None = None
    failed = False
    hotplug: EniHotplug | None = None
    tag = f"{os.getpid()}-{secrets.token_hex(2)}"
    node_netns = f"ipc-node-{tag}"
    try:
        moto, moto_url = _start_moto(workdir)
        procs.append(moto)
        instance_id, primary_ip = _make_world(moto_url, instance_type)
        ec2_endpoint = metadata_source = moto_url
        if real:  # the hypervisor first: on a multi-card type metadata reads EC2 through it
            _make_node_netns(node_netns, primary_ip)
            hotplug = EniHotplug(
                moto_url, instance_id, _mac_lookup(moto_url), ip_link_runner(node_netns)
            ).start()
            ec2_endpoint = hotplug.url
            if len(card_limits(limits_for(instance_type))) > 1:  # moto drops the card
                metadata_source = hotplug.url
        md_port = free_port()
        md_log = open(os.path.join(workdir, "metadata.log"), "ab")  # noqa: SIM115
        metadata = subprocess.Popen(
            [sys.executable, "-m", "tests.rigs.metadata_server", "--ec2-endpoint", metadata_source,
             "--instance-id", instance_id, "--port", str(md_port)],
            stdout=md_log, stderr=md_log,
        )  # fmt: skip
        procs.append(metadata)
        metadata_url = f"http://127.0.0.1:{md_port}"
        wait_http(metadata_url + "/latest/meta-data/", 30, metadata)
        introspection_port = free_port()
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_EC2_ENDPOINT": ec2_endpoint,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata_url,
            "IPAMD_CLOUD": "aws",
            "IPAMD_DATAPATH": "linux" if real else "fake",
            **state_env(workdir),
            "INTROSPECTION_BIND_ADDRESS": f"127.0.0.1:{introspection_port}",
            "METRICS_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
            "IPAMD_LOG_FORMAT": "json",
            "WARM_ENI_TARGET": "0",
            "WARM_IP_TARGET": "3",
            "DISABLE_LEAKED_ENI_CLEANUP": "true",
        }
        if real:
            env["IPAMD_HOST_NETNS"] = f"/var/run/netns/{node_netns}"
        env.update(extra_env or {})
        node = LocalNode(
            workdir=workdir, real=real, node_netns=node_netns, moto_url=moto_url,
            metadata_url=metadata_url,
            introspection_url=f"http://127.0.0.1:{introspection_port}",
            instance_id=instance_id, env=env, hotplug=hotplug, procs=procs, tag=tag,
        )  # fmt: skip
        if libcni_runner is not None:
            node.cni = Libcni(
                libcni_runner, workdir, env["IPAMD_SOCKET"], env["IPAMD_PENDING_DEL_DIR"],
                node_netns if real else None,
            )  # fmt: skip
        node.start_daemon()
        yield node
    except BaseException:
        failed = True
        raise
    finally:
        if node is not None:
            for name in list(node.pods):
                with contextlib.suppress(Exception):
                    node.del_pod(name)
            if node.daemon is not None:
                with contextlib.suppress(Exception):
                    node.stop_daemon()
            for ns in node.netns_made:
                subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        if hotplug is not None:
            with contextlib.suppress(Exception):
                hotplug.stop()
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
        if real:
            subprocess.run(["ip", "netns", "del", node_netns], check=False, capture_output=True)
        if not (failed and keep_workdir_on_error):
            shutil.rmtree(workdir, ignore_errors=True)
