"""Time from the aws-node container's start to /etc/cni/net.d/10-aws.conflist on the host, on
a node with 0 pods and with 100 pods (restored from the checkpoint), against moto_server.

What runs: moto_server (with EC2's address rules) and the project's IMDSv2 server on this
machine's loopback, one c5.4xlarge instance per node; the aws-node image (``./dev image``)
run by podman as deploy/aws-k8s-cni.yaml's DaemonSet runs it (its command, the entrypoint
aws-vpc-cni; its capabilities, NET_ADMIN, NET_RAW and SYS_ADMIN only; its hostPath volumes
under a temporary root; its environment, then this benchmark's: the endpoints, no Kubernetes,
host network and the fake datapath so the machine's own network is left alone). The clock
starts before ``podman run`` and stops when the conflist appears on the "host", so the figure
includes podman and runc starting the container, Python starting, ipamd's start (EC2
describe calls, checkpoint) and the socket answering.

0 pods: a new instance and empty state each run. 100 pods: the node is filled with 100 pods
through ipamd's socket, stopped, then restarted (checkpoint, same instance) for each run; the
restored count is checked.

The last line is one JSON object::

    {"conflist_s_0_pods": .., "conflist_s_100_pods": .., "runs": N, "restored_pods": 100, ...}
    or {"skipped": "<why>"}

Usage: python benchmarks/startup.py [--runs N] [--pods N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adapters import protocol as p  # noqa: E402
from deploy import image  # noqa: E402
from tests.rigs.aws_node import daemonset, podman_args  # noqa: E402

INSTANCE_TYPE = "c5.4xlarge"


class Node:
    """One node's host directories and its aws-node container's settings."""

    def __init__(self, root: Path, moto_url: str, imds_url: str) -> None:
        self.root = root
        self.dirs = {d: root / p for d, p in (("bin", "opt/cni/bin"), ("net.d", "etc/cni/net.d"),
                                              ("run", "var/run/aws-node"),
                                              ("log", "var/log/aws-routed-eni"))}  # fmt: skip
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.env = {
            "AWS_EC2_ENDPOINT": moto_url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-west-2", "IPAMD_DATAPATH": "fake",
            "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
            "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO", "IPAMD_LOG_FORMAT": "json",
        }  # fmt: skip

    @property
    def conflist(self) -> Path:
        return self.dirs["net.d"] / "10-aws.conflist"

    def run_args(self, name: str) -> list[str]:
        """The aws-node container of deploy/aws-k8s-cni.yaml's DaemonSet (command, capabilities,
        hostPath volumes under this node's root, environment), on the host network, with
        this benchmark's environment over the manifest's."""
        pod = daemonset()["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        node = next(c for c in pod["containers"] if c["name"] == "aws-node")
        fields = {"spec.nodeName": "", "metadata.name": ""}  # no Kubernetes here
        args = podman_args(node, volumes, self.root, fields, self.env)
        return ["run", "-d", "--name", name, "--network", "host", *args, image.DEFAULT_TAG,
                *node["command"]]  # fmt: skip


def start_timed(store: image.Store, node: Node, name: str, timeout: float = 120) -> float:
    node.conflist.unlink(missing_ok=True)
    began = time.monotonic()
    store.podman(*node.run_args(name))
    while not node.conflist.exists():
        if time.monotonic() - began > timeout:
            logs = store.podman("logs", name, check=False).stderr
            raise SystemExit(f"no conflist after {timeout} s:\n{logs[-3000:]}")
        time.sleep(0.005)
    return time.monotonic() - began


def stop(store: image.Store, name: str) -> None:
    store.podman("stop", "-t", "20", name, check=False)
    store.podman("rm", "-f", name, check=False)


def fill(sock: str, pods: int) -> None:
    for n in range(pods):
        req = p.Request(p.OP_ADD, network_name="aws-cni", container_id=f"bench{n:04d}",
                        if_name="eth0", netns=f"/var/run/netns/bench-{n}",
                        pod_namespace="default", pod_name=f"pod-{n}")  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                if p.request(sock, req, timeout=30).ok:
                    break
            except p.ProtocolError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"pod-{n}: no address within 120 s")
            time.sleep(0.2)


def assigned(sock: str) -> int:
    result = p.request(sock, p.Request(p.OP_STATUS), timeout=10).result or {}
    return int(result.get("assigned", -1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=100)
    opts = ap.parse_args()
    reason = image.unavailable_reason()
    store = image.Store(image.default_cache() / "store")
    if not reason:
        store.ensure()
        if not store.has_image(image.DEFAULT_TAG):
            reason = f"no {image.DEFAULT_TAG} image: run ./dev image"
    if reason:
        print(f"skipped: {reason}")
        print(json.dumps({"skipped": reason}))
        return 0

    from tests.rigs.localnode import _make_world, _start_moto
    from tests.rigs.metadata_server import MetadataServer

    work = Path(tempfile.mkdtemp(prefix="startup-bench-", dir="/tmp"))
    moto, moto_url = _start_moto(str(work))
    servers: list[MetadataServer] = []
    tag = os.getpid()
    empty: list[float] = []
    full: list[float] = []
    restored = 0
    try:
        def new_node(label: str) -> Node:
            instance_id, _ = _make_world(moto_url, INSTANCE_TYPE)
            server = MetadataServer.for_endpoint(moto_url, instance_id)
            servers.append(server)
            return Node(work / label, moto_url, server.start())

        for run in range(opts.runs):
            node = new_node(f"empty-{run}")
            name = f"startup-{tag}-e{run}"
            try:
                empty.append(start_timed(store, node, name))
            finally:
                stop(store, name)
            print(f"0 pods, run {run + 1}: conflist after {empty[-1]:.2f} s", flush=True)

        node = new_node("full")
        name = f"startup-{tag}-fill"
        try:
            start_timed(store, node, name)
            began = time.monotonic()
            fill(str(node.dirs["run"] / "ipam.sock"), opts.pods)
            print(f"{opts.pods} pods added in {time.monotonic() - began:.1f} s", flush=True)
        finally:
            stop(store, name)
        for run in range(opts.runs):
            name = f"startup-{tag}-f{run}"
            try:
                full.append(start_timed(store, node, name))
                restored = assigned(str(node.dirs["run"] / "ipam.sock"))
            finally:
                stop(store, name)
            print(f"{opts.pods} pods, run {run + 1}: conflist after {full[-1]:.2f} s "
                  f"({restored} allocations restored)", flush=True)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)
    doc: dict[str, Any] = {
        "conflist_s_0_pods": round(statistics.median(empty), 3),
        "conflist_s_100_pods": round(statistics.median(full), 3),
        "pods": opts.pods,
        "restored_pods": restored,
        "runs": opts.runs,
        "all_s_0_pods": [round(x, 3) for x in empty],
        "all_s_100_pods": [round(x, 3) for x in full],
        "instance_type": INSTANCE_TYPE,
    }
    print(json.dumps(doc))
    return 0 if restored == opts.pods else 1


if __name__ == "__main__":
    sys.exit(main())
