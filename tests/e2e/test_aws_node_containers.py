"""Two nodes whose aws-node pod is the project's image run by podman, on one machine (issue 11
section 4 and the operator's commands of section 5).

The fake API server (a real HTTPS process), one moto_server (EC2), and per node: a network
namespace for its host network, its instance metadata, a temporary root for its filesystem,
and the DaemonSet's two containers made from ``deploy/aws-k8s-cni.yaml`` (see
:mod:`tests.rigs.aws_node`): ``aws-vpc-cni-init`` (privileged, ``--rm``), then ``aws-node``
(the chart's capabilities only) with ``--network ns:/run/netns/<node>``. Pods are ADDed and
DELeted by the libcni runner with the plugin and conflist the containers put in the
temporary root. Custom networking by zone (``ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/
zone``) and ``ANNOTATE_POD_IP`` are on, as the issue's scenario asks.

Shown, in order:

1. init installs the plugin (self-contained) and upstream's plugins in the node's
   ``/opt/cni/bin`` and sets ``rp_filter=2`` on the interface with the primary ENI's MAC;
2. with the API server away, ipamd waits for it (custom networking needs it): no conflist,
   the socket does not answer; once it is back, the conflist appears, never before ipamd
   answers;
3. node-b has no ENIConfig for its zone yet: a ``MissingEniConfig`` Event on its aws-node pod
   and no ENI at all; once created, each node's new ENIs are in its zone's subnet;
4. pods get addresses of their zone's subnet and the ``vpc.amazonaws.com/pod-ips``
   annotation, and reach their node and each other (ping); the operator's commands answer
   in the container (``podman exec`` as ``kubectl exec``; ``podman logs`` of ``aws-node``
   and ``aws-cni`` as ``kubectl logs -c``);
5. the API server gone for a full minute: warm-pool ADDs and DELs go on, running pods'
   addresses and routes stay as they were and traffic flows; on its return the watches
   resume with no LIST and a bounded number of WATCH requests, and the annotations missed
   are written;
6. ``podman stop`` (kubelet's SIGTERM) ends the container with 0 and leaves the conflist.

Root, podman, runc and mmdebstrap (``./dev image``) and the libcni runner (go) are needed;
skipped with the reason otherwise. About 2 minutes besides the minute of outage.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from adapters.ipamctl.health import check as health_check
from deploy import image
from ipamcore.kube import POD_IPS_ANNOTATION
from tests.contract.kube_contract import ENICONFIGS, NODES, pods_path
from tests.rigs.aws_node import (
    ContainerNode,
    HostCni,
    cleanup_node,
    forward_ports,
    make_node_netns,
    service_account,
    wait_for,
)
from tests.rigs.eni_hotplug import EniHotplug, ip_link_runner
from tests.rigs.kube_rig import FakeApiServerProcess
from tests.rigs.localnode import REGION, _mac_lookup, _start_moto
from tests.rigs.metadata_server import MetadataServer

pytestmark = [pytest.mark.root, pytest.mark.image]

ZONE_LABEL = "topology.kubernetes.io/zone"
EVENTS = "/apis/events.k8s.io/v1/namespaces/kube-system/events"
# node -> (zone, the node's own subnet, its ENIConfig's subnet for pods)
NODES_ZONES = {
    "node-a": ("us-west-2a", "10.0.0.0/20", "10.0.32.0/20"),
    "node-b": ("us-west-2b", "10.0.16.0/20", "10.0.48.0/20"),
}
OUTAGE_S = 60.0
WATCHED = (NODES, "/api/v1/pods", ENICONFIGS)


@pytest.fixture(scope="session")
def built(aws_node_image: tuple[image.Store, str]) -> tuple[image.Store, str]:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux (unshare) missing")
    return aws_node_image


def ec2_client(url: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("ec2", endpoint_url=url)


def make_world(ec2: Any) -> dict[str, dict[str, str]]:
    """One VPC; per node a subnet in its zone, an instance there, and the pod subnet its
    ENIConfig will name. Returns node -> ids."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sg = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    out = {}
    for name, (zone, node_cidr, pod_cidr) in NODES_ZONES.items():
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=node_cidr,
                                   AvailabilityZone=zone)["Subnet"]["SubnetId"]  # fmt: skip
        pods = ec2.create_subnet(VpcId=vpc, CidrBlock=pod_cidr,
                                 AvailabilityZone=zone)["Subnet"]["SubnetId"]  # fmt: skip
        inst = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                                 InstanceType="m5.large", SubnetId=subnet,
                                 SecurityGroupIds=[sg])["Instances"][0]  # fmt: skip
        [eni] = inst["NetworkInterfaces"]
        out[name] = {"instance": inst["InstanceId"], "ip": inst["PrivateIpAddress"],
                     "mac": eni["MacAddress"], "primary_eni": eni["NetworkInterfaceId"],
                     "pod_subnet": pods, "sg": sg}  # fmt: skip
    return out


def enis_of(ec2: Any, instance: str) -> dict[str, str]:
    """ENI id -> subnet id, of every ENI attached to ``instance``."""
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance]}]
    )["NetworkInterfaces"]
    return {e["NetworkInterfaceId"]: e["SubnetId"] for e in found}


def annotation(rig: FakeApiServerProcess, pod: str) -> str | None:
    _, obj = rig.api("GET", f"{pods_path('demo')}/{pod}")
    return (obj["metadata"].get("annotations") or {}).get(POD_IPS_ANNOTATION)


def count(rig: FakeApiServerProcess, watch: bool) -> int:
    return sum(
        1 for r in rig.requests()
        if r["method"] == "GET" and r["watch"] == watch and r["path"] in WATCHED
    )  # fmt: skip


def events_for(rig: FakeApiServerProcess, reason: str) -> set[str]:
    _, doc = rig.api("GET", EVENTS)
    return {e["regarding"]["name"] for e in doc["items"] if e["reason"] == reason}


def seed(rig: FakeApiServerProcess) -> None:
    for name, (zone, *_) in NODES_ZONES.items():
        node = {"metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
                "status": {"capacity": {"pods": "20"}}}  # fmt: skip
        assert rig.api("POST", NODES, node)[0] == 201
        aws_node = {"metadata": {"name": f"aws-node-{name}", "labels": {"k8s-app": "aws-node"}},
                    "spec": {"nodeName": name}}  # fmt: skip
        assert rig.api("POST", pods_path("kube-system"), aws_node)[0] == 201
        for k in range(4):
            pod = {"metadata": {"name": f"{name}-web-{k}"}, "spec": {"nodeName": name}}
            assert rig.api("POST", pods_path("demo"), pod)[0] == 201


def eniconfig(rig: FakeApiServerProcess, zone: str, subnet: str, sg: str) -> None:
    body = {"metadata": {"name": zone}, "spec": {"subnet": subnet, "securityGroups": [sg]}}
    assert rig.api("POST", ENICONFIGS, body)[0] == 201


def wait_conflist_after_health(node: ContainerNode, timeout: float) -> None:
    """Polls the conflist and, right after each look, ipamd's socket: the conflist seen while
    ipamd does not answer would be a conflist written too early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        present = node.conflist.exists()
        healthy, why, _ = health_check(str(node.socket), timeout=2.0)
        assert not (present and not healthy), f"{node.name}: conflist before ipamd: {why}"
        if present:
            return
        assert node.running(), node.logs()[-4000:]
        time.sleep(0.1)
    raise AssertionError(f"{node.name}: no conflist in {timeout:.0f} s\n{node.logs()[-4000:]}")


def test_two_aws_node_containers(built: tuple[image.Store, str], libcni_runner: Path) -> None:
    store, tag = built
    work = Path(tempfile.mkdtemp(prefix="e2e-aws-node-", dir="/tmp"))
    nodes: dict[str, ContainerNode] = {}
    moto: subprocess.Popen[bytes] | None = None
    failed = True
    try:
        with FakeApiServerProcess(work / "apiserver", bookmark_interval=1.0) as rig:
            moto, moto_url = _start_moto(str(work))
            ec2 = ec2_client(moto_url)
            world = make_world(ec2)
            seed(rig)
            sa = service_account(work / "serviceaccount", rig.token, rig.ca_path)
            for name, ids in world.items():
                node = nodes[name] = ContainerNode(
                    name=name, zone=NODES_ZONES[name][0], instance_id=ids["instance"],
                    primary_ip=ids["ip"], primary_mac=ids["mac"], root=work / name / "root",
                    netns=f"e2e-{os.getpid()}-{name}", store=store, tag=tag,
                )  # fmt: skip
                make_node_netns(node.netns, node.primary_ip, node.primary_mac)
                node.hotplug = EniHotplug(moto_url, node.instance_id, _mac_lookup(moto_url),
                                          ip_link_runner(node.netns)).start()  # fmt: skip
                node.metadata = MetadataServer.for_endpoint(moto_url, node.instance_id)
                node.metadata.start()
                node.forwarder = forward_ports(node.netns, [
                    rig.port, int(node.hotplug.url.rsplit(":", 1)[1]),
                    int(node.metadata.url.rsplit(":", 1)[1])])  # fmt: skip
                node.cni = HostCni(libcni_runner, node.root, node.netns)
            run_scenario(rig, ec2, world, nodes, sa)
            failed = False
    finally:
        for node in nodes.values():
            cleanup_node(node, show_logs=failed)
        if moto is not None:
            moto.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def node_env(node: ContainerNode, rig: FakeApiServerProcess) -> dict[str, str]:
    assert node.hotplug is not None and node.metadata is not None
    return {
        # the cloud and the cluster, as IRSA and the kubernetes Service would give them
        "AWS_EC2_ENDPOINT": node.hotplug.url, "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": node.metadata.url,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(rig.port),
        # the features of the scenario (chart values eniConfig / env)
        "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "ENI_CONFIG_LABEL_DEF": ZONE_LABEL,
        "ANNOTATE_POD_IP": "true", "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO",
        "IPAMD_LOG_FORMAT": "json",
    }  # fmt: skip


def run_scenario(
    rig: FakeApiServerProcess, ec2: Any, world: dict[str, dict[str, str]],
    nodes: dict[str, ContainerNode], sa: Path,
) -> None:  # fmt: skip
    a, b = nodes["node-a"], nodes["node-b"]
    zone_a, zone_b = a.zone, b.zone
    eniconfig(rig, zone_a, world["node-a"]["pod_subnet"], world["node-a"]["sg"])

    # 1. init, as the DaemonSet's init container
    for node in nodes.values():
        assert node.metadata is not None
        done = node.run_init({"AWS_EC2_METADATA_SERVICE_ENDPOINT": node.metadata.url})
        assert done.returncode == 0, done.stderr
        assert "CNI init container done" in done.stderr
        names = sorted(p.name for p in node.bin_dir.iterdir())
        assert names == ["bandwidth", "host-local", "loopback", "portmap", "vpc-cni",
                         "vpc-cni.d"]  # fmt: skip
        assert os.readlink(node.bin_dir / "vpc-cni") == "vpc-cni.d/bin/vpc-cni"
        assert node.in_ns("cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter") == "2"
        assert not node.conflist.exists()

    # 2. the API server away at start: ipamd waits for it, so no conflist
    rig.admin("POST", "/outage", {})
    for node in nodes.values():
        node.start_main(node_env(node, rig), sa)
        node.start_aws_cni()
    time.sleep(5)
    for node in nodes.values():
        assert node.running(), node.logs()[-4000:]
        assert not node.conflist.exists()
        assert not health_check(str(node.socket), timeout=1.0)[0]
    rig.admin("POST", "/restore")
    for node in nodes.values():
        wait_conflist_after_health(node, 90)
        logs = node.logs()
        assert logs.index("ipamd answers on") < logs.index("wrote /host/etc/cni/net.d")
        conf = json.loads(node.conflist.read_text())
        assert [p["type"] for p in conf["plugins"]][:2] == ["vpc-cni", "portmap"]

    # 3. ENIConfig per zone: node-b's is missing (an Event, no ENI), then created
    wait_for(lambda: "aws-node-node-b" in events_for(rig, "MissingEniConfig"), 60,
             "MissingEniConfig on aws-node-node-b")  # fmt: skip
    assert "aws-node-node-a" not in events_for(rig, "MissingEniConfig")
    assert "eniconfig_missing" not in a.logs() and "eniconfig_missing" in b.logs()
    pod_subnet = {n: world[n]["pod_subnet"] for n in nodes}
    wait_for(lambda: len(enis_of(ec2, a.instance_id)) > 1, 60, "node-a's first ENI")
    assert list(enis_of(ec2, b.instance_id)) == [world["node-b"]["primary_eni"]]
    eniconfig(rig, zone_b, pod_subnet["node-b"], world["node-b"]["sg"])
    wait_for(lambda: len(enis_of(ec2, b.instance_id)) > 1, 60, "node-b's first ENI")
    for name, node in nodes.items():
        primary = world[name]["primary_eni"]
        new = {e: s for e, s in enis_of(ec2, node.instance_id).items() if e != primary}
        assert new and set(new.values()) == {pod_subnet[name]}, (name, new)

    # 4. pods through the runtime: addresses of the zone's subnet, annotations, operator view
    for name, node in nodes.items():
        cidr = ipaddress.ip_network(NODES_ZONES[name][2])
        for k in range(2):
            pod = wait_for(lambda node=node, k=k: node.add_pod(f"{node.name}-web-{k}"), 60,
                           f"ADD on {name}", every=1.0)  # fmt: skip
            assert ipaddress.ip_address(pod.ip) in cidr
            assert pod.ip in node.pod_view(pod)[0]
    for node in nodes.values():
        for pod in node.pods.values():
            wait_for(lambda pod=pod: annotation(rig, pod.name) == pod.ip, 30, pod.name)
        check_operator_view(node)
    check_traffic(nodes)
    nodes["node-a"].del_pod("node-a-web-1")
    wait_for(lambda: annotation(rig, "node-a-web-1") == "", 30, "annotation cleared")

    # 5. the API server gone for a minute
    wait_for(lambda: rig.admin("GET", "/watches")["open"] == 6, 30, "6 watches")
    lists_before = count(rig, watch=False)
    assert lists_before == 6, "one LIST per watched kind and node, at start"
    views = {p.name: n.pod_view(p) for n in nodes.values() for p in n.pods.values()}
    rig.admin("POST", "/requests/clear")
    rig.admin("POST", "/outage", {})
    began = time.monotonic()
    time.sleep(2)
    warm = b.add_pod("node-b-web-2")  # from the warm pool
    a.del_pod("node-a-web-0")
    b.del_pod("node-b-web-0")
    again = a.add_pod("node-a-web-3")
    for node in nodes.values():
        assert health_check(str(node.socket), timeout=5.0)[0]
    assert warm.ip in b.exec("ipamctl", "pods")
    check_traffic(nodes)  # the pods made during the outage too
    while time.monotonic() - began < OUTAGE_S:
        for node in nodes.values():
            for pod in node.pods.values():
                if pod.name in views:
                    assert node.pod_view(pod) == views[pod.name], pod.name
            assert node.running()
        time.sleep(5)
    assert rig.requests() == [], "the API server was away: no request can have reached it"
    rig.admin("POST", "/restore")
    back = time.monotonic()
    wait_for(lambda: rig.admin("GET", "/watches")["open"] == 6, 60, "watches back")
    resumed_s = time.monotonic() - back
    wait_for(lambda: annotation(rig, warm.name) == warm.ip, 60, "annotation set late")
    wait_for(lambda: annotation(rig, again.name) == again.ip, 60, "annotation set late")
    wait_for(lambda: annotation(rig, "node-a-web-0") == "", 60, "annotation cleared late")
    wait_for(lambda: annotation(rig, "node-b-web-0") == "", 60, "annotation cleared late")
    assert count(rig, watch=False) == 0, "no relist after the outage"
    watches = count(rig, watch=True)
    assert 6 <= watches <= 12, f"{watches} WATCH requests to resume 6 watches"
    assert resumed_s <= 45, "the backoff is at most 30 s"
    print(f"watches resumed {resumed_s:.1f} s after the API server came back, "
          f"{watches} WATCH requests, 0 LIST")  # fmt: skip
    for node in nodes.values():
        assert node.in_ns("cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter") == "2"
    check_traffic(nodes)

    # 6. kubelet stops the pod: exit 0, the conflist stays
    for node in nodes.values():
        node.store.podman("stop", "-t", "20", node.main)
        code = node.store.podman("inspect", "-f", "{{.State.ExitCode}}", node.main).stdout
        assert code.strip() == "0", node.logs()[-3000:]
        assert node.conflist.exists()
        state = json.loads((node.root / "var/run/aws-node/ipam.json").read_text())
        assert {a["ipv4"] for a in state["allocations"]} == {p.ip for p in node.pods.values()}


def check_traffic(nodes: dict[str, ContainerNode]) -> None:
    """Every pod reaches its node's address and the node's other pods (ping)."""
    for node in nodes.values():
        pods = list(node.pods.values())
        for pod in pods:
            assert node.ping(pod, node.primary_ip), f"{pod.name} -> {node.name}"
            for other in pods:
                if other is not pod:
                    assert node.ping(pod, other.ip), f"{pod.name} -> {other.name}"


def check_operator_view(node: ContainerNode) -> None:
    """The brief's commands, as ``kubectl exec`` runs them in the aws-node container."""
    ips = {p.ip for p in node.pods.values()}
    # ipam.json is upstream's document; the journal beside it is folded into it about a
    # second after a change (and when it grows, and at every stop), so `cat` shows the pods
    def on_file() -> set[str]:
        state = json.loads(node.exec("cat", "/var/run/aws-node/ipam.json"))
        assert state["version"] == "vpc-cni-ipam/1"
        return {a["ipv4"] for a in state["allocations"]}

    wait_for(lambda: on_file() == ips, 5, f"cat ipam.json on {node.name} shows its pods")
    current = json.loads(node.exec("ipamctl", "--json", "checkpoint"))
    assert ips <= {a["ipv4"] for a in current["allocations"]}, current
    stats = json.loads(node.exec("wget", "-q", "-O-", "127.0.0.1:61679/stats"))
    assert stats["assigned"] >= len(ips), stats
    assert stats["max_pods"] == 20, "the Node's capacity (kubectl get nodes), not 29"
    pods = node.exec("ipamctl", "pods")
    assert all(ip in pods for ip in ips), pods
    assert "eni-" in node.exec("ipamctl", "enis")
    assert node.exec("ipamctl", "health", "--ready").startswith("ok")
    log = (node.root / "var/log/aws-routed-eni/plugin.log").read_text()
    assert any(p in log for p in node.pods), "the plugin logs where the conflist says"
    # kubectl logs -c aws-node (ipamd's) and -c aws-cni (the plugin's)
    assert '"event": "ready"' in node.logs()
    wait_for(lambda: all(p in node.logs(f"{node.netns}-aws-cni") for p in node.pods), 15,
             "the plugin's log in the aws-cni container")  # fmt: skip
