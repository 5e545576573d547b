"""Decoding the API's JSON and translating its failures (no network)."""

from __future__ import annotations

import json

import httpx2
import pytest

from backends.kubernetes.client import (
    _watch_event,
    cninode_from,
    eniconfig_from,
    failure_for,
    node_from,
    pod_from,
    translate,
)
from ipamcore.kube import CniNodeFeature, EniConfigSpec, KubeError, KubeFailure


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (401, KubeFailure.UNAUTHORIZED),
        (403, KubeFailure.FORBIDDEN),
        (404, KubeFailure.NOT_FOUND),
        (409, KubeFailure.CONFLICT),
        (410, KubeFailure.EXPIRED),
        (429, KubeFailure.THROTTLED),
        (500, KubeFailure.SERVER),
        (503, KubeFailure.SERVER),
        (422, KubeFailure.INVALID),
    ],
)
def test_failure_for(code, kind):
    assert failure_for(code) is kind


def test_translate_transport_and_status_errors():
    request = httpx2.Request("GET", "https://127.0.0.1/api")
    assert translate(httpx2.ConnectError("refused")).kind is KubeFailure.UNAVAILABLE
    assert translate(httpx2.ReadTimeout("slow")).kind is KubeFailure.UNAVAILABLE
    resp = httpx2.Response(429, headers={"Retry-After": "7"}, request=request)
    err = translate(httpx2.HTTPStatusError("x", request=request, response=resp))
    assert err.kind is KubeFailure.THROTTLED and err.retry_after == 7.0


def line(type_: str, obj: dict) -> str:
    return json.dumps({"type": type_, "object": obj})


def test_watch_lines():
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "12", "uid": "u",
                     "annotations": {"a": "b"}},
        "spec": {"nodeName": "n1", "hostNetwork": True},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "2001:db8::5"}]},
    }  # fmt: skip
    ev = _watch_event(line("ADDED", pod), pod_from)
    assert ev.type == "ADDED" and ev.resource_version == "12"
    assert ev.obj is not None and ev.obj.pod_ips == ("10.0.0.5", "2001:db8::5")
    assert ev.obj.host_network and ev.obj.node_name == "n1"  # type: ignore[union-attr]
    bookmark = {"kind": "Pod", "metadata": {"resourceVersion": "40"}}
    mark = _watch_event(line("BOOKMARK", bookmark), pod_from)
    assert (mark.type, mark.resource_version, mark.obj) == ("BOOKMARK", "40", None)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    with pytest.raises(KubeError) as info:
        _watch_event(line("ERROR", gone), pod_from)
    assert info.value.kind is KubeFailure.EXPIRED
    with pytest.raises(KubeError):
        _watch_event("not json", pod_from)


def test_decoders():
    node = node_from(
        {
            "metadata": {"name": "n", "labels": {"k": "v"}, "resourceVersion": "3"},
            "spec": {"unschedulable": True},
            "status": {"capacity": {"pods": "58"}},
        }
    )
    assert (node.name, node.capacity_pods, node.unschedulable) == ("n", "58", True)
    assert node_from({"metadata": {"name": "n"}}).capacity_pods is None
    eni = eniconfig_from(
        {"metadata": {"name": "az"}, "spec": {"subnet": "s", "securityGroups": ["g"]}}
    )
    assert eni.spec == EniConfigSpec("s", ("g",))
    features = [{"name": "CustomNetworking", "value": "az"}]
    cn = cninode_from({"metadata": {"name": "n"}, "spec": {"features": features}})
    assert cn.features == (CniNodeFeature("CustomNetworking", "az"),)
    pod = pod_from({"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.1"}})
    assert pod.pod_ips == ("10.0.0.1",)
