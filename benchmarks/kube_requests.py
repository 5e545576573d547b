"""API requests per node per minute through the Kubernetes backend, against the fake API server.

Starts the fake API server process, ``--nodes`` KubeWatchers (each one node: its Node, its
pods, the ENIConfigs, with custom networking and ANNOTATE_POD_IP), lets them sync, then
counts every request the server receives during ``--seconds`` of steady state (no change in
the cluster; bookmarks every second), and then during a churn phase (``--pods`` pods per
node added, annotated on ADD, cleared on DEL, deleted). Watches end at the server after
``--watch-timeout`` seconds and are opened again from their resourceVersion; the figure for
the defaults is given too (300 to 599 s by node: 3 kinds x 60 / timeout = 0.3 to 0.6 watch
requests a node a minute).

Goal (issue #11): in steady state, no request but the watches. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.kubernetes.client import LightkubeApi, cluster_config  # noqa: E402
from backends.kubernetes.informer import Backoff  # noqa: E402
from backends.kubernetes.settings import KubeSettings  # noqa: E402
from backends.kubernetes.watcher import KubeWatcher  # noqa: E402
from tests.contract.kube_contract import SystemClock  # noqa: E402
from tests.rigs.kube_rig import FakeApiServerProcess  # noqa: E402

LISTS = ("/api/v1/nodes", "/api/v1/pods", "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs")


def classify(requests: list[dict]) -> dict[str, int]:
    out = {"watch": 0, "list": 0, "get": 0, "patch": 0, "post": 0, "other": 0}
    for r in requests:
        if r["method"] == "GET" and r["watch"]:
            out["watch"] += 1
        elif r["method"] == "GET" and r["path"] in LISTS:
            out["list"] += 1
        elif r["method"] == "GET":
            out["get"] += 1
        elif r["method"] == "PATCH":
            out["patch"] += 1
        elif r["method"] == "POST":
            out["post"] += 1
        else:
            out["other"] += 1
    return out


async def run(args: argparse.Namespace, rig: FakeApiServerProcess) -> dict:
    names = [f"ip-10-0-{i // 250}-{i % 250 + 1}.ec2.internal" for i in range(args.nodes)]
    rig.api("POST", "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs",
            {"metadata": {"name": "us-west-2a"}, "spec": {"subnet": "subnet-a"}})  # fmt: skip
    for name in names:
        rig.api("POST", "/api/v1/nodes", {
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
            "status": {"capacity": {"pods": "29"}},
        })  # fmt: skip
        for j in range(5):
            pod = {"metadata": {"name": f"{name}-pod-{j}"}, "spec": {"nodeName": name}}
            rig.api("POST", "/api/v1/namespaces/default/pods", pod)
    rig.admin("POST", "/requests/clear")  # the seeding is not the backend's
    watchers, apis = [], []
    for name in names:
        settings = KubeSettings.from_env({
            "MY_NODE_NAME": name, "KUBECONFIG": str(rig.kubeconfig),
            "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "ANNOTATE_POD_IP": "true",
            "ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone",
        })  # fmt: skip
        api = LightkubeApi(cluster_config(settings))
        w = KubeWatcher(api, settings, SystemClock(), Backoff(0.05, 1.0), args.watch_timeout)
        await w.start()
        watchers.append(w)
        apis.append(api)
    for w in watchers:
        assert await w.wait_synced(30.0)
    await asyncio.sleep(0.5)
    sync = classify(rig.requests())
    rig.admin("POST", "/requests/clear")

    await asyncio.sleep(args.seconds)
    steady = classify(rig.requests())
    rig.admin("POST", "/requests/clear")

    for name, w in zip(names, watchers, strict=True):
        for j in range(args.pods):
            pod = f"{name}-churn-{j}"
            rig.api("POST", "/api/v1/namespaces/default/pods",
                    {"metadata": {"name": pod}, "spec": {"nodeName": name}})  # fmt: skip
            while w.cache.pod("default", pod) is None:
                await asyncio.sleep(0.01)
            assert await w.annotate_pod_ips("default", pod, f"10.0.{j}.9")
            while w.cache.pod("default", pod).annotations.get("vpc.amazonaws.com/pod-ips") != f"10.0.{j}.9":  # type: ignore[union-attr]  # noqa: E501
                await asyncio.sleep(0.01)
            assert await w.annotate_pod_ips("default", pod, "", f"10.0.{j}.9")
    # the pods' own creation (POST) is the test's; watch renewals are counted above
    churn = classify([r for r in rig.requests() if r["method"] != "POST" and not r["watch"]])

    for w in watchers:
        await w.stop()
    for api in apis:
        await api.aclose()
    per_min = 60.0 / args.seconds / args.nodes
    non_watch = sum(v for k, v in steady.items() if k != "watch")
    return {
        "nodes": args.nodes,
        "steady_seconds": args.seconds,
        "watch_timeout_s": args.watch_timeout,
        "initial_sync_requests_per_node": {k: v / args.nodes for k, v in sync.items() if v},
        "steady_requests_per_node_per_min": {k: round(v * per_min, 3) for k, v in steady.items()},
        "steady_non_watch_requests": non_watch,
        "watch_requests_per_node_per_min_at_default_timeouts": [
            round(3 * 60 / 599, 3), round(3 * 60 / 300, 3),
        ],
        "churn_requests_per_pod": {
            k: round(v / (args.nodes * args.pods), 3) for k, v in churn.items() if v
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--watch-timeout", type=int, default=10)
    p.add_argument("--pods", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeApiServerProcess(
        Path(tmp), bookmark_interval=1.0
    ) as rig:
        result = asyncio.run(run(args, rig))
    for key, value in result.items():
        if key != "nodes":
            print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
