"""The entrypoints and ``ipamctl health`` without containers: host directories, /proc/sys and
/sys/class/net stand-ins under temp dirs, an IMDSv2 stub, ipamd as a subprocess (the real one
with the fake backends, or a fake that starts late)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters import protocol as p
from adapters.entrypoints import init, main
from adapters.ipamctl import health
from adapters.ipamd.settings import state_env
from tests.rigs.fake_ipamd import FakeIpamd

REPO = Path(__file__).resolve().parents[2]
MAC = "0a:1b:2c:3d:4e:5f"


class _Imds(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        ok = self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds")  # fmt: skip
        self.send_response(200 if ok else 400)
        self.end_headers()
        self.wfile.write(b"tok")

    def do_GET(self) -> None:
        ok = self.headers.get("X-aws-ec2-metadata-token") == "tok"
        body = MAC.upper().encode() if self.path == "/latest/meta-data/mac" else b""
        self.send_response(200 if ok and body else 401 if not ok else 404)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Imds)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="dpl-", dir="/tmp")  # socket paths stay short
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def fake_app(root: Path) -> Path:
    """An image's /app: the plugin bundle and upstream's four helper plugins."""
    app = root / "app"
    (app / "vpc-cni.d" / "bin").mkdir(parents=True)
    (app / "vpc-cni.d" / "bin" / "vpc-cni").write_text("#!/bin/sh\necho plugin\n")
    (app / "vpc-cni.d" / "bin" / "vpc-cni").chmod(0o755)
    (app / "vpc-cni.d" / "lib").mkdir()
    (app / "vpc-cni.d" / "lib" / "libz.so.1").write_bytes(b"\x7fELF")
    for name in init.UPSTREAM_BINS:
        (app / name).write_text(f"#!/bin/sh\necho {name}\n")
    return app


def fake_host(root: Path) -> tuple[Path, Path]:
    net = root / "sys" / "class" / "net"
    for name, mac in (("lo", "00:00:00:00:00:00"), ("ens5", MAC), ("ens6", "0a:00:00:00:00:01")):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
    proc = root / "proc" / "sys"
    for key, value in (
        ("net/ipv4/ip_forward", "0"),
        ("net/ipv4/conf/ens5/rp_filter", "1"), ("net/ipv4/conf/ens6/rp_filter", "1"),
        ("net/ipv4/tcp_early_demux", "1"), ("net/ipv6/conf/all/disable_ipv6", "1"),
        ("net/ipv6/conf/all/forwarding", "0"), ("net/ipv6/conf/ens5/accept_ra", "1"),
    ):  # fmt: skip
        (proc / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / key).write_text(value + "\n")
    return net, proc


def run_init(tmp: Path, imds: str, **env: str) -> int:
    net, proc = tmp / "sys" / "class" / "net", tmp / "proc" / "sys"
    environ = {"HOST_CNI_BIN_PATH": str(tmp / "host" / "opt" / "cni" / "bin"),
               "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds, **env}  # fmt: skip
    argv = ["--bin-source", str(tmp / "app"), "--sys-class-net", str(net),
            "--proc-sys", str(proc)]  # fmt: skip
    return init.main(argv, environ)


def test_init_installs_and_sets_sysctls(tmp_path: Path, imds: str) -> None:
    fake_app(tmp_path)
    _, proc = fake_host(tmp_path)
    assert run_init(tmp_path, imds, DISABLE_TCP_EARLY_DEMUX="true", ENABLE_IPv6="true") == 0
    host_bin = tmp_path / "host" / "opt" / "cni" / "bin"
    assert os.readlink(host_bin / "vpc-cni") == "vpc-cni.d/bin/vpc-cni"
    assert (host_bin / "vpc-cni").read_text() == "#!/bin/sh\necho plugin\n"
    assert os.access(host_bin / "vpc-cni", os.X_OK)
    assert (host_bin / "vpc-cni.d" / "lib" / "libz.so.1").read_bytes() == b"\x7fELF"
    for name in init.UPSTREAM_BINS:
        assert (host_bin / name).read_text() == f"#!/bin/sh\necho {name}\n"
        assert (host_bin / name).stat().st_mode & 0o777 == 0o755
    values = {k: (proc / k).read_text().strip() for k in (
        "net/ipv4/ip_forward", "net/ipv4/conf/ens5/rp_filter", "net/ipv4/conf/ens6/rp_filter",
        "net/ipv4/tcp_early_demux", "net/ipv6/conf/all/disable_ipv6",
        "net/ipv6/conf/all/forwarding", "net/ipv6/conf/ens5/accept_ra")}  # fmt: skip
    assert values == {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/ens5/rp_filter": "2",  # the primary, found by its MAC
        "net/ipv4/conf/ens6/rp_filter": "1",  # others untouched
        "net/ipv4/tcp_early_demux": "0",
        "net/ipv6/conf/all/disable_ipv6": "0",
        "net/ipv6/conf/all/forwarding": "1",
        "net/ipv6/conf/ens5/accept_ra": "2",
    }
    # again: nothing changes, still 0; an upgraded plugin replaces the old one
    assert run_init(tmp_path, imds) == 0
    assert (proc / "net/ipv4/tcp_early_demux").read_text().strip() == "1"
    assert (proc / "net/ipv6/conf/all/disable_ipv6").read_text().strip() == "0"  # not reverted
    (tmp_path / "app" / "vpc-cni.d" / "bin" / "vpc-cni").write_text("#!/bin/sh\necho v2\n")
    assert run_init(tmp_path, imds) == 0
    assert (host_bin / "vpc-cni").read_text() == "#!/bin/sh\necho v2\n"
    assert not [p for p in host_bin.iterdir() if p.name.startswith(".")]


def test_init_fails_cleanly(tmp_path: Path, imds: str) -> None:
    fake_app(tmp_path)
    fake_host(tmp_path)
    shutil.rmtree(tmp_path / "sys" / "class" / "net" / "ens5")
    assert run_init(tmp_path, imds) == 1  # no interface has the MAC
    assert run_init(tmp_path, "http://127.0.0.1:9") == 1  # no metadata
    fake_host(tmp_path / "other")
    (tmp_path / "app" / "portmap").unlink()
    assert run_init(tmp_path, imds) == 1  # a required executable is missing


# ------------------------------------------------------------------------- conflist


def template() -> str:
    return (REPO / "adapters" / "cni" / "10-vpc-cni.conflist").read_text()


def test_conflist_follows_upstreams_variables() -> None:
    conf = main.render_conflist(template(), {})
    assert conf["name"] == "aws-cni"
    assert [pl["type"] for pl in conf["plugins"]] == ["vpc-cni", "portmap"]
    ours = conf["plugins"][0]
    assert (ours["mtu"], ours["socketPath"]) == (9001, "/var/run/aws-node/ipam.sock")
    env = {"AWS_VPC_ENI_MTU": "1500", "AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/x.log",
           "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG", "ENABLE_BANDWIDTH_PLUGIN": "true",
           "DISABLE_POD_V6": "true", "IPAMD_SOCKET": "/run/a/ipam.sock"}  # fmt: skip
    conf = main.render_conflist(template(), env)
    ours = conf["plugins"][0]
    assert (ours["mtu"], ours["pluginLogFile"], ours["pluginLogLevel"], ours["socketPath"]) == (
        1500, "/var/log/x.log", "debug", "/run/a/ipam.sock")
    assert [pl["type"] for pl in conf["plugins"]] == ["vpc-cni", "portmap", "bandwidth", "tuning"]
    assert main.render_conflist(template(), {**env, "POD_MTU": "8000"})["plugins"][0]["mtu"] == 8000
    upstream_style = '{"cniVersion": "0.4.0", "name": "aws-cni", "plugins": [{"type": "vpc-cni",' \
        ' "mtu": "__MTU__", "vethPrefix": "__VETHPREFIX__"}]}'
    conf = main.render_conflist(upstream_style, {"POD_MTU": "1400"})
    assert conf["plugins"][0] == {"type": "vpc-cni", "mtu": 1400, "vethPrefix": "eni"}


@pytest.mark.parametrize("env", [
    {"AWS_VPC_K8S_PLUGIN_LOG_FILE": "stdout"}, {"AWS_VPC_K8S_CNI_VETHPREFIX": "eth"},
    {"AWS_VPC_K8S_CNI_VETHPREFIX": "toolong"}, {"POD_MTU": "100"}, {"AWS_VPC_ENI_MTU": "x"},
])  # fmt: skip
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(main.EntrypointError):
        main.validate_env(env)


def test_bad_template_is_refused() -> None:
    with pytest.raises(main.EntrypointError):
        main.render_conflist("{not json", {})
    with pytest.raises(main.EntrypointError):
        main.render_conflist('{"plugins": []}', {})


# ------------------------------------------------------------------------- main entrypoint

LATE_IPAMD = """
import signal, sys, time
from tests.rigs.fake_ipamd import FakeIpamd
time.sleep(float(sys.argv[2]))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
with FakeIpamd(sys.argv[1]):
    while not stop:
        time.sleep(0.05)
"""


def start_entrypoint(tmp: Path, env: dict[str, str], ipamd: list[str]) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env,
               "HOST_CNI_BIN_PATH": str(tmp / "bin"), "HOST_CNI_CONFDIR_PATH": str(tmp / "net.d")}
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.entrypoints.main", "--template", str(tmp / "none"),
         "--bin-source", str(tmp / "app"), "--ipamd-command", shlex.join(ipamd)],
        env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip


def test_conflist_only_once_ipamd_answers_and_kept_on_sigterm(short_tmp: Path) -> None:
    fake_app(short_tmp)
    sock = str(short_tmp / "ipam.sock")
    script = short_tmp / "late_ipamd.py"
    script.write_text(LATE_IPAMD)
    proc = start_entrypoint(short_tmp, {"IPAMD_SOCKET": sock, "POD_MTU": "1500"},
                            [sys.executable, str(script), sock, "2.0"])  # fmt: skip
    conflist = short_tmp / "net.d" / "10-aws.conflist"
    try:
        began = time.monotonic()
        while not conflist.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            # until ipamd answers there is no conflist
            answers = health.check(sock, 1.0)[0]
            assert not answers or conflist.exists() or time.monotonic() - began < 30
            time.sleep(0.02)
            assert time.monotonic() - began < 30
        assert time.monotonic() - began >= 1.9  # not before the fake ipamd listened
        assert health.check(sock, 1.0)[0]
        written = json.loads(conflist.read_text())
        assert written["plugins"][0]["mtu"] == 1500
        assert written["plugins"][0]["socketPath"] == sock
        assert conflist.stat().st_mode & 0o777 == 0o644
        assert os.readlink(short_tmp / "bin" / "vpc-cni") == "vpc-cni.d/bin/vpc-cni"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert conflist.exists()  # left for kubelet, as upstream
        assert not health.check(sock, 1.0)[0]  # ipamd is stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ipamd_that_dies_means_no_conflist(short_tmp: Path) -> None:
    proc = start_entrypoint(short_tmp, {"IPAMD_SOCKET": str(short_tmp / "ipam.sock")},
                            [sys.executable, "-c", "raise SystemExit(2)"])  # fmt: skip
    assert proc.wait(timeout=20) == 1
    assert not (short_tmp / "net.d" / "10-aws.conflist").exists()


def test_with_the_real_daemon(short_tmp: Path) -> None:
    """vpc-ipamd (fake cloud and datapath) behind the entrypoint; ipamd's lines are teed into
    AWS_VPC_K8S_CNI_LOG_FILE, and ipamctl health --ready answers."""
    env = {**state_env(str(short_tmp)), "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake",
           "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
           "AWS_VPC_K8S_CNI_LOG_FILE": str(short_tmp / "log" / "ipamd.log"),
           "IPAMD_LOG_FORMAT": "json", "MINIMUM_IP_TARGET": "3"}  # fmt: skip
    proc = start_entrypoint(short_tmp, env, [sys.executable, "-m", "adapters.ipamd.main"])
    conflist = short_tmp / "net.d" / "10-aws.conflist"
    try:
        deadline = time.monotonic() + 60
        while not conflist.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        sock = env["IPAMD_SOCKET"]
        ok, why, status = health.check(sock, 5.0, ready=True, min_ips=3)
        assert ok, why
        assert status["ready"] is True and status["total"] >= 3
        assert not health.check(sock, 5.0, ready=True, min_ips=10_000)[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = (short_tmp / "log" / "ipamd.log").read_text()
        assert '"event": "ready"' in log or '"event":"ready"' in log
        assert (short_tmp / "ipam.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------- ipamctl health


def ipamctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "ipamctl"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "adapters.ipamctl.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, check=False)  # fmt: skip


def test_health(short_tmp: Path) -> None:
    sock = str(short_tmp / "ipam.sock")
    done = ipamctl("health", "--socket", sock)
    assert done.returncode == 1 and "does not answer" in done.stderr
    with FakeIpamd(sock) as server:
        server.replies[p.OP_STATUS] = p.Reply.success(
            {"ready": True, "total": 5, "assigned": 1, "available": 4})
        assert ipamctl("health", "--socket", sock).stdout.startswith("ok total=5")
        assert ipamctl("health", f"--socket={sock}", "--ready-min-ips", "5").returncode == 0
        assert ipamctl("health", "--socket", sock, "--ready-min-ips", "6").returncode == 1
        env = {"IPAMD_SOCKET": sock, "MINIMUM_IP_TARGET": "8"}
        done = ipamctl("health", "--ready-min-ips", "MINIMUM_IP_TARGET", env=env)
        assert done.returncode == 1 and "waiting for 8" in done.stderr
        done = ipamctl("health", env={**env, "HEALTH_READY_MIN_IPS": "MINIMUM_IP_TARGET"})
        assert done.returncode == 1
        assert ipamctl("health", env={**env, "HEALTH_READY_MIN_IPS": "4"}).returncode == 0
        server.replies[p.OP_STATUS] = p.Reply.success({"ready": False, "total": 0})
        assert ipamctl("health", "--socket", sock).returncode == 0  # alive
        done = ipamctl("health", "--socket", sock, "--ready")
        assert done.returncode == 1 and "not ready" in done.stderr
        # the long form goes through ipamctl's own parser to the same code
        assert ipamctl("--json", "health", "--socket", sock).returncode == 0
    assert ipamctl("health", "--bogus").returncode == 2
    assert ipamctl("health", "--ready-min-ips", "many").returncode == 2


def test_health_is_fast(short_tmp: Path) -> None:
    """A probe every few seconds on every node: its wall time stays near a bare
    interpreter's (it imports no argparse, no simulator)."""
    sock = str(short_tmp / "ipam.sock")
    with FakeIpamd(sock):
        times = []
        for _ in range(5):
            began = time.perf_counter()
            assert ipamctl("health", "--socket", sock).returncode == 0
            times.append(time.perf_counter() - began)
    bare = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import json, socket"], check=True)
        bare.append(time.perf_counter() - began)
    assert sorted(times)[2] < max(0.5, 3 * sorted(bare)[2]), (times, bare)


def test_ipamd_log_file_is_rotated(tmp_path: Path) -> None:
    import io

    path = tmp_path / "ipamd.log"
    lines = b"".join(f"line {n:04d} ".encode() + b"x" * 80 + b"\n" for n in range(100))
    sink = io.BytesIO()
    main._tee(io.BytesIO(lines), sink, str(path), max_bytes=4000)
    assert sink.getvalue() == lines  # the container's log has everything
    kept = (tmp_path / "ipamd.log.1").read_bytes() + path.read_bytes()
    assert lines.endswith(kept) and path.stat().st_size <= 4000 + 100
