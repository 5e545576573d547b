"""Names from outside (container ids, interface names, netns paths, pod names) with path
traversal, NUL, oversized and non-ASCII values: the plugin and the daemon reject them with a
clear error, and nothing is written outside their directories (checked on a temp tree)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from adapters import pending_dels as pd
from adapters import protocol as p
from adapters.cni import plugin as cni
from adapters.ipamd.daemon import Daemon
from tests.adapters.harness import World, call, raw_call

GOOD = {
    "CNI_CONTAINERID": "0123456789abcdef",
    "CNI_IFNAME": "eth0",
    "CNI_NETNS": "/var/run/netns/cni-1",
    "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
}
PREV = {"interfaces": [{"name": "../../../etc"}, {"name": "eth0", "sandbox": "/x"}]}

HOSTILE_ENV = [
    ("CNI_CONTAINERID", "../../outside/x", "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "..", "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "a/../../b", "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "a\x00b", "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "a" * 257, "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "caf\u00e9", "invalid CNI_CONTAINERID"),
    ("CNI_CONTAINERID", "a\udcff", "invalid CNI_CONTAINERID"),  # undecodable byte in env
    ("CNI_IFNAME", "../eth0", "invalid CNI_IFNAME"),
    ("CNI_IFNAME", "..", "invalid CNI_IFNAME"),
    ("CNI_IFNAME", "eth0\x00", "invalid CNI_IFNAME"),
    ("CNI_IFNAME", "e" * 16, "invalid CNI_IFNAME"),
    ("CNI_IFNAME", "\u0435th0", "invalid CNI_IFNAME"),  # Cyrillic e
    ("CNI_IFNAME", "eth 0", "invalid CNI_IFNAME"),
    ("CNI_NETNS", "/var/run/netns/../../../etc/passwd", "invalid CNI_NETNS"),
    ("CNI_NETNS", "var/run/netns/x", "invalid CNI_NETNS"),
    ("CNI_NETNS", "/var/run/netns/x\x00", "invalid CNI_NETNS"),
    ("CNI_NETNS", "/proc/" + "a" * 1100, "invalid CNI_NETNS"),
    ("CNI_NETNS", "/etc/passwd", "invalid CNI_NETNS"),
    ("CNI_NETNS", "/var/run/netns/\u202ex", "invalid CNI_NETNS"),
    ("CNI_ARGS", "K8S_POD_NAME=../x", "invalid K8S_POD_NAME"),
    ("CNI_ARGS", "K8S_POD_NAME=" + "a" * 254, "invalid K8S_POD_NAME"),
    ("CNI_ARGS", "K8S_POD_NAME=w\u00e9b", "invalid K8S_POD_NAME"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=../kube-system", "invalid K8S_POD_NAMESPACE"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=a\x00", "invalid K8S_POD_NAMESPACE"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=" + "a" * 64, "invalid K8S_POD_NAMESPACE"),
]


def files_under(root: Path) -> set[str]:
    return {
        str(Path(d, f).relative_to(root)) for d, _dirs, names in os.walk(root) for f in names
    }


def run_plugin(tmp: Path, command: str, env: dict[str, str], **conf: Any) -> tuple[int, Any]:
    doc = {
        "cniVersion": "1.0.0", "name": "aws-cni", "type": "vpc-cni",
        "socketPath": str(tmp / "run" / "absent.sock"),
        "pendingDelDir": str(tmp / "run" / "pending-del"),
        "pluginLogFile": str(tmp / "log" / "plugin.log"), "pluginLogLevel": "debug", **conf,
    }  # fmt: skip
    out = io.StringIO()
    plugin = cni.Plugin({"CNI_COMMAND": command, **env}, json.dumps(doc).encode(), out)
    rc = plugin.run()
    text = out.getvalue()
    return rc, json.loads(text) if text else None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    return tmp_path


@pytest.mark.parametrize(("variable", "value", "msg"), HOSTILE_ENV)
def test_del_finishes_whatever_add_refused(
    tree: Path, variable: str, value: str, msg: str
) -> None:
    """Issue 16 item 13: DEL succeeds; a hostile value is never sent nor written anywhere (an
    id or interface ADD refuses holds nothing: no record; a netns or pod name is dropped)."""
    env = dict(GOOD)
    env[variable] = value
    rc, out = run_plugin(tree, "DEL", env, prevResult=PREV)
    assert (rc, out) == (0, None)
    files = files_under(tree) - {"log/plugin.log"}
    if variable in ("CNI_CONTAINERID", "CNI_IFNAME"):
        assert files == set()
    else:
        (record,) = files
        assert record.startswith("run/pending-del/")
        req = pd.read_pending_dels(str(tree / "run" / "pending-del"))[0]
        field = {"CNI_NETNS": "netns"}.get(variable) or (
            "pod_namespace" if "NAMESPACE" in value else "pod_name"
        )
        assert getattr(req, field) == ""
    log = (tree / "log" / "plugin.log").read_text()
    assert "\x00" not in log and "del:" in log


@pytest.mark.parametrize("command", ["ADD"])
@pytest.mark.parametrize(("variable", "value", "msg"), HOSTILE_ENV)
def test_plugin_rejects_hostile_names(
    tree: Path, command: str, variable: str, value: str, msg: str
) -> None:
    env = dict(GOOD)
    env[variable] = value
    rc, err = run_plugin(tree, command, env, prevResult=PREV)
    assert rc == 1
    assert err["code"] == cni.E_INVALID_ENV
    assert err["msg"] == msg
    assert err["details"] and len(err["details"]) < 300
    # Nothing but the plugin's own log: no record, nothing in outside/ or elsewhere.
    assert files_under(tree) == {"log/plugin.log"}
    log = (tree / "log" / "plugin.log").read_text()
    assert log.count("\n") == 1 and "\x00" not in log


def test_plugin_writes_a_valid_record_only_in_its_directory(tree: Path) -> None:
    rc, out = run_plugin(tree, "DEL", dict(GOOD))
    assert (rc, out) == (0, None)
    name = pd.pending_del_filename(GOOD["CNI_CONTAINERID"], GOOD["CNI_IFNAME"])
    assert files_under(tree) == {"log/plugin.log", f"run/pending-del/{name}"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("pendingDelDir", "/tmp/../etc"),
        ("pendingDelDir", "relative/dir"),
        ("pendingDelDir", "/tmp/x\x00"),
        ("pendingDelDir", "/" + "a" * 5000),
        ("socketPath", "/run/./x.sock"),
        ("pluginLogFile", "/var/log/../../etc/cron.d/x"),
        ("pluginLogFile", "log.txt"),
        ("pluginLogFile", 7),
    ],
)
def test_plugin_rejects_unnormalized_config_paths(tree: Path, key: str, value: Any) -> None:
    rc, err = run_plugin(tree, "DEL", dict(GOOD), **{key: value})
    assert rc == 1
    assert err["code"] == cni.E_INVALID_CONFIG
    assert key in err["msg"]
    assert files_under(tree) - {"log/plugin.log"} == set()


def test_prev_result_veth_with_traversal_is_not_deleted(tree: Path) -> None:
    """DEL while ipamd is down deletes the prevResult's host veth only if its name is valid."""
    seen: list[str] = []

    class Recording(cni.Plugin):
        def _delete_link(self, veth: str, tag: str) -> None:
            seen.append(veth)

    doc = {
        "cniVersion": "1.0.0", "name": "aws-cni", "prevResult": PREV,
        "socketPath": str(tree / "absent.sock"), "pendingDelDir": str(tree / "pending"),
        "pluginLogFile": "",
    }  # fmt: skip
    plugin = Recording({"CNI_COMMAND": "DEL", **GOOD}, json.dumps(doc).encode(), io.StringIO())
    assert plugin.run() == 0
    assert seen == []


# --------------------------------------------------------------------------- daemon

REQUEST = {
    "version": 1, "op": "add", "network_name": "aws-cni", "container_id": "c0001",
    "if_name": "eth0", "netns": "/var/run/netns/cni-1", "pod_namespace": "default",
    "pod_name": "web-0",
}  # fmt: skip

HOSTILE_FIELDS = [
    ("container_id", "../../../outside/x"),
    ("container_id", "a\x00b"),
    ("container_id", "a" * 257),
    ("container_id", "caf\u00e9"),
    ("if_name", "../x"),
    ("if_name", "x" * 16),
    ("if_name", "eth0\x00"),
    ("netns", "/var/run/netns/../../../etc/shadow"),
    ("netns", "/var/run/netns/x\x00"),
    ("netns", "/proc/" + "a" * 1100),
    ("pod_name", "../../x"),
    ("pod_namespace", "UPPER"),
    ("network_name", "../aws-cni"),
]


@pytest.fixture
def world() -> Any:
    w = World.create()
    yield w
    w.cleanup()


@pytest.fixture
async def daemon(world: World) -> Any:
    d = world.daemon()
    await d.start()
    yield d
    await d.stop()


@pytest.mark.parametrize(("field", "value"), HOSTILE_FIELDS)
@pytest.mark.parametrize("op", ["add", "del"])
async def test_daemon_rejects_hostile_names(
    world: World, daemon: Daemon, op: str, field: str, value: str
) -> None:
    before = files_under(Path(world.state_dir))
    frame = json.dumps({**REQUEST, "op": op, field: value}).encode() + b"\n"
    reply = p.decode_reply(await raw_call(world.socket_path, frame))
    assert not reply.ok
    assert reply.error_code == p.ERR_BAD_REQUEST
    assert field in reply.error_message and len(reply.error_message) < 300
    assert files_under(Path(world.state_dir)) == before
    ipam = daemon.executor.node.ipam
    assert ipam is not None and not list(ipam.allocations())


async def test_daemon_ignores_pending_records_that_are_symlinks(world: World) -> None:
    """A record planted as a symlink to a file elsewhere is neither read nor removed."""
    outside = Path(world.state_dir, "outside.json")
    req = p.Request(p.OP_DEL, network_name="aws-cni", container_id="c0001", if_name="eth0")
    outside.write_bytes(p.encode_request(req))
    pending = Path(world.state_dir, "pending-del")
    pending.mkdir(mode=0o700)
    (pending / pd.pending_del_filename("c0001", "eth0")).symlink_to(outside)
    d = world.daemon()
    await d.start()
    try:
        reply = await call(world.socket_path, p.Request(p.OP_STATUS))
        assert reply.ok
    finally:
        await d.stop()
    # Skipped (O_NOFOLLOW), so left in place rather than processed and removed.
    assert (pending / pd.pending_del_filename("c0001", "eth0")).is_symlink()
    assert outside.exists()


def test_netns_hints_file_is_hostile_input(tmp_path: Path) -> None:
    """The netns side file of earlier versions is read back at start: deep nesting does not
    crash the load, and only netns paths the socket would accept are kept."""
    from adapters.ipamd.hints import NetnsHints
    from ipamcore.model import AllocationKey

    path = tmp_path / "ipam.json.netns"
    path.write_text("[" * 100_000)
    hints = NetnsHints(str(path))
    hints.load_legacy()
    assert hints.get(AllocationKey("aws-cni", "c1", "eth0")) is None
    path.write_text(json.dumps({
        "aws-cni/c1/eth0": "/var/run/netns/cni-1",
        "aws-cni/c2/eth0": "/var/run/netns/../../../etc/passwd",
        "aws-cni/c3/eth0": "/etc/shadow",
        "aws-cni/c4/eth0": 7,
    }))  # fmt: skip
    hints.load_legacy()
    assert hints.get(AllocationKey("aws-cni", "c1", "eth0")) == "/var/run/netns/cni-1"
    for cid in ("c2", "c3", "c4"):
        assert hints.get(AllocationKey("aws-cni", cid, "eth0")) is None
