"""The ``vpc-ipamd`` process under Kubernetes: the fake API server as a process (TLS, bearer
token, KUBECONFIG), the daemon's fake cloud and datapath. It waits for the API server
(custom networking and ANNOTATE_POD_IP need it), places its new ENI in the subnet of the
node's ENIConfig, writes the pod-ips annotation after an ADD and clears it after a DEL, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from adapters import protocol as p
from ipamcore.kube import POD_IPS_ANNOTATION
from tests.adapters.harness import add_request, del_request
from tests.contract.kube_contract import ENICONFIGS, NODES, pods_path
from tests.reliability.test_daemon_process import Daemon, daemons, start, state  # noqa: F401
from tests.rigs.kube_rig import FakeApiServerProcess

NODE = "ip-10-0-0-9.us-west-2.compute.internal"
SUBNET = "subnet-00000000000000001"  # the fake cloud's first subnet (the daemon's own)


@pytest.fixture
def rig(tmp_path: Any) -> Iterator[FakeApiServerProcess]:
    with FakeApiServerProcess(tmp_path / "apiserver", bookmark_interval=0.5) as r:
        yield r


def eventually(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def annotation(rig: FakeApiServerProcess) -> str | None:
    _, pod = rig.api("GET", f"{pods_path('default')}/pod-1")
    return (pod["metadata"].get("annotations") or {}).get(POD_IPS_ANNOTATION)


def test_daemon_process_with_the_api_server(
    rig: FakeApiServerProcess,
    state: str,  # noqa: F811
    daemons: list[Daemon],  # noqa: F811
) -> None:
    node = {
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
        "status": {"capacity": {"pods": "17"}},
    }
    assert rig.api("POST", NODES, node)[0] == 201
    pod = {"metadata": {"name": "pod-1"}, "spec": {"nodeName": NODE}}
    assert rig.api("POST", pods_path("default"), pod)[0] == 201
    aws_node = {"metadata": {"name": "aws-node-xyz"}, "spec": {"nodeName": NODE}}
    assert rig.api("POST", pods_path("kube-system"), aws_node)[0] == 201
    d = start(
        daemons, state, MY_NODE_NAME=NODE, MY_POD_NAME="aws-node-xyz",
        KUBECONFIG=str(rig.kubeconfig),
        AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true", ANNOTATE_POD_IP="true",
        ENI_CONFIG_LABEL_DEF="topology.kubernetes.io/zone",
        INTROSPECTION_BIND_ADDRESS="127.0.0.1:0",
    )  # fmt: skip
    d.wait_for("waiting for the API server")
    missing = d.wait_for("eniconfig missing")  # the Node is there, its ENIConfig not yet
    assert missing["eniconfig"] == "us-west-2a"
    body = {"metadata": {"name": "us-west-2a"}, "spec": {"subnet": SUBNET}}
    assert rig.api("POST", ENICONFIGS, body)[0] == 201
    line = d.wait_for("eniconfig for new ENIs")
    assert line["subnet"] == SUBNET
    d.wait_for("serving")
    effect = d.wait_for("effect")
    assert effect.get("subnet_id") == SUBNET
    reply = eventually(lambda: (r := p.request(d.socket, add_request(1), timeout=10)).ok and r)
    ip = reply.result["ipv4"]
    eventually(lambda: annotation(rig) == ip)
    assert p.request(d.socket, del_request(1), timeout=10).ok
    eventually(lambda: annotation(rig) == "")
    port = d.wait_for("introspection serving")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/kube", timeout=5) as resp:
        kube = json.loads(resp.read())
    assert kube["synced"] and kube["eventsPosted"] == ["MissingEniConfig"]
    assert {k: v["lists"] for k, v in kube["kinds"].items()} == {
        "node": 1, "pod": 1, "eniconfig": 1,
    }  # fmt: skip
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    events = rig.api("GET", "/apis/events.k8s.io/v1/namespaces/kube-system/events")[1]
    mine = [e for e in events["items"] if e["regarding"]["name"] == "aws-node-xyz"]
    assert [e["reason"] for e in mine] == ["MissingEniConfig"]
    assert mine[0]["type"] == "Warning" and mine[0]["regarding"]["uid"]


def test_a_stop_while_waiting_for_the_api_server_exits_cleanly(
    rig: FakeApiServerProcess,
    state: str,  # noqa: F811
    daemons: list[Daemon],  # noqa: F811
) -> None:
    rig.admin("POST", "/outage", {})
    d = start(
        daemons, state, MY_NODE_NAME=NODE, KUBECONFIG=str(rig.kubeconfig),
        ANNOTATE_POD_IP="true", INTROSPECTION_BIND_ADDRESS="127.0.0.1:0",
    )  # fmt: skip
    d.wait_for("waiting for the API server")
    assert d.wait_for("kube_watch_failed")["component"] == "kube"  # the daemon's log
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    assert not any(line.get("event") == "serving" for line in d.lines)
