"""Cold exec of the vpc-cni plugin for ADD (through the socket, against a fake ipamd) beside a
bare ``python -c "import json, socket"`` in the same environment; then ADD with the real
datapath.

Runs what kubelet's runtime would run: the ``vpc-cni`` console script installed beside this
interpreter (``python -m adapters.cni.plugin`` when it is missing). The two commands are run
alternately, N times each; the medians and their ratio are printed.

The second half (root, ``ip netns``): vpc-ipamd with the Linux datapath (``IPAMD_DATAPATH=linux``)
and the fake cloud (c5.18xlarge, pods on the primary ENI), its host side in a "node" network
namespace made for the run (``IPAMD_HOST_NETNS``; the machine's own links and rules are not
touched), and a durable checkpoint. Each pod gets a real namespace
(``ipcbench-<pid>-<n>``); ADD goes through the plugin executable and is timed (exec, socket,
address, veth pair, addresses, routes, rules, durable checkpoint); at most ``--window`` pods
live at once, the oldest is deleted (DEL timed too) to make room. p50 and p99 of ADD and DEL
are printed. Every namespace made is deleted at the end, whatever happened. Without root
this half says why it is skipped.

The self-contained plugin (its own interpreter, deploy/plugin_bundle.py; what the init
container installs on nodes without Python) is measured the same way, taken from the aws-node
image (``./dev image``; ``--bundle DIR`` names an unpacked ``vpc-cni.d`` instead), beside a
bare ``python3 -c "import json, socket"`` of the interpreter it carries (Debian's
``/usr/bin/python3.11``, when this machine has it). Without the image it says why.

The last line is one JSON object::

    {"plugin_add_p50_ms": .., "python_import_p50_ms": .., "ratio": .., "target_ratio": 1.5,
     ..., "self_contained": {"plugin_add_p50_ms": .., "ratio": .., "ratio_same_python": ..}
                           or {"skipped": "<why>"},
     "real_datapath": {"pods": 50, "add_p50_ms": .., "add_p99_ms": .., ...}
                           or {"skipped": "<why>"}}

Usage: python benchmarks/plugin_exec.py [--runs N] [--pods N] [--window N] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adapters import protocol as p  # noqa: E402
from tests.rigs.fake_ipamd import FakeIpamd  # noqa: E402

TARGET_RATIO = 1.5
INSTANCE_TYPE = "c5.18xlarge"  # 49 secondary addresses on the primary ENI


def plugin_command() -> tuple[list[str], str]:
    script = Path(sys.executable).parent / "vpc-cni"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], "console-script"
    return [sys.executable, "-m", "adapters.cni.plugin"], "python -m"


def timed(cmd: list[str], env: dict[str, str], stdin: bytes, expect: bytes) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000.0
    if proc.returncode != 0 or expect not in proc.stdout:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stdout!r} {proc.stderr!r}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@contextlib.contextmanager
def bundled_plugin(given: str | None) -> Iterator[tuple[list[str] | None, str]]:
    """(command, note): the self-contained plugin, from ``given`` or copied out of the
    image; (None, why) when neither is possible."""
    if given:
        yield [str(Path(given) / "bin" / "vpc-cni")], given
        return
    from deploy import image

    reason = image.unavailable_reason()
    if reason:
        yield None, reason
        return
    store = image.Store(image.default_cache() / "store")
    store.ensure()
    if not store.has_image(image.DEFAULT_TAG):
        yield None, f"no {image.DEFAULT_TAG} image: run ./dev image"
        return
    tmp = Path(tempfile.mkdtemp(prefix="vpccni-bundle-"))
    name = f"bench-bundle-{os.getpid()}"
    try:
        store.podman("create", "--name", name, image.DEFAULT_TAG, "true")
        store.podman("cp", f"{name}:/app/vpc-cni.d", str(tmp))
        yield [str(tmp / "vpc-cni.d" / "bin" / "vpc-cni")], f"from {image.DEFAULT_TAG}"
    finally:
        store.podman("rm", "-f", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def real_datapath_skip_reason() -> str:
    """Empty when the real-datapath half can run, else why not."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "ip netns is not available"
    return ""


def fake_primary_ip() -> str:
    """The primary address the daemon's fake cloud gives its instance (deterministic)."""
    from adapters.ipamd.wiring import fake_cloud_ports

    _, metadata, _ = fake_cloud_ports(INSTANCE_TYPE, lambda record: None, time.time)
    primary = next(e for e in metadata.enis() if e.device_index == 0)
    return str(primary.primary_ip)


@contextlib.contextmanager
def namespaces() -> Iterator[list[str]]:
    """A list to record the namespaces made; all of them are deleted on exit."""
    made: list[str] = []
    try:
        yield made
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def make_netns(made: list[str], name: str) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    made.append(name)
    return f"/var/run/netns/{name}"


def make_node_netns(made: list[str], name: str, primary_ip: str) -> str:
    """The node's host side: lo and an eth0 holding the primary address."""
    path = make_netns(made, name)
    run = ["ip", "netns", "exec", name]
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0"],
        ["ip", "addr", "add", f"{primary_ip}/17", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "link", "set", "uplink0", "up"],
    ):
        subprocess.run([*run, *cmd], check=True, capture_output=True)
    return path


def wait_ready(sock: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vpc-ipamd exited with {proc.returncode} (see its log)")
        with contextlib.suppress(p.ProtocolError):
            reply = p.request(sock, p.Request(p.OP_STATUS, network_name="aws-cni"), 2)
            if reply.ok and (reply.result or {}).get("available", 0) >= 1:
                return
        time.sleep(0.05)
    raise SystemExit("vpc-ipamd not ready in time")


def real_datapath(cmd: list[str], pods: int, window: int) -> dict[str, Any]:
    """ADD (and DEL) through the plugin against vpc-ipamd with the Linux datapath."""
    reason = real_datapath_skip_reason()
    if reason:
        return {"skipped": reason}
    tag = f"{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="vpccni-realdp-", dir="/tmp"))
    add_ms: list[float] = []
    del_ms: list[float] = []
    daemon: subprocess.Popen[bytes] | None = None
    log = open(tmp / "ipamd.log", "ab")  # noqa: SIM115
    try:
        with namespaces() as made:
            node = make_node_netns(made, f"ipcbench-node-{tag}", fake_primary_ip())
            sock = str(tmp / "ipam.sock")
            env = {
                **os.environ,
                "IPAMD_CLOUD": "fake", "IPAMD_FAKE_INSTANCE_TYPE": INSTANCE_TYPE,
                "IPAMD_DATAPATH": "linux", "IPAMD_HOST_NETNS": node,
                "MAX_ENI": "1", "WARM_ENI_TARGET": "0", "WARM_IP_TARGET": "8",
                "IP_COOLDOWN_PERIOD": "0",
                "AWS_VPC_K8S_CNI_BACKING_STORE": str(tmp / "ipam.json"),
                "IPAMD_SOCKET": sock, "IPAMD_PENDING_DEL_DIR": str(tmp / "pending"),
                "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
                "DISABLE_LEAKED_ENI_CLEANUP": "true",
                "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
            }  # fmt: skip
            daemon = subprocess.Popen(
                [sys.executable, "-m", "adapters.ipamd.main"], env=env, stdout=log, stderr=log
            )
            wait_ready(sock, daemon)
            conf = json.dumps({
                "cniVersion": "1.0.0", "name": "aws-cni", "type": "vpc-cni",
                "socketPath": sock, "pendingDelDir": str(tmp / "pending"),
                "pluginLogFile": str(tmp / "plugin.log"), "pluginLogLevel": "info",
            }).encode()  # fmt: skip
            alive: list[tuple[int, str, str, str]] = []  # (n, netns name, path, container)

            def plugin(command: str, n: int, netns: str, container: str) -> tuple[float, bytes]:
                plugin_env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0",
                    "CNI_NETNS": netns, "CNI_PATH": str(Path(cmd[0]).parent),
                    "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-{n}",
                }  # fmt: skip
                start = time.perf_counter()
                done = subprocess.run(cmd, input=conf, env=plugin_env, capture_output=True)
                elapsed = (time.perf_counter() - start) * 1000.0
                if done.returncode != 0:
                    raise SystemExit(f"vpc-cni {command} pod-{n} failed: {done.stdout!r}")
                return elapsed, done.stdout

            for n in range(pods):
                if len(alive) >= window:
                    old_n, name, path, container = alive.pop(0)
                    del_ms.append(plugin("DEL", old_n, path, container)[0])
                    subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)
                    made.remove(name)
                name = f"ipcbench-{tag}-{n}"
                path = make_netns(made, name)
                container = f"bench{tag}x{n}"
                elapsed, out = plugin("ADD", n, path, container)
                add_ms.append(elapsed)
                if n == 0:  # the datapath is real: the address is on the pod's eth0
                    ip = json.loads(out)["ips"][0]["address"]
                    shown = subprocess.run(
                        ["ip", "netns", "exec", name, "ip", "-4", "-o", "addr", "show", "eth0"],
                        capture_output=True, text=True, check=False,
                    ).stdout  # fmt: skip
                    if ip not in shown:
                        raise SystemExit(f"pod-0: {ip} not on eth0 in {name}: {shown!r}")
                alive.append((n, name, path, container))
            for n, _name, path, container in alive:
                del_ms.append(plugin("DEL", n, path, container)[0])
            alive.clear()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            daemon = None
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "pods": pods,
        "window": window,
        "instance_type": INSTANCE_TYPE,
        "add_p50_ms": round(statistics.median(add_ms), 2),
        "add_p99_ms": round(percentile(add_ms, 0.99), 2),
        "del_p50_ms": round(statistics.median(del_ms), 2),
        "del_p99_ms": round(percentile(del_ms, 0.99), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pods", type=int, default=50, help="pods ADDed with the real datapath")
    ap.add_argument("--window", type=int, default=16, help="pods alive at once (real datapath)")
    ap.add_argument("--bundle", help="an unpacked vpc-cni.d (default: from the image)")
    opts = ap.parse_args()
    bundle_ctx = bundled_plugin(opts.bundle)
    bundle_cmd, bundle_note = bundle_ctx.__enter__()

    cmd, launcher = plugin_command()
    tmp = Path(tempfile.mkdtemp(prefix="vpccni-bench-"))
    try:
        with FakeIpamd(str(tmp / "ipam.sock")) as server:
            conf = {
                "cniVersion": "1.0.0",
                "name": "aws-cni",
                "type": "vpc-cni",
                "socketPath": server.sock_path,
                "pendingDelDir": str(tmp / "pending"),
                "pluginLogFile": str(tmp / "plugin.log"),
                "pluginLogLevel": "info",
            }
            stdin = json.dumps(conf).encode()
            base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            plugin_env = {
                **base_env,
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": "bench0",
                "CNI_IFNAME": "eth0",
                "CNI_NETNS": "/var/run/netns/cni-bench",
                "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench",
                "CNI_PATH": str(Path(cmd[0]).parent),
            }
            baseline = [sys.executable, "-c", "import json, socket"]
            debian = Path("/usr/bin/python3.11")
            same_python = [str(debian), "-c", "import json, socket"] if debian.exists() else None
            plugin_ms: list[float] = []
            python_ms: list[float] = []
            bundle_ms: list[float] = []
            debian_ms: list[float] = []
            for i in range(opts.warmup + opts.runs):
                p_ms = timed(cmd, plugin_env, stdin, b'"10.0.0.5/32"')
                b_ms = timed(baseline, base_env, b"", b"")
                if bundle_cmd is not None:  # the node's case: an empty environment but CNI_*
                    s_env = {k: v for k, v in plugin_env.items() if k != "PATH"}
                    s_ms = timed(bundle_cmd, s_env, stdin, b'"10.0.0.5/32"')
                d_ms = timed(same_python, base_env, b"", b"") if same_python else 0.0
                if i >= opts.warmup:
                    plugin_ms.append(p_ms)
                    python_ms.append(b_ms)
                    if bundle_cmd is not None:
                        bundle_ms.append(s_ms)
                    debian_ms.append(d_ms)
            served = len(server.requests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        bundle_ctx.__exit__(None, None, None)

    plugin_p50 = statistics.median(plugin_ms)
    python_p50 = statistics.median(python_ms)
    ratio = plugin_p50 / python_p50
    print(f"launcher: {launcher} ({' '.join(cmd)}); {served} ADDs served by the fake ipamd")
    for label, p50, xs in (
        ("plugin ADD", plugin_p50, plugin_ms),
        ("python -c", python_p50, python_ms),
    ):
        print(f"{label:<11} p50 {p50:7.2f} ms  min {min(xs):7.2f}  max {max(xs):7.2f}")
    print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    self_contained: dict[str, Any]
    if bundle_ms:
        bundle_p50 = statistics.median(bundle_ms)
        self_contained = {
            "plugin_add_p50_ms": round(bundle_p50, 2),
            "ratio": round(bundle_p50 / python_p50, 3),
            "source": bundle_note,
        }
        print(f"self-contained plugin ({bundle_note}) ADD p50 {bundle_p50:7.2f} ms  "
              f"min {min(bundle_ms):7.2f}  ratio {bundle_p50 / python_p50:.2f}")  # fmt: skip
        if same_python:
            debian_p50 = statistics.median(debian_ms)
            self_contained["same_python_p50_ms"] = round(debian_p50, 2)
            self_contained["ratio_same_python"] = round(bundle_p50 / debian_p50, 3)
            print(f"/usr/bin/python3.11 -c  p50 {debian_p50:7.2f} ms  (the interpreter it carries);"
                  f" ratio {bundle_p50 / debian_p50:.2f}")  # fmt: skip
    else:
        self_contained = {"skipped": bundle_note}
        print(f"self-contained plugin: skipped ({bundle_note})")
    real = real_datapath(cmd, opts.pods, opts.window)
    if "skipped" in real:
        print(f"real datapath ADD: skipped ({real['skipped']})")
    else:
        print(f"real datapath ({real['pods']} pods, vpc-ipamd with IPAMD_DATAPATH=linux): "
              f"ADD p50 {real['add_p50_ms']:.2f} ms  p99 {real['add_p99_ms']:.2f} ms; "
              f"DEL p50 {real['del_p50_ms']:.2f} ms  p99 {real['del_p99_ms']:.2f} ms")  # fmt: skip
    print(
        json.dumps(
            {
                "plugin_add_p50_ms": round(plugin_p50, 2),
                "python_import_p50_ms": round(python_p50, 2),
                "ratio": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "runs": opts.runs,
                "launcher": launcher,
                "self_contained": self_contained,
                "real_datapath": real,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
