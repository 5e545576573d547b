"""The plugin's part of multi-NIC pods, exec'd as the runtime does it, against a fake ipamd:
the annotation arrives in runtimeConfig, the request says so, the result lists one host veth
and one pod interface per card, and a DEL recorded while ipamd is down removes every
interface's host veth that carries its attachment's tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import protocol as p
from tests.cni.helpers import PluginExec
from tests.cni.test_cni_plugin import assert_error, conf_for
from tests.rigs.fake_ipamd import FakeIpamd

ANNOTATED = {
    "io.kubernetes.cri.pod-annotations": {"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"}
}


def two_cards() -> p.Reply:
    first = p.AddResult(host_veth="enia0", if_name="eth0", ipv4="10.0.0.5")
    second = p.AddResult(
        host_veth="enia1", if_name="mNicIf1", ipv4="10.0.1.7", gateway="169.254.1.2"
    )
    first.attachments = [second]
    return p.Reply.success(first.to_dict())


def test_the_annotation_in_runtime_config_asks_for_one_interface_per_card(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    fake_ipamd.replies[p.OP_ADD] = two_cards()
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, runtimeConfig=ANNOTATED))
    assert run.rc == 0, run.stdout + run.stderr
    assert fake_ipamd.requests[0].multi_nic is True
    assert run.json["interfaces"] == [
        {"name": "enia0"}, {"name": "eth0", "sandbox": "/var/run/netns/cni-test"},
        {"name": "enia1"}, {"name": "mNicIf1", "sandbox": "/var/run/netns/cni-test"},
    ]  # fmt: skip
    assert run.json["ips"] == [
        {"address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1},
        {"address": "10.0.1.7/32", "gateway": "169.254.1.2", "interface": 3},
    ]
    assert run.json["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]


@pytest.mark.parametrize(
    "runtime_config",
    [
        None,
        {},
        {"io.kubernetes.cri.pod-annotations": {}},
        {"io.kubernetes.cri.pod-annotations": {"k8s.amazonaws.com/nicConfig": "single"}},
        {"portMappings": []},
    ],
)
def test_without_the_annotation_the_pod_gets_one_interface(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, runtime_config: Any
) -> None:
    extra = {} if runtime_config is None else {"runtimeConfig": runtime_config}
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, **extra))
    assert run.rc == 0
    assert fake_ipamd.requests[0].multi_nic is False
    assert "multi_nic" not in fake_ipamd.requests[0].to_dict()  # the wire stays as it was


@pytest.mark.parametrize(
    "runtime_config",
    [[], "x", {"io.kubernetes.cri.pod-annotations": ["k8s.amazonaws.com/nicConfig"]}],
)
def test_a_malformed_runtime_config_is_a_config_error(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, runtime_config: Any
) -> None:
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, runtimeConfig=runtime_config))
    assert_error(run, 7)
    assert fake_ipamd.requests == []


def test_interfaces_the_pod_did_not_ask_for_are_refused(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    fake_ipamd.replies[p.OP_ADD] = two_cards()
    err = assert_error(run_plugin("ADD", conf_for(fake_ipamd, short_tmp)), 999)
    assert "unexpected interfaces" in err["msg"]


def test_nested_or_too_many_attachments_are_a_bad_reply() -> None:
    one = p.AddResult(host_veth="enia1", if_name="mNicIf1", ipv4="10.0.1.7").to_dict()
    nested = dict(one, attachments=[one])
    with pytest.raises(p.ProtocolError):
        p.AddResult.from_dict({**one, "if_name": "eth0", "attachments": [nested]})
    with pytest.raises(p.ProtocolError):
        p.AddResult.from_dict({**one, "attachments": [one] * (p.MAX_ATTACHMENTS + 1)})


def test_a_multi_nic_request_round_trips_and_a_non_bool_is_refused() -> None:
    req = p.Request(p.OP_ADD, "aws-cni", "c1", "eth0", "/var/run/netns/x", multi_nic=True)
    assert p.decode_request(p.encode_request(req)).multi_nic is True
    raw = dict(req.to_dict(), multi_nic="yes")
    with pytest.raises(p.ProtocolError):
        p.decode_request(p._encode(raw, "request"))
