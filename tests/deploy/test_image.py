"""The aws-node image, built by deploy/image.py with podman (runc, a private store), and its
entrypoints run in containers the way the DaemonSet runs them: hostPath-style bind mounts of
temp dirs, a network namespace made for each test standing in for the node (the machine's
own interfaces and sysctls are never touched).

- init (privileged, as in the chart) installs the plugin and upstream's four plugins, and
  sets rp_filter on the interface whose MAC instance metadata names, ip_forward and
  tcp_early_demux, in the node's namespace;
- the installed plugin runs in a root filesystem without Python, driven by the libcni runner
  with an empty environment;
- the main container, with only NET_ADMIN, NET_RAW and SYS_ADMIN (the chart's), writes the
  conflist once ipamd serves, answers the brief's commands (cat ipam.json, wget /stats,
  ipamctl), serves a real ADD whose veth end it puts in a pod namespace, and stops cleanly
  on SIGTERM leaving the conflist; the aws-cni container shows the plugin's log.

Marked ``image``; skipped with the reason when podman, runc, mmdebstrap or root are missing
(``./dev image`` installs them). The first build takes about two minutes (the base root
filesystem, cached outside the work tree: deploy/image.py); later ones seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import protocol as p
from deploy import image
from tests.rigs.fake_ipamd import FakeIpamd

pytestmark = pytest.mark.image
REPO = Path(__file__).resolve().parents[2]
MAC = "0a:58:0a:f4:00:01"
IMDS_STUB = REPO / "tests" / "deploy" / "imds_stub.py"


@pytest.fixture(scope="session")
def built(aws_node_image: tuple[image.Store, str]) -> tuple[image.Store, str]:
    return aws_node_image


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def in_ns(ns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


@contextlib.contextmanager
def container(store: image.Store, name: str, *args: str) -> Iterator[str]:
    store.podman("run", "-d", "--name", name, *args)
    try:
        yield name
    finally:
        store.podman("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture
def tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dpli-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_init(store: image.Store, tag: str, ns: str, mac: str, host_bin: Path, *env: str) -> None:
    """The chart's init container (privileged) in the node's namespace, with an IMDSv2 stub
    in that namespace naming ``mac`` as the primary ENI's."""
    imds = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(IMDS_STUB),
                             "18181", mac])  # fmt: skip
    try:
        time.sleep(0.5)
        done = store.podman(
            "run", "--rm", "--network", f"ns:/var/run/netns/{ns}", "--privileged",
            "-e", "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:18181", *env,
            "-v", f"{host_bin}:/host/opt/cni/bin", tag, "aws-vpc-cni-init", check=False,
        )  # fmt: skip
    finally:
        imds.terminate()
        imds.wait()
    assert done.returncode == 0, done.stderr
    assert "CNI init container done" in done.stderr


@pytest.fixture(scope="module")
def node_bin(built: tuple[image.Store, str]) -> Iterator[tuple[Path, str]]:
    """A node's /opt/cni/bin after the init container ran in the node's namespace; yields
    it and the namespace's name (kept for the sysctl checks)."""
    store, tag = built
    root = Path(tempfile.mkdtemp(prefix="dpln-", dir="/tmp"))
    host_bin = root / "opt" / "cni" / "bin"
    host_bin.mkdir(parents=True)
    try:
        with netns(f"dpl-init-{os.getpid()}") as ns:
            for name, extra in (("ens5", ["address", MAC]), ("ens6", [])):
                subprocess.run(["ip", "-n", ns, "link", "add", name, *extra, "type", "veth",
                                "peer", "name", f"{name}p"], check=True)  # fmt: skip
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv4.tcp_early_demux=1")
            run_init(store, tag, ns, MAC, host_bin, "-e", "DISABLE_TCP_EARLY_DEMUX=true")
            yield host_bin, ns
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_init_installs_plugins_and_sets_sysctls(node_bin: tuple[Path, str]) -> None:
    host_bin, ns = node_bin
    names = sorted(p.name for p in host_bin.iterdir())
    assert names == ["bandwidth", "host-local", "loopback", "portmap", "vpc-cni", "vpc-cni.d"]
    assert os.readlink(host_bin / "vpc-cni") == "vpc-cni.d/bin/vpc-cni"
    for name in ("bandwidth", "host-local", "loopback", "portmap"):
        assert os.access(host_bin / name, os.X_OK) and not (host_bin / name).is_symlink()
    assert in_ns(ns, "cat", "/proc/sys/net/ipv4/conf/ens5/rp_filter") == "2"
    assert in_ns(ns, "cat", "/proc/sys/net/ipv4/conf/ens6/rp_filter") != "2"
    assert in_ns(ns, "cat", "/proc/sys/net/ipv4/ip_forward") == "1"
    assert in_ns(ns, "cat", "/proc/sys/net/ipv4/tcp_early_demux") == "0"


def test_plugin_runs_without_python(
    built: tuple[image.Store, str], node_bin: tuple[Path, str], libcni_runner: Path, tmp: Path
) -> None:
    """The installed vpc-cni in a root filesystem with Python removed, exec'd by libcni
    with an empty environment, talking to a (fake) ipamd through the mounted socket."""
    store, tag = built
    host_bin, _ = node_bin
    for d in ("run", "conf", "log"):
        (tmp / d).mkdir()
    shutil.copy2(libcni_runner, tmp / "conf" / "runner")
    conflist = {"cniVersion": "1.0.0", "name": "aws-cni", "plugins": [{
        "type": "vpc-cni", "socketPath": "/var/run/aws-node/ipam.sock",
        "pendingDelDir": "/var/run/aws-node/pending-del",
        "pluginLogFile": "/var/log/aws-routed-eni/plugin.log", "mtu": 9001}]}  # fmt: skip
    (tmp / "conf" / "10-aws.conflist").write_text(json.dumps(conflist))
    runner = ("env -i /conf/runner -conflist /conf/10-aws.conflist -bin-dirs /opt/cni/bin"
              " -cache-dir /tmp/cache -container-id 0f1e2d3c -netns /var/run/netns/pod1"
              " -ifname eth0 -args 'K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1'")
    script = (
        "rm -rf /usr/bin/python3* /usr/lib/python3* /opt/ipamcore /usr/local/bin/* "
        "/usr/lib/x86_64-linux-gnu/libpython3* && ! command -v python3 && "
        "! ls /usr/bin/python* 2>/dev/null && "
        f"{runner} -cmd add && echo @@ && {runner} -cmd check && echo @@ && {runner} -cmd del"
    )
    with FakeIpamd(str(tmp / "run" / "ipam.sock")) as server:
        done = store.podman(
            "run", "--rm", "--network", "none",
            "-v", f"{host_bin}:/opt/cni/bin:ro", "-v", f"{tmp / 'conf'}:/conf:ro",
            "-v", f"{tmp / 'run'}:/var/run/aws-node",
            "-v", f"{tmp / 'log'}:/var/log/aws-routed-eni",
            tag, "bash", "-c", script, check=False,
        )  # fmt: skip
        ops = [r.op for r in server.requests]
        pods = {r.pod_name for r in server.requests if r.op == p.OP_ADD}
    assert done.returncode == 0, (done.stdout, done.stderr)
    add, check, delete = done.stdout.split("@@")
    assert json.loads(add)["ips"][0]["address"] == "10.0.0.5/32"
    assert json.loads(check) == {} and json.loads(delete) == {}
    assert ops == ["add", "check", "del"] and pods == {"web-1"}
    log = (tmp / "log" / "plugin.log").read_text()
    assert "ADD" in log or "add" in log
    # ipamd down: DEL still succeeds and leaves a pending-DEL record for ipamd's next start
    done = store.podman(
        "run", "--rm", "--network", "none", "-v", f"{host_bin}:/opt/cni/bin:ro",
        "-v", f"{tmp / 'conf'}:/conf:ro", "-v", f"{tmp / 'run'}:/var/run/aws-node",
        "-v", f"{tmp / 'log'}:/var/log/aws-routed-eni", tag, "bash", "-c",
        f"rm -rf /usr/bin/python3* /usr/lib/python3* /opt/ipamcore && {runner} -cmd del",
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert len(list((tmp / "run" / "pending-del").iterdir())) == 1


def chart_capabilities() -> list[str]:
    """The aws-node container's capabilities as the chart renders them (the least privilege
    claimed there is what this test grants), as podman flags."""
    pytest.importorskip("helm_python", reason="pip install -e '.[test]' (helm-python-sdk)")
    from deploy import chart

    ds = next(o for o in chart.objects(chart.render()) if o["kind"] == "DaemonSet")
    node = ds["spec"]["template"]["spec"]["containers"][0]
    assert "privileged" not in node["securityContext"]
    caps = node["securityContext"]["capabilities"]["add"]
    assert caps == ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
    return [flag for cap in caps for flag in ("--cap-add", cap)]


def fake_primary_ip() -> str:
    from adapters.ipamd.wiring import fake_cloud_ports

    _, metadata, _ = fake_cloud_ports("m5.large", lambda record: None, time.time)
    primary = next(e for e in metadata.enis() if e.device_index == 0)
    return str(primary.primary_ip)


def test_main_container_with_least_privileges(
    built: tuple[image.Store, str], tmp: Path
) -> None:
    store, tag = built
    dirs = {d: tmp / d for d in ("bin", "net.d", "run", "log")}
    for d in dirs.values():
        d.mkdir()
    tag_ns = f"dpl-main-{os.getpid()}"
    pod_ns = f"dpl-pod-{os.getpid()}"
    with netns(tag_ns) as ns, netns(pod_ns):
        for cmd in (["link", "add", "eth0", "type", "veth", "peer", "name", "uplink0"],
                    ["addr", "add", f"{fake_primary_ip()}/17", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["link", "set", "uplink0", "up"]):  # fmt: skip
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        mac = in_ns(ns, "cat", "/sys/class/net/eth0/address")
        run_init(store, tag, ns, mac, dirs["bin"])  # ip_forward, rp_filter: /proc/sys is RO below
        began = time.monotonic()
        with container(
            store, f"dpl-aws-node-{os.getpid()}", "--network", f"ns:/var/run/netns/{ns}",
            "--cap-drop", "ALL", *chart_capabilities(),
            "-v", f"{dirs['bin']}:/host/opt/cni/bin", "-v", f"{dirs['net.d']}:/host/etc/cni/net.d",
            "-v", f"{dirs['run']}:/var/run/aws-node",
            "-v", f"{dirs['log']}:/host/var/log/aws-routed-eni",
            "-v", "/var/run/netns:/var/run/netns:rslave",
            "-e", "IPAMD_CLOUD=fake", "-e", "IPAMD_DATAPATH=linux",
            "-e", "AWS_VPC_K8S_CNI_LOGLEVEL=INFO", "-e", "IPAMD_LOG_FORMAT=json",
            "-e", "AWS_VPC_K8S_CNI_LOG_FILE=/host/var/log/aws-routed-eni/ipamd.log",
            "-e", "AWS_VPC_K8S_PLUGIN_LOG_LEVEL=DEBUG",
            tag,
        ) as name:  # fmt: skip
            conflist = dirs["net.d"] / "10-aws.conflist"
            while not conflist.exists():
                state = store.podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
                assert state == "true", store.podman("logs", name, check=False).stderr
                assert time.monotonic() - began < 90
                time.sleep(0.1)
            startup = time.monotonic() - began
            conf = json.loads(conflist.read_text())
            assert conf["name"] == "aws-cni" and conf["plugins"][0]["type"] == "vpc-cni"
            assert conf["plugins"][0]["pluginLogLevel"] == "debug"

            def exec_(*cmd: str) -> str:
                done = store.podman("exec", name, *cmd, check=False)
                assert done.returncode == 0, (cmd, done.stdout, done.stderr)
                return done.stdout

            assert exec_("ipamctl", "health", "--ready").startswith("ok")
            assert "allocations" in json.loads(exec_("cat", "/var/run/aws-node/ipam.json"))
            stats = json.loads(exec_("wget", "-q", "-O-", "127.0.0.1:61679/stats"))
            assert stats["total"] >= 1
            assert "total" in exec_("ipamctl", "stats")

            # a real ADD: the plugin from the node's bin dir, on the host, empty environment
            plugin_conf = {**conf["plugins"][0], "cniVersion": "1.0.0", "name": "aws-cni",
                           "socketPath": str(dirs["run"] / "ipam.sock"),
                           "pluginLogFile": str(dirs["log"] / "plugin.log")}  # fmt: skip
            cni_env = {"CNI_CONTAINERID": "c0ffee01", "CNI_IFNAME": "eth0",
                       "CNI_NETNS": f"/var/run/netns/{pod_ns}", "CNI_PATH": str(dirs["bin"]),
                       "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1"}  # fmt: skip
            add = subprocess.run(
                [str(dirs["bin"] / "vpc-cni")], input=json.dumps(plugin_conf), text=True,
                env={**cni_env, "CNI_COMMAND": "ADD"}, capture_output=True, timeout=60,
            )  # fmt: skip
            assert add.returncode == 0, add.stdout
            address = json.loads(add.stdout)["ips"][0]["address"].split("/")[0]
            assert address in in_ns(pod_ns, "ip", "-4", "-o", "addr", "show", "eth0")
            assert address in exec_("ipamctl", "pods")
            deleted = subprocess.run(
                [str(dirs["bin"] / "vpc-cni")], input=json.dumps(plugin_conf), text=True,
                env={**cni_env, "CNI_COMMAND": "DEL"}, capture_output=True, timeout=60,
            )  # fmt: skip
            assert deleted.returncode == 0, deleted.stdout

            # the aws-cni container of the chart: the plugin's log on its stdout
            with container(
                store, f"dpl-aws-cni-{os.getpid()}", "--network", "none", "--cap-drop", "ALL",
                "--read-only", "-v", f"{dirs['log']}:/var/log/aws-routed-eni:ro",
                tag, "tail", "-n", "200", "-F", "/var/log/aws-routed-eni/plugin.log",
            ) as tail:  # fmt: skip
                deadline = time.monotonic() + 10
                while "web-1" not in store.podman("logs", tail).stdout:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)

            store.podman("stop", "-t", "20", name)
            code = store.podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
            logs = store.podman("logs", name).stderr
            assert code == "0", logs[-3000:]
            assert conflist.exists()
            assert '"event": "ready"' in logs or '"event":"ready"' in logs  # -c aws-node
            assert "wrote" in logs and "SIGTERM" in logs
            assert "ready" in (dirs["log"] / "ipamd.log").read_text()
    print(f"container start to conflist: {startup:.2f} s")
