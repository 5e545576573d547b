"""The Events an operator must act on, end to end: the ``vpc-ipamd`` process (EC2 backend
over HTTP to moto_server, the real datapath in a node namespace), the fake API server
process, pods ADDed by the plugin as kubelet runs it; EC2's answers changed by the node's
hypervisor proxy (:meth:`tests.rigs.eni_hotplug.EniHotplug.fail`).

1. EC2 throttles every call (``RequestLimitExceeded``) while pods keep coming: an
   ``Ec2Throttled`` Event once that has lasted ``IPAMD_KUBE_EVENT_THROTTLED_SECONDS`` = 4 s,
   not before.
2. The subnet is full (``InsufficientFreeAddressesInSubnet`` to every address request): an
   ``InsufficientSubnetAddresses`` Event; a pod whose ADDs are turned away, retried as
   kubelet retries (a new ADD every half second, each waiting ``IPAMD_ADD_WAIT_SECONDS`` =
   2 s), gets a ``PodsWaitingForAddresses`` Event once it has waited
   ``IPAMD_KUBE_EVENT_WAITING_SECONDS`` = 6 s, longer than any one ADD waits (so it can only
   come from the pod's retries being counted together).

The thresholds are shortened by their variables (defaults 30 s and 5 min), real time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.contract.kube_contract import NODES, pods_path
from tests.rigs.cni_runtime import CniError
from tests.rigs.kube_rig import FakeApiServerProcess
from tests.rigs.localnode import LocalNode, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]

EVENTS = "/apis/events.k8s.io/v1/namespaces/kube-system/events"
NODE = "node-e"
THROTTLED_S = 4.0


def events(rig: FakeApiServerProcess, reason: str) -> list[dict[str, Any]]:
    _, doc = rig.api("GET", EVENTS)
    return [e for e in doc["items"] if e["reason"] == reason]


def wait_event(
    rig: FakeApiServerProcess, reason: str, timeout: float, meanwhile: Any = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(rig, reason)
        if found:
            return found[0]
        if meanwhile is not None:
            meanwhile()
        time.sleep(0.5)
    raise AssertionError(f"no {reason} Event in {timeout:.0f} s")


def try_add(node: LocalNode, pod: str, turned_away: list[str]) -> None:
    """One ADD as kubelet makes it; a failure is kept (kubelet retries)."""
    try:
        node.add_pod(pod)
    except CniError as exc:
        node.forget_netns(pod)
        turned_away.append(str(exc.doc))


def test_subnet_full_pods_waiting_and_throttled_events(tmp_path: Path) -> None:
    with FakeApiServerProcess(tmp_path / "apiserver", bookmark_interval=1.0) as rig:
        node_obj = {"metadata": {"name": NODE}, "status": {"capacity": {"pods": "29"}}}
        assert rig.api("POST", NODES, node_obj)[0] == 201
        aws_node = {"metadata": {"name": f"aws-node-{NODE}"}, "spec": {"nodeName": NODE}}
        assert rig.api("POST", pods_path("kube-system"), aws_node)[0] == 201
        env = {
            "MY_NODE_NAME": NODE, "MY_POD_NAME": f"aws-node-{NODE}",
            "KUBECONFIG": str(rig.kubeconfig), "ANNOTATE_POD_IP": "true",
            "WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "2", "IPAMD_ADD_WAIT_SECONDS": "2",
            "IPAMD_KUBE_EVENT_WAITING_SECONDS": "6",
            "IPAMD_KUBE_EVENT_THROTTLED_SECONDS": str(THROTTLED_S),
            "IPAMD_KUBE_EVENT_INTERVAL_SECONDS": "0.5", "AWS_MAX_ATTEMPTS": "1",
            "IPAMD_POLICY_INTERVAL_SECONDS": "1",
        }  # fmt: skip
        with local_node(real=True, extra_env=env) as node:
            assert node.hotplug is not None
            for k in range(2):
                node.add_pod(f"web-{k}")  # the warm pool
            assert events(rig, "Ec2Throttled") == []
            turned_away: list[str] = []

            def next_pod() -> None:  # a new pod each time one got its address
                try_add(node, f"web-{len(node.pods)}", turned_away)

            # 1. EC2 throttles everything: pods keep coming, the pool cannot grow
            node.hotplug.fail(".*", "RequestLimitExceeded", 503)
            throttled_at = time.monotonic()
            event = wait_event(rig, "Ec2Throttled", 60, next_pod)
            assert time.monotonic() - throttled_at >= THROTTLED_S
            assert event["type"] == "Warning"
            assert event["regarding"]["name"] == f"aws-node-{NODE}"
            assert "throttled" in event["note"]
            assert node.hotplug.refused.get("AssignPrivateIpAddresses", 0) >= 1
            node.hotplug.clear_faults()

            # 2. the subnet is full; the pod turned away is retried
            node.hotplug.fail("AssignPrivateIpAddresses|CreateNetworkInterface",
                              "InsufficientFreeAddressesInSubnet")  # fmt: skip
            full = wait_event(rig, "InsufficientSubnetAddresses", 60, next_pod)
            waiting = wait_event(rig, "PodsWaitingForAddresses", 60, next_pod)
            # each ADD waited at most 2 s: the 6 s are the pod's ADDs counted together
            assert len(turned_away) >= 3, turned_away
            assert all("within 2s" in t for t in turned_away), turned_away
            for event in (full, waiting):
                assert event["type"] == "Warning"
                assert event["regarding"]["kind"] == "Pod"
                assert event["regarding"]["name"] == f"aws-node-{NODE}"
                assert event["regarding"]["namespace"] == "kube-system"
            assert "waiting for an address" in waiting["note"]
            node.hotplug.clear_faults()
            # running pods were never touched
            for name in ("web-0", "web-1"):
                assert node.check_pod(name) == {}
