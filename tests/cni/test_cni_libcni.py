"""The plugin driven by a real libcni client (tests/cni/runner, Go) with the shipped conflist.

The shipped chain includes portmap. With no ``portMappings`` capability args portmap passes our
result through on ADD and has nothing to undo on DEL/CHECK, so the chain runs here against the
fake ipamd's fake result. Actual port mappings need a real netns, a real veth and iptables: they
belong to the end-to-end test with the real daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters import pending_dels as pd
from adapters import protocol as p
from tests.cni.helpers import SHIPPED_CONFLIST, SYSTEM_CNI_DIR
from tests.rigs.fake_ipamd import FakeIpamd

ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-abc12"


class Libcni:
    def __init__(self, runner: Path, bin_dirs: list[str], tmp: Path, conflist: Path) -> None:
        self.runner = runner
        self.bin_dirs = bin_dirs
        self.tmp = tmp
        self.conflist = conflist

    def __call__(
        self,
        cmd: str,
        container_id: str = "0f1e2d3c4b5a",
        netns: str = "/var/run/netns/cni-libcni-test",
        if_name: str = "eth0",
        args: str = ARGS,
    ) -> tuple[int, Any]:
        proc = subprocess.run(
            [
                str(self.runner),
                "-cmd", cmd,
                "-conflist", str(self.conflist),
                "-bin-dirs", ":".join(self.bin_dirs),
                "-cache-dir", str(self.tmp / "cache"),
                "-container-id", container_id,
                "-netns", netns,
                "-ifname", if_name,
                "-args", args,
            ],
            capture_output=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )  # fmt: skip
        assert proc.stdout, proc.stderr.decode()
        return proc.returncode, json.loads(proc.stdout)


def write_conflist(tmp: Path, server: FakeIpamd | None, with_portmap: bool = True) -> Path:
    conf = json.loads(SHIPPED_CONFLIST.read_text())
    ours = conf["plugins"][0]
    ours["socketPath"] = server.sock_path if server else str(tmp / "absent.sock")
    ours["pendingDelDir"] = str(tmp / "pending")
    ours["pluginLogFile"] = str(tmp / "plugin.log")
    if not with_portmap:
        conf["plugins"] = [ours]
    path = tmp / "10-test.conflist"
    path.write_text(json.dumps(conf))
    return path


def bin_dirs(plugin_bin_dir: Path, with_portmap: bool) -> list[str]:
    dirs = [str(plugin_bin_dir)]
    if with_portmap:
        if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
            pytest.skip(
                f"no portmap plugin in {SYSTEM_CNI_DIR} "
                "(apt-get install containernetworking-plugins)"
            )
        dirs.append(SYSTEM_CNI_DIR)
    return dirs


@pytest.mark.parametrize("with_portmap", [True, False], ids=["shipped-chain", "vpc-cni-only"])
def test_add_check_del_through_libcni(
    libcni_runner: Path,
    plugin_bin_dir: Path,
    fake_ipamd: FakeIpamd,
    short_tmp: Path,
    with_portmap: bool,
) -> None:
    dirs = bin_dirs(plugin_bin_dir, with_portmap)
    run = Libcni(
        libcni_runner, dirs, short_tmp, write_conflist(short_tmp, fake_ipamd, with_portmap)
    )

    rc, result = run("add")
    assert rc == 0, result
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"interface": 1, "address": "10.0.0.5/32", "gateway": "169.254.1.1"}]
    assert result["interfaces"][1] == {
        "name": "eth0",
        "mac": "0a:58:0a:00:00:05",
        "sandbox": "/var/run/netns/cni-libcni-test",
    }
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    add = fake_ipamd.requests[-1]
    assert (add.op, add.container_id, add.pod_namespace, add.pod_name, add.network_name) == (
        p.OP_ADD,
        "0f1e2d3c4b5a",
        "kube-system",
        "coredns-abc12",
        "aws-cni",
    )

    rc, out = run("check")
    assert rc == 0, out
    check = fake_ipamd.requests[-1]
    assert check.op == p.OP_CHECK
    assert check.prev_result is not None  # libcni's cached result, forwarded to ipamd
    assert check.prev_result["ips"][0]["address"] == "10.0.0.5/32"

    rc, out = run("del")
    assert rc == 0, out
    dele = fake_ipamd.requests[-1]
    assert dele.op == p.OP_DEL and dele.prev_result is not None
    assert dele.prev_result["interfaces"][0]["name"] == result["interfaces"][0]["name"]
    assert fake_ipamd.attachments == {}

    rc, out = run("check")  # after DEL libcni has no cached result: nothing to check against
    assert rc == 1


def test_libcni_sees_plugin_errors(
    libcni_runner: Path, plugin_bin_dir: Path, fake_ipamd: FakeIpamd, short_tmp: Path
) -> None:
    run = Libcni(
        libcni_runner,
        bin_dirs(plugin_bin_dir, False),
        short_tmp,
        write_conflist(short_tmp, fake_ipamd, False),
    )
    fake_ipamd.replies[p.OP_ADD] = p.Reply.failure(p.ERR_POOL_EMPTY, "no free address")
    rc, out = run("add")
    assert rc == 1
    assert out["error"]["code"] == 11 and out["error"]["details"] == "no free address"

    rc, out = run("add", netns="/etc/passwd")
    assert rc == 1 and out["error"]["code"] == 4

    rc, out = run("version")
    assert rc == 0 and out["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_libcni_del_with_daemon_down(
    libcni_runner: Path, plugin_bin_dir: Path, short_tmp: Path
) -> None:
    with FakeIpamd(str(short_tmp / "ipam.sock")) as server:
        up = write_conflist(short_tmp, server)
        run = Libcni(libcni_runner, bin_dirs(plugin_bin_dir, True), short_tmp, up)
        rc, result = run("add", container_id="downdel1")
        assert rc == 0, result
    # ipamd is gone; the runtime deletes the pod: DEL still succeeds and leaves a record.
    rc, out = run("del", container_id="downdel1")
    assert rc == 0, out
    (req,) = pd.read_pending_dels(str(short_tmp / "pending"))
    assert (req.container_id, req.if_name, req.pod_name) == ("downdel1", "eth0", "coredns-abc12")
    assert req.prev_result is not None
    assert req.prev_result["ips"][0]["address"] == "10.0.0.5/32"
