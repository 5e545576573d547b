"""End to end on one machine (issue 11 section 4, without containers): the fake API server
process, and two nodes, each with its own moto_server, metadata server, node network
namespace and vpc-ipamd process (EC2 backend, pyroute2 datapath), pods ADDed through the
libcni runner. The daemons run directly in the node namespaces' host side, not as aws-node
containers of the project's image.

Shown: each node's new ENI goes to the subnet of its zone's ENIConfig (created after the
daemon started: until then it makes no ENI and posts a MissingEniConfig Event); pods get
addresses of that subnet and the pod-ips annotation, cleared by DEL; the API server gone
for a while (15 s of real time here) disturbs no running pod, DEL or warm-pool ADD, and on
its return the watches resume with no LIST (counted on the fake).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from ipamcore.kube import POD_IPS_ANNOTATION
from tests.contract.kube_contract import ENICONFIGS, NODES, pods_path
from tests.rigs.kube_rig import FakeApiServerProcess
from tests.rigs.localnode import REGION, ZONE, LocalNode, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]

ZONE_LABEL = "topology.kubernetes.io/zone"
NODES_ZONES = {"node-a": ("us-west-2a", "10.0.32.0/20"), "node-b": ("us-west-2b", "10.0.48.0/20")}
EVENTS = "/apis/events.k8s.io/v1/namespaces/kube-system/events"


def eventually(check: Any, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(0.2)
    raise AssertionError(f"not reached: {what}")


def ec2(node: LocalNode) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("ec2", endpoint_url=node.moto_url)


def enis_in(node: LocalNode, subnet: str) -> list[str]:
    found = ec2(node).describe_network_interfaces(
        Filters=[{"Name": "subnet-id", "Values": [subnet]}]
    )["NetworkInterfaces"]
    return [
        e["NetworkInterfaceId"] for e in found
        if e.get("Attachment", {}).get("InstanceId") == node.instance_id
    ]  # fmt: skip


def annotation(rig: FakeApiServerProcess, pod: str) -> str | None:
    _, obj = rig.api("GET", f"{pods_path('demo')}/{pod}")
    return (obj["metadata"].get("annotations") or {}).get(POD_IPS_ANNOTATION)


def lists(rig: FakeApiServerProcess) -> int:
    return sum(
        1 for r in rig.requests()
        if r["method"] == "GET" and not r["watch"]
        and r["path"] in (NODES, "/api/v1/pods", ENICONFIGS)
    )  # fmt: skip


def kube_stats(node: LocalNode) -> dict[str, Any]:
    with urllib.request.urlopen(node.introspection_url + "/v1/kube", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def test_two_nodes_eniconfig_per_zone_annotations_and_an_outage(
    libcni_runner: Path, tmp_path: Path
) -> None:
    with FakeApiServerProcess(tmp_path / "apiserver", bookmark_interval=1.0) as rig, \
            contextlib.ExitStack() as stack:  # fmt: skip
        for name, (zone, _) in NODES_ZONES.items():
            node = {"metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
                    "status": {"capacity": {"pods": "29"}}}  # fmt: skip
            assert rig.api("POST", NODES, node)[0] == 201
            aws_node = {"metadata": {"name": f"aws-node-{name}"}, "spec": {"nodeName": name}}
            assert rig.api("POST", pods_path("kube-system"), aws_node)[0] == 201
            for k in range(4):
                pod = {"metadata": {"name": f"{name}-web-{k}"}, "spec": {"nodeName": name}}
                assert rig.api("POST", pods_path("demo"), pod)[0] == 201
        nodes: dict[str, LocalNode] = {}
        for name in NODES_ZONES:
            env = {
                "MY_NODE_NAME": name, "MY_POD_NAME": f"aws-node-{name}",
                "KUBECONFIG": str(rig.kubeconfig), "ENI_CONFIG_LABEL_DEF": ZONE_LABEL,
                "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "ANNOTATE_POD_IP": "true",
                "WARM_IP_TARGET": "3", "IPAMD_POLICY_INTERVAL_SECONDS": "1",
            }  # fmt: skip
            nodes[name] = stack.enter_context(
                local_node(real=True, libcni_runner=str(libcni_runner), extra_env=env)
            )
        # No ENIConfig yet: no ENI, an Event per node.
        for name in NODES_ZONES:
            eventually(
                lambda name=name: "MissingEniConfig" in kube_stats(nodes[name])["eventsPosted"],
                what=f"{name} MissingEniConfig",
            )
        _, events = rig.api("GET", EVENTS)
        regarding = {e["regarding"]["name"] for e in events["items"]}
        assert regarding == {"aws-node-node-a", "aws-node-node-b"}
        subnets = {}
        for name, (zone, cidr) in NODES_ZONES.items():
            client = ec2(nodes[name])
            vpcs = client.describe_vpcs()["Vpcs"]
            [vpc] = [v["VpcId"] for v in vpcs if v["CidrBlock"] == "10.0.0.0/16"]
            subnets[name] = client.create_subnet(
                VpcId=vpc, CidrBlock=cidr, AvailabilityZone=ZONE
            )["Subnet"]["SubnetId"]  # fmt: skip
            body = {"metadata": {"name": zone}, "spec": {"subnet": subnets[name]}}
            assert rig.api("POST", ENICONFIGS, body)[0] == 201
        for name, node in nodes.items():
            eventually(lambda node=node, name=name: enis_in(node, subnets[name]), what=name)
        # Pods: addresses of the zone's subnet, annotated.
        ips = {}
        for name, node in nodes.items():
            cidr = ipaddress.ip_network(NODES_ZONES[name][1])
            for k in range(2):
                pod = node.add_pod(f"{name}-web-{k}")
                ip = pod.result["ips"][0]["address"].split("/")[0]
                assert ipaddress.ip_address(ip) in cidr
                ips[pod.name] = ip
        for pod, ip in ips.items():
            eventually(lambda pod=pod, ip=ip: annotation(rig, pod) == ip, what=pod)
        nodes["node-a"].del_pod("node-a-web-0")
        eventually(lambda: annotation(rig, "node-a-web-0") == "", what="cleared")
        eventually(lambda: rig.admin("GET", "/watches")["open"] == 6, what="6 watches")
        before = lists(rig)
        assert before == 6  # 3 kinds x 2 nodes, at start
        # The API server goes away: pods, DELs and warm-pool ADDs go on.
        rig.admin("POST", "/outage", {})
        time.sleep(2)
        pod = nodes["node-b"].add_pod("node-b-web-2")  # warm pool
        nodes["node-b"].del_pod("node-b-web-0")
        for node in nodes.values():
            assert node.ipamctl("stats")
        time.sleep(13)
        rig.admin("POST", "/restore")
        eventually(lambda: rig.admin("GET", "/watches")["open"] == 6, timeout=90, what="back")
        assert lists(rig) == before  # no relist storm
        ip = pod.result["ips"][0]["address"].split("/")[0]
        eventually(lambda: annotation(rig, "node-b-web-2") == ip, timeout=60, what="late set")
        eventually(lambda: annotation(rig, "node-b-web-0") == "", timeout=60, what="late clear")
