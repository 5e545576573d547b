"""The vpc-cni plugin, exec'd as the runtime does it, against a fake ipamd."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from adapters import pending_dels as pd
from adapters import protocol as p
from tests.cni.helpers import PluginExec, PluginRun
from tests.rigs.fake_ipamd import FakeIpamd


def conf_for(
    server: FakeIpamd | None, tmp: Path, version: str = "1.0.0", **extra: Any
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "cniVersion": version,
        "name": "aws-cni",
        "type": "vpc-cni",
        "socketPath": server.sock_path if server else str(tmp / "absent.sock"),
        "pendingDelDir": str(tmp / "pending"),
        "pluginLogFile": str(tmp / "log" / "plugin.log"),
        "pluginLogLevel": "debug",
    }
    c.update(extra)
    return c


def assert_error(run: PluginRun, code: int, version: str = "1.0.0") -> dict[str, Any]:
    assert run.rc == 1, run.stdout + run.stderr
    err: dict[str, Any] = run.json
    assert set(err) == {"cniVersion", "code", "msg", "details"}
    assert err["code"] == code, err
    assert err["cniVersion"] == version
    assert err["msg"]
    return err


PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "vpccnitest0"}, {"name": "eth0", "sandbox": "/proc/1/ns/net"}],
    "ips": [{"address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
    "dns": {},
}


# --------------------------------------------------------------------------- VERSION


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [(b'{"cniVersion": "1.0.0"}', "1.0.0"), (b"", "1.1.0"), (b'{"cniVersion": "9.9.9"}', "1.1.0")],
)
def test_version(run_plugin: PluginExec, stdin: bytes, expected: str) -> None:
    run = run_plugin("VERSION", stdin)
    assert run.rc == 0
    assert run.json == {"cniVersion": expected, "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


# --------------------------------------------------------------------------- ADD


def test_add_1_0_0(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, mtu=1500), container_id="ctr1")
    assert run.rc == 0, run.stdout + run.stderr
    assert run.stderr == ""
    assert run.json == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "eni00000000005"},
            {"name": "eth0", "sandbox": "/var/run/netns/cni-test", "mac": "0a:58:0a:00:00:05"},
        ],
        "ips": [{"address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {},
    }
    (req,) = fake_ipamd.requests
    assert req == p.Request(
        p.OP_ADD,
        network_name="aws-cni",
        container_id="ctr1",
        if_name="eth0",
        netns="/var/run/netns/cni-test",
        pod_namespace="default",
        pod_name="web-0",
        mtu=1500,
    )
    lines = run_plugin.log_lines()
    assert any("cmd=ADD container=ctr1 added ipv4=10.0.0.5" in line for line in lines), lines


def test_add_0_4_0_marks_ip_versions(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, "0.4.0"))
    assert run.rc == 0
    res = run.json
    assert res["cniVersion"] == "0.4.0"
    assert res["ips"] == [
        {"version": "4", "address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1}
    ]


def test_add_1_1_0_reports_mtu(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, "1.1.0", mtu=1400))
    assert run.rc == 0
    assert [i.get("mtu") for i in run.json["interfaces"]] == [1400, 1400]


def test_add_ipv6(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    fake_ipamd.replies[p.OP_ADD] = p.Reply.success(
        p.AddResult(
            host_veth="enia1", if_name="eth0", ipv6="2600:1f14::5", gateway_v6="fe80::1"
        ).to_dict()
    )
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp))
    assert run.rc == 0
    assert run.json["ips"] == [
        {"address": "2600:1f14::5/128", "gateway": "fe80::1", "interface": 1}
    ]
    assert run.json["routes"] == [{"dst": "::/0", "gw": "fe80::1"}]


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (p.Reply.failure(p.ERR_POOL_EMPTY, "no address"), 11),
        (p.Reply.failure(p.ERR_SHUTTING_DOWN, "bye"), 11),
        (p.Reply.failure(p.ERR_DATAPATH_FAILED, "veth exists"), 999),
        (p.Reply.failure(p.ERR_INTERNAL, "boom"), 999),
        (p.Reply.failure(p.ERR_BAD_REQUEST, "nope"), 999),
        (p.Reply.success({"ipv4": "10.0.0.9"}), 999),  # no host_veth
        (p.Reply.success(p.AddResult("eni1", "net9", ipv4="10.0.0.9").to_dict()), 999),
        (b"garbage\n", 999),
        (b"", 11),  # closed without a reply: a crash mid-request, try again later
    ],
)
def test_add_daemon_errors(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, reply: Any, code: int
) -> None:
    fake_ipamd.replies[p.OP_ADD] = reply
    err = assert_error(run_plugin("ADD", conf_for(fake_ipamd, short_tmp)), code)
    if isinstance(reply, p.Reply) and not reply.ok:
        assert reply.error_code in err["msg"] and err["details"] == reply.error_message


def test_add_daemon_down_is_try_again(run_plugin: PluginExec, short_tmp: Path) -> None:
    err = assert_error(run_plugin("ADD", conf_for(None, short_tmp)), 11)
    assert "absent.sock" in err["details"]


def test_add_daemon_timeout_is_try_again(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    release = threading.Event()
    fake_ipamd.replies[p.OP_ADD] = lambda req: (release.wait(10), b"")[1]
    try:
        assert_error(run_plugin("ADD", conf_for(fake_ipamd, short_tmp, timeoutSeconds=0.2)), 11)
    finally:
        release.set()


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        (b"not json", 6),
        (b"\xff\xfe", 6),
        (b"[]", 6),
        (b"{" * 100000, 6),
        (b"{}", 7),
        (b'{"cniVersion": "0.3.1", "name": "aws-cni"}', 1),
        (b'{"cniVersion": "2.0.0", "name": "aws-cni"}', 1),
        (b'{"cniVersion": 1, "name": "aws-cni"}', 7),
        (b'{"cniVersion": "1.0.0"}', 7),
        (b'{"cniVersion": "1.0.0", "name": "../x"}', 7),
    ],
)
def test_add_bad_config(run_plugin: PluginExec, stdin: bytes, code: int) -> None:
    run = run_plugin("ADD", stdin)
    assert run.rc == 1 and run.json["code"] == code, run.stdout


@pytest.mark.parametrize(
    "extra",
    [
        {"socketPath": "relative.sock"},
        {"socketPath": 5},
        {"pendingDelDir": "x/y"},
        {"mtu": 100},
        {"mtu": "9001"},
        {"pluginLogLevel": "loud"},
        {"pluginLogFile": 3},
        {"timeoutSeconds": 0},
        {"timeoutSeconds": True},
        {"prevResult": []},
    ],
)
def test_add_invalid_network_config(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, extra: dict[str, Any]
) -> None:
    assert_error(run_plugin("ADD", conf_for(fake_ipamd, short_tmp, **extra)), 7)
    assert fake_ipamd.requests == []


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"container_id": ""}, "CNI_CONTAINERID"),
        ({"container_id": "../../etc"}, "CNI_CONTAINERID"),
        ({"if_name": ""}, "CNI_IFNAME"),
        ({"if_name": "eth0/../x"}, "CNI_IFNAME"),
        ({"if_name": "a" * 16}, "CNI_IFNAME"),
        ({"netns": ""}, "CNI_NETNS"),
        ({"netns": "../../etc"}, "CNI_NETNS"),
        ({"netns": "/var/run/netns/../../etc/passwd"}, "CNI_NETNS"),
        ({"netns": "/etc/passwd"}, "CNI_NETNS"),
        ({"args": "K8S_POD_NAMESPACE"}, "CNI_ARGS"),
        ({"args": "K8S_POD_NAMESPACE=Bad_NS"}, "K8S_POD_NAMESPACE"),
        ({"args": "K8S_POD_NAME=../x"}, "K8S_POD_NAME"),
    ],
)
def test_add_invalid_environment(
    run_plugin: PluginExec,
    fake_ipamd: FakeIpamd,
    short_tmp: Path,
    env: dict[str, Any],
    needle: str,
) -> None:
    err = assert_error(run_plugin("ADD", conf_for(fake_ipamd, short_tmp), **env), 4)
    assert needle in err["msg"]
    assert fake_ipamd.requests == []


def test_unknown_command(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    err = assert_error(run_plugin("FROB", conf_for(fake_ipamd, short_tmp)), 4, version="1.1.0")
    assert "CNI_COMMAND" in err["msg"]


def test_unknown_cni_args_are_ignored(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    args = "IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=abc;FOO=bar;;K8S_POD_NAME=x"
    run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp), args=args)
    assert run.rc == 0
    assert fake_ipamd.requests[0].pod_name == "x"
    assert fake_ipamd.requests[0].pod_namespace == ""


def test_unwritable_log_file_is_tolerated(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    blocker = short_tmp / "blocker"
    blocker.write_text("")
    for log_file in [str(blocker / "plugin.log"), "/proc/version/x.log", ""]:
        run = run_plugin("ADD", conf_for(fake_ipamd, short_tmp, pluginLogFile=log_file))
        assert run.rc == 0 and run.stderr == ""
        assert run.json["ips"][0]["address"] == "10.0.0.5/32"


def test_log_level_filters(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    run_plugin("ADD", conf_for(fake_ipamd, short_tmp, pluginLogLevel="error"))
    assert run_plugin.log_lines() == []
    run_plugin("ADD", conf_for(fake_ipamd, short_tmp, pluginLogLevel="debug"))
    lines = run_plugin.log_lines()
    assert any(" DEBUG " in line for line in lines) and any(" INFO " in line for line in lines)
    assert all(line.count("\n") == 0 for line in lines)


# --------------------------------------------------------------------------- DEL


def test_del_forwards_prev_result(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    run = run_plugin("DEL", conf_for(fake_ipamd, short_tmp, prevResult=PREV_RESULT))
    assert run.rc == 0 and run.stdout == ""
    (req,) = fake_ipamd.requests
    assert req.op == p.OP_DEL and req.prev_result == PREV_RESULT
    assert not (short_tmp / "pending").exists()


def test_del_without_netns(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    run = run_plugin("DEL", conf_for(fake_ipamd, short_tmp), netns="")
    assert run.rc == 0
    assert fake_ipamd.requests[0].netns == ""


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (p.Reply.failure(p.ERR_NOT_FOUND, "unknown"), 0),
        (p.Reply.failure(p.ERR_INTERNAL, "boom"), 999),
        (p.Reply.failure(p.ERR_DATAPATH_FAILED, "veth busy"), 999),
    ],
)
def test_del_daemon_replies(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, reply: p.Reply, code: int
) -> None:
    fake_ipamd.replies[p.OP_DEL] = reply
    run = run_plugin("DEL", conf_for(fake_ipamd, short_tmp))
    if code == 0:
        assert run.rc == 0
    else:
        assert_error(run, code)


def test_del_daemon_down_leaves_pending_record(run_plugin: PluginExec, short_tmp: Path) -> None:
    conf = conf_for(None, short_tmp, prevResult=PREV_RESULT)
    run = run_plugin("DEL", conf, container_id="gone1")
    assert run.rc == 0 and run.stdout == "", run.stdout
    pending = str(short_tmp / "pending")
    (req,) = pd.read_pending_dels(pending)
    assert (req.op, req.container_id, req.if_name, req.pod_name) == (
        p.OP_DEL,
        "gone1",
        "eth0",
        "web-0",
    )
    assert req.prev_result == PREV_RESULT
    assert os.listdir(pending) == [pd.pending_del_filename("gone1", "eth0")]
    # The host veth named in prevResult was deleted best effort (it does not exist here).
    assert any("vpccnitest0" in line for line in run_plugin.log_lines())
    # A retried DEL keeps a single record; the daemon removes it once processed.
    assert run_plugin("DEL", conf, container_id="gone1").rc == 0
    assert len(os.listdir(pending)) == 1
    assert pd.remove_pending_del(pending, req)
    assert pd.read_pending_dels(pending) == []


def test_del_daemon_shutting_down_leaves_pending_record(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    fake_ipamd.replies[p.OP_DEL] = p.Reply.failure(p.ERR_SHUTTING_DOWN, "bye")
    assert run_plugin("DEL", conf_for(fake_ipamd, short_tmp), container_id="c9").rc == 0
    assert [r.container_id for r in pd.read_pending_dels(str(short_tmp / "pending"))] == ["c9"]


def test_del_daemon_down_and_record_unwritable(run_plugin: PluginExec, short_tmp: Path) -> None:
    blocker = short_tmp / "blocker"
    blocker.write_text("")
    conf = conf_for(None, short_tmp, pendingDelDir=str(blocker / "pending"))
    err = assert_error(run_plugin("DEL", conf), 11)
    assert "could not be recorded" in err["msg"]


def test_del_daemon_timeout_is_try_again(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    release = threading.Event()
    fake_ipamd.replies[p.OP_DEL] = lambda req: (release.wait(10), b"")[1]
    try:
        run = run_plugin("DEL", conf_for(fake_ipamd, short_tmp, timeoutSeconds=0.2))
        assert_error(run, 11)
    finally:
        release.set()
    assert not (short_tmp / "pending").exists()


# --------------------------------------------------------------------------- CHECK


def test_check(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    conf = conf_for(fake_ipamd, short_tmp)
    assert run_plugin("ADD", conf, container_id="k1").rc == 0
    run = run_plugin("CHECK", {**conf, "prevResult": PREV_RESULT}, container_id="k1")
    assert run.rc == 0 and run.stdout == ""
    assert fake_ipamd.requests[-1].op == p.OP_CHECK
    assert fake_ipamd.requests[-1].prev_result == PREV_RESULT


def test_check_unknown_container(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    conf = conf_for(fake_ipamd, short_tmp, prevResult=PREV_RESULT)
    assert_error(run_plugin("CHECK", conf, container_id="never"), 3)


def test_check_needs_prev_result(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    assert_error(run_plugin("CHECK", conf_for(fake_ipamd, short_tmp)), 7)


def test_check_daemon_down(run_plugin: PluginExec, short_tmp: Path) -> None:
    assert_error(run_plugin("CHECK", conf_for(None, short_tmp, prevResult=PREV_RESULT)), 11)


# --------------------------------------------------------------------------- STATUS / GC


def test_status(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    run = run_plugin("STATUS", conf_for(fake_ipamd, short_tmp, "1.1.0"), container_id="")
    assert run.rc == 0 and run.stdout == ""
    assert fake_ipamd.requests[0].op == p.OP_STATUS


def test_status_daemon_down(run_plugin: PluginExec, short_tmp: Path) -> None:
    assert_error(run_plugin("STATUS", conf_for(None, short_tmp, "1.1.0")), 50, "1.1.0")


def test_status_daemon_not_ready(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    fake_ipamd.replies[p.OP_STATUS] = p.Reply.failure(p.ERR_POOL_EMPTY, "warming up")
    err = assert_error(run_plugin("STATUS", conf_for(fake_ipamd, short_tmp, "1.1.0")), 50, "1.1.0")
    assert err["details"] == "warming up"


def test_gc(run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path) -> None:
    conf = conf_for(fake_ipamd, short_tmp, "1.1.0")
    for cid in ("keep1", "drop1"):
        assert run_plugin("ADD", conf, container_id=cid).rc == 0
    gc_conf = {
        **conf,
        "cni.dev/valid-attachments": [{"containerID": "keep1", "ifname": "eth0"}],
    }
    run = run_plugin("GC", gc_conf, container_id="", if_name="", netns="")
    assert run.rc == 0 and run.stdout == ""
    req = fake_ipamd.requests[-1]
    assert req.op == p.OP_GC and req.valid_attachments == [("keep1", "eth0")]
    assert set(fake_ipamd.attachments) == {("keep1", "eth0")}


@pytest.mark.parametrize(
    "attachments",
    [
        {"containerID": "a"},
        [{"containerID": "../x", "ifname": "eth0"}],
        [{"containerID": "a", "ifname": "a/b"}],
        ["a"],
    ],
)
def test_gc_invalid_attachments(
    run_plugin: PluginExec, fake_ipamd: FakeIpamd, short_tmp: Path, attachments: Any
) -> None:
    conf = conf_for(fake_ipamd, short_tmp, "1.1.0", **{"cni.dev/valid-attachments": attachments})
    assert_error(run_plugin("GC", conf), 7, "1.1.0")
    assert fake_ipamd.requests == []


def test_gc_daemon_down(run_plugin: PluginExec, short_tmp: Path) -> None:
    conf = conf_for(None, short_tmp, "1.1.0", **{"cni.dev/valid-attachments": []})
    assert_error(run_plugin("GC", conf), 11, "1.1.0")


def test_shipped_conflist_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "adapters" / "cni" / "10-vpc-cni.conflist"
    conf = json.loads(path.read_text())
    assert conf["cniVersion"] == "1.0.0" and conf["name"] == "aws-cni"
    ours, portmap = conf["plugins"]
    assert ours["type"] == "vpc-cni" and ours["socketPath"] == p.DEFAULT_SOCKET_PATH
    assert ours["pendingDelDir"] == p.DEFAULT_PENDING_DEL_DIR
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_plugin_tag_is_the_cores_tag() -> None:
    """The plugin repeats ipamcore.netspec.attachment_tag (it imports nothing heavy)."""
    from adapters.cni.plugin import attachment_tag as plugin_tag
    from ipamcore.netspec import attachment_tag

    for key in (("aws-cni", "c1", "eth0"), ("n", "x" * 64, "eth1"), ("a\u00e9", "b", "c")):
        assert plugin_tag(*key) == attachment_tag(*key)


@pytest.mark.parametrize(
    "stdin", [b"not json", b'{"cniVersion": "1.0.0", "socketPath": "rel/x"}', b"{}"]
)
def test_errors_before_the_configuration_open_no_log_file(
    stdin: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: tests run as root appended to the system's plugin log; an error before the
    configuration names a log file (or says to use the default) is reported on stdout only."""
    import io

    from adapters.cni import plugin as cni

    opened: list[str] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith("/var/log"):
            opened.append(str(path))
            raise PermissionError(13, "not in a test", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(cni.os, "open", recording_open)
    out = io.StringIO()
    plugin = cni.Plugin({"CNI_COMMAND": "ADD"}, stdin, out)
    assert plugin.run() == 1 and json.loads(out.getvalue())["code"] in (6, 7, 1)
    assert opened == []
