"""KubeWatcher through the real backend against the fake API server process, under faults.

Dropped watches, 429/500 answers, the API server gone for a while, and its history compacted
meanwhile: the cache keeps serving, the watches resume from their resourceVersion, and the
fake's request log shows no relist storm (LIST requests are counted). Also in-cluster
configuration (``CLUSTER_ENDPOINT``, service-account token file) with a token rotation, and
``kubectl`` (Debian's ``kubernetes-client``) against the fake. Backoff here is 0.05 s to 0.5 s
of real time; waits are bounded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backends.kubernetes.client import LightkubeApi, cluster_config
from backends.kubernetes.informer import Backoff
from backends.kubernetes.settings import KubeSettings
from backends.kubernetes.watcher import KubeWatcher
from ipamcore.kube import KubeError, KubeFailure
from tests.contract.kube_contract import ENICONFIGS, NODES, SystemClock, eventually, pods_path
from tests.rigs.kube_rig import FakeApiServerProcess

NODE = "ip-10-0-0-1.ec2.internal"
ENV = {
    "MY_NODE_NAME": NODE,
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true",
    "ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone",
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with FakeApiServerProcess(tmp_path_factory.mktemp("apiserver"), bookmark_interval=0.3) as r:
        yield r


def seed(rig: FakeApiServerProcess) -> None:
    rig.reset()
    node = {
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "us-west-2a"}},
        "status": {"capacity": {"pods": "29"}},
    }
    assert rig.api("POST", NODES, node)[0] == 201
    eni = {"metadata": {"name": "us-west-2a"}, "spec": {"subnet": "subnet-a"}}
    assert rig.api("POST", ENICONFIGS, eni)[0] == 201
    for i in range(3):
        pod = {"metadata": {"name": f"web-{i}"}, "spec": {"nodeName": NODE}}
        assert rig.api("POST", pods_path("default"), pod)[0] == 201
    rig.admin("POST", "/requests/clear")


def add_pod(rig: FakeApiServerProcess, name: str) -> None:
    body = {"metadata": {"name": name}, "spec": {"nodeName": NODE}}
    assert rig.api("POST", pods_path("default"), body)[0] == 201


def counts(rig: FakeApiServerProcess) -> dict[str, int]:
    out = {"lists": 0, "watches": 0, "other": 0}
    for r in rig.requests():
        if r["method"] == "GET" and r["watch"]:
            out["watches"] += 1
        elif r["method"] == "GET" and r["path"] in (NODES, "/api/v1/pods", ENICONFIGS):
            out["lists"] += 1
        else:
            out["other"] += 1
    return out


@pytest.fixture
async def watcher(rig):
    seed(rig)
    settings = KubeSettings.from_env({**ENV, "KUBECONFIG": str(rig.kubeconfig)})
    api = LightkubeApi(cluster_config(settings))
    w = KubeWatcher(api, settings, SystemClock(), Backoff(0.05, 0.5))
    await w.start()
    assert await w.wait_synced(10.0)
    await eventually(lambda: rig.admin("GET", "/watches")["open"] == 3)
    yield w
    await w.stop()
    await api.aclose()


def pod_names(w: KubeWatcher) -> list[str]:
    return sorted(p.name for p in w.pods())


async def test_steady_state_is_only_watches(rig, watcher):
    await asyncio.sleep(1.0)  # bookmarks flow; nothing else should be asked
    c = counts(rig)
    assert c == {"lists": 3, "watches": 3, "other": 0}


async def test_dropped_watches_resume_without_a_list(rig, watcher):
    rig.admin("POST", "/drop-watches")
    add_pod(rig, "after-drop")
    await eventually(lambda: "after-drop" in pod_names(watcher))
    c = counts(rig)
    assert c["lists"] == 3  # the initial ones
    assert c["watches"] >= 6
    resumed = [r for r in rig.requests() if r["watch"]][3:]
    assert all(r["query"]["resourceVersion"] != "0" for r in resumed)


async def test_errors_and_throttling_on_watches(rig, watcher):
    rig.admin("POST", "/faults", {"status": 500, "count": 3, "watch": True})
    rig.admin("POST", "/faults", {"status": 429, "count": 2, "watch": True, "retry_after": 1})
    rig.admin("POST", "/drop-watches")
    add_pod(rig, "after-errors")
    await eventually(lambda: "after-errors" in pod_names(watcher), timeout=15.0)
    c = counts(rig)
    assert c["lists"] == 3
    statuses = [r["status"] for r in rig.requests() if r["watch"]]
    assert statuses.count(500) == 3 and statuses.count(429) == 2


async def test_outage_serves_cache_and_resumes_without_relist_storm(rig, watcher):
    before = pod_names(watcher)
    rig.admin("POST", "/outage", {})
    await asyncio.sleep(2.0)  # gone: backoff 0.05 s doubling to 0.5 s
    assert pod_names(watcher) == before  # served from the cache
    assert watcher.max_pods(110) == 29
    assert watcher.eniconfig_for_node().spec.subnet == "subnet-a"  # type: ignore[union-attr]
    assert not watcher.connected()
    rig.admin("POST", "/restore")
    add_pod(rig, "after-outage")
    await eventually(lambda: "after-outage" in pod_names(watcher), timeout=15.0)
    assert counts(rig)["lists"] == 3  # resumed from resourceVersion: no LIST at all


async def test_timed_outage_ends_by_itself(rig, watcher):
    rig.admin("POST", "/outage", {"seconds": 1.0})
    await asyncio.sleep(0.3)
    assert not watcher.connected()
    await eventually(lambda: rig.admin("GET", "/watches")["open"] == 3, timeout=15.0)
    add_pod(rig, "after-timed-outage")
    await eventually(lambda: "after-timed-outage" in pod_names(watcher))
    assert counts(rig)["lists"] == 3


async def test_slow_answers_time_out_as_unavailable(rig):
    seed(rig)
    settings = KubeSettings.from_env({**ENV, "KUBECONFIG": str(rig.kubeconfig)})
    api = LightkubeApi(cluster_config(settings), request_timeout_s=0.3)
    rig.admin("POST", "/faults", {"status": 0, "delay": 1.0, "count": 1, "method": "GET"})
    try:
        with pytest.raises(KubeError) as info:
            await api.get_node(NODE)
        assert info.value.kind is KubeFailure.UNAVAILABLE
        assert (await api.get_node(NODE)).name == NODE  # the next one is served
    finally:
        await api.aclose()


async def test_outage_with_compaction_relists_once(rig, watcher):
    rig.admin("POST", "/outage", {})
    await asyncio.sleep(0.5)
    rig.admin("POST", "/compact")  # the history is gone meanwhile
    rig.admin("POST", "/restore")
    add_pod(rig, "after-compaction")
    await eventually(lambda: "after-compaction" in pod_names(watcher), timeout=15.0)
    await asyncio.sleep(0.5)
    assert counts(rig)["lists"] == 6  # each of the three kinds listed once more
    assert all(r.stats.expired == 1 for r in watcher.reflectors)


async def test_in_cluster_config_with_token_rotation(rig, tmp_path):
    seed(rig)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(rig.token)
    shutil.copy(rig.ca_path, account / "ca.crt")
    env = {
        **ENV,
        "CLUSTER_ENDPOINT": rig.url,
        "IPAMD_KUBE_SERVICE_ACCOUNT_DIR": str(account),
    }
    settings = KubeSettings.from_env(env)
    assert settings.in_cluster
    api = LightkubeApi(cluster_config(settings))
    try:
        assert (await api.get_node(NODE)).name == NODE
        rig.admin("POST", "/tokens", {"tokens": ["rotated-token"]})
        (account / "token").write_text("rotated-token")
        assert (await api.get_node(NODE)).name == NODE  # 401, token re-read, retried
        statuses = [r["status"] for r in rig.requests() if r["path"] == f"{NODES}/{NODE}"]
        assert statuses == [200, 401, 200]
    finally:
        rig.admin("POST", "/tokens", {"tokens": [rig.token]})
        await api.aclose()


def test_in_cluster_from_service_host(tmp_path):
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "ca.crt").write_text("")
    env = {
        "MY_NODE_NAME": "n",
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "443",
        "IPAMD_KUBE_SERVICE_ACCOUNT_DIR": str(account),
    }
    config = cluster_config(KubeSettings.from_env(env))
    assert config.cluster.server == "https://[fd00::1]:443"
    assert config.user is not None and config.user.token_file == str(account / "token")


# ------------------------------------------------------------ kubectl

KUBECTL = shutil.which("kubectl")


def kubectl(rig: FakeApiServerProcess, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(rig.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (Debian's kubernetes-client) not installed")
def test_kubectl_against_the_fake(rig, tmp_path: Path):
    seed(rig)
    out = kubectl(rig, "get", "nodes,pods")
    assert f"node/{NODE}" in out and "pod/web-0" in out
    assert "us-west-2a" in kubectl(rig, "get", "eniconfigs")
    assert "pod/web-1 annotated" in kubectl(
        rig, "annotate", "pod", "web-1", "vpc.amazonaws.com/pod-ips=10.0.0.9"
    )
    jsonpath = r"jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-ips}"
    got = kubectl(rig, "get", "pod", "web-1", "-o", jsonpath)
    assert got == "10.0.0.9"
    manifest: dict[str, Any] = {
        "apiVersion": "crd.k8s.amazonaws.com/v1alpha1",
        "kind": "ENIConfig",
        "metadata": {"name": "us-west-2b"},
        "spec": {"subnet": "subnet-b", "securityGroups": ["sg-b"]},
    }
    path = tmp_path / "eniconfig.json"
    path.write_text(json.dumps(manifest))
    assert "created" in kubectl(rig, "apply", "-f", str(path))
    manifest["spec"]["subnet"] = "subnet-b2"
    path.write_text(json.dumps(manifest))
    assert "configured" in kubectl(rig, "apply", "-f", str(path))
    subnet = kubectl(rig, "get", "eniconfig", "us-west-2b", "-o", "jsonpath={.spec.subnet}")
    assert subnet == "subnet-b2"
    out = kubectl(rig, "get", "pods", "-A", "--field-selector", f"spec.nodeName={NODE}")
    assert out.count("web-") == 3
