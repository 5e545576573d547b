"""Table tests of the Kubernetes decisions in ipamcore.eniconfig."""

from __future__ import annotations

import pytest

from ipamcore.eniconfig import (
    EC2_THROTTLED,
    MISSING_ENICONFIG,
    PODS_WAITING,
    SUBNET_FULL,
    AnnotationAction,
    EniConfigChoice,
    EniConfigKeys,
    EventGate,
    Observations,
    choose_eniconfig,
    cninode_feature_for,
    eniconfig_name,
    max_pods,
    pod_ips_patch,
    quantity_as_int,
    with_feature,
)
from ipamcore.kube import (
    POD_IPS_ANNOTATION,
    CniNodeFeature,
    EniConfig,
    EniConfigSpec,
    NodeInfo,
    PodInfo,
)

EXT = "vpc.amazonaws.com/externalEniConfig"
DEF = "k8s.amazonaws.com/eniConfig"
ZONE = "topology.kubernetes.io/zone"


@pytest.mark.parametrize(
    ("labels", "annotations", "keys", "expected"),
    [
        ({}, {}, EniConfigKeys(), "default"),
        ({DEF: "lbl"}, {}, EniConfigKeys(), "lbl"),
        ({}, {DEF: "ann"}, EniConfigKeys(), "ann"),
        ({DEF: "lbl"}, {DEF: "ann"}, EniConfigKeys(), "ann"),  # annotation before label
        ({EXT: "ext", DEF: "lbl"}, {DEF: "ann"}, EniConfigKeys(), "ext"),  # external first
        ({ZONE: "us-west-2a"}, {}, EniConfigKeys.of(None, ZONE), "us-west-2a"),
        ({ZONE: "us-west-2a", DEF: "x"}, {}, EniConfigKeys.of("", ZONE), "us-west-2a"),
        ({DEF: "lbl"}, {}, EniConfigKeys.of(None, ZONE), "default"),  # label key replaced
        ({}, {"custom/ann": "c"}, EniConfigKeys.of("custom/ann", None), "c"),
        ({EXT: ""}, {DEF: "ann"}, EniConfigKeys(), ""),  # present wins, as upstream
    ],
)
def test_eniconfig_name(labels, annotations, keys, expected):
    node = NodeInfo("n1", labels=labels, annotations=annotations)
    assert eniconfig_name(node, keys) == expected


def test_choose_eniconfig_missing_and_found():
    spec = EniConfigSpec("subnet-a", ("sg-1",))
    objects = {"us-west-2a": EniConfig("us-west-2a", spec)}
    node = NodeInfo("n1", labels={ZONE: "us-west-2a"})
    keys = EniConfigKeys.of(None, ZONE)
    assert choose_eniconfig(node, objects.get, keys) == EniConfigChoice("us-west-2a", spec)
    other = NodeInfo("n2", labels={ZONE: "us-west-2b"})
    assert choose_eniconfig(other, objects.get, keys) == EniConfigChoice("us-west-2b", None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("110", 110),
        ("0", 0),
        ("1k", 1000),
        ("2Ki", 2048),
        ("1e3", 1000),
        ("58.0", 58),
        ("58.5", None),
        ("1500m", None),
        ("2000m", 2),
        ("abc", None),
        ("", None),
    ],
)
def test_quantity_as_int(text, value):
    assert quantity_as_int(text) == value


@pytest.mark.parametrize(
    ("capacity", "fallback", "expected"),
    [("29", 110, 29), (None, 110, 110), ("bad", 58, 58), ("0", 110, 110), ("250", 110, 250)],
)
def test_max_pods(capacity, fallback, expected):
    assert max_pods(NodeInfo("n", capacity_pods=capacity), fallback) == expected


def test_max_pods_without_node():
    assert max_pods(None) == 110


def pod(value: str | None) -> PodInfo:
    ann = {} if value is None else {POD_IPS_ANNOTATION: value}
    return PodInfo("ns", "p", annotations=ann)


@pytest.mark.parametrize(
    ("current", "new_ip", "released", "action", "patch"),
    [
        (None, "10.0.0.5", "", AnnotationAction.PATCH, {POD_IPS_ANNOTATION: "10.0.0.5"}),
        ("10.0.0.4", "10.0.0.5", "", AnnotationAction.PATCH, {POD_IPS_ANNOTATION: "10.0.0.5"}),
        ("10.0.0.5", "10.0.0.5", "", AnnotationAction.SKIP, {}),
        ("10.0.0.5", "", "10.0.0.5", AnnotationAction.PATCH, {POD_IPS_ANNOTATION: ""}),
        ("10.0.0.6", "", "10.0.0.5", AnnotationAction.MISMATCH, {}),
        (None, "", "10.0.0.5", AnnotationAction.SKIP, {}),
        ("", "", "10.0.0.5", AnnotationAction.SKIP, {}),
    ],
)
def test_pod_ips_patch(current, new_ip, released, action, patch):
    decision = pod_ips_patch(pod(current), new_ip, released)
    assert decision.action is action
    assert dict(decision.annotations) == patch


def test_pod_ips_patch_gone_pod():
    assert pod_ips_patch(None, "", "10.0.0.5").action is AnnotationAction.SKIP


def test_cninode_features():
    cn = CniNodeFeature("CustomNetworking", "zone-a")
    sg = CniNodeFeature("SecurityGroupsForPods", "")
    assert cninode_feature_for(True, "zone-a") == cn
    assert cninode_feature_for(True, "default") is None
    assert cninode_feature_for(False, "zone-a") is None
    assert with_feature((), cn) == (cn,)
    assert with_feature((sg, cn), cn) is None
    renamed = with_feature((CniNodeFeature("CustomNetworking", "old"), sg), cn)
    assert renamed == (sg, cn)


def test_event_gate_raises_once_then_repeats():
    gate = EventGate()
    missing = Observations(eniconfig=EniConfigChoice("zone-a", None))
    first = gate.step(missing, 0.0)
    assert [e.reason for e in first] == [MISSING_ENICONFIG]
    assert "zone-a" in first[0].note and first[0].type == "Warning"
    assert gate.step(missing, 100.0) == []
    assert [e.reason for e in gate.step(missing, 600.0)] == [MISSING_ENICONFIG]
    # the condition ends, then comes back: posted again at once
    assert gate.step(Observations(), 601.0) == []
    assert [e.reason for e in gate.step(missing, 602.0)] == [MISSING_ENICONFIG]


@pytest.mark.parametrize(
    ("obs", "now", "reasons"),
    [
        (Observations(eniconfig=EniConfigChoice("a", EniConfigSpec("s"))), 0, []),
        (Observations(subnet_full="subnet-1"), 0, [SUBNET_FULL]),
        (Observations(throttled_since=0.0), 299, []),
        (Observations(throttled_since=0.0), 300, [EC2_THROTTLED]),
        (Observations(pods_waiting=3, waiting_since=0.0), 29, []),
        (Observations(pods_waiting=3, waiting_since=0.0), 30, [PODS_WAITING]),
        (Observations(pods_waiting=0, waiting_since=0.0), 90, []),
        (Observations(ec2_unauthorized="CreateNetworkInterface"), 0, ["Ec2Unauthorized"]),
    ],
)
def test_event_conditions(obs, now, reasons):
    assert [e.reason for e in EventGate().step(obs, float(now))] == sorted(reasons)
