"""Fixtures for the CNI plugin tests: a fake ipamd, a plugin runner, and the libcni runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cni_fake_ipamd import FakeIpamd

REPO = Path(__file__).resolve().parents[2]
RUNNER_SRC = Path(__file__).resolve().parent / "runner"
SHIPPED_CONFLIST = REPO / "adapters" / "cni" / "10-vpc-cni.conflist"
DEBIAN_GOPATH = "/usr/share/gocode"
SYSTEM_CNI_DIR = "/usr/lib/cni"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must stay under 108 bytes."""
    d = tempfile.mkdtemp(prefix="vpccni-")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake_ipamd(short_tmp: Path) -> Iterator[FakeIpamd]:
    with FakeIpamd(str(short_tmp / "ipam.sock")) as server:
        yield server


@pytest.fixture(scope="session")
def plugin_bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an executable ``vpc-cni``: the console script pip installed beside
    this interpreter when there is one, else a launcher equivalent to it."""
    installed = Path(sys.executable).parent / "vpc-cni"
    if installed.is_file() and os.access(installed, os.X_OK):
        return installed.parent
    d = tmp_path_factory.mktemp("cnibin")
    launcher = d / "vpc-cni"
    launcher.write_text(
        f"#!{sys.executable}\nimport sys\nfrom adapters.cni.plugin import main\nsys.exit(main())\n"
    )
    launcher.chmod(0o755)
    return d


class PluginRun:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.rc = proc.returncode
        self.stdout = proc.stdout.decode()
        self.stderr = proc.stderr.decode()

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class PluginExec:
    """Runs the plugin as the runtime does: env + stdin, in a subprocess."""

    def __init__(self, bin_dir: Path, log_file: Path) -> None:
        self.exe = str(bin_dir / "vpc-cni")
        self.log_file = log_file

    def __call__(
        self,
        command: str,
        conf: Mapping[str, Any] | bytes | None = None,
        *,
        container_id: str = "c0ffee",
        if_name: str = "eth0",
        netns: str = "/var/run/netns/cni-test",
        args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        env: Mapping[str, str] | None = None,
    ) -> PluginRun:
        if conf is None:
            conf = {}
        stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_IFNAME": if_name,
            "CNI_NETNS": netns,
            "CNI_ARGS": args,
            "CNI_PATH": "/opt/cni/bin",
        }
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        proc = subprocess.run(
            [self.exe], input=stdin, env=environ, capture_output=True, timeout=60, check=False
        )
        return PluginRun(proc)

    def log_lines(self) -> list[str]:
        try:
            return self.log_file.read_text().splitlines()
        except FileNotFoundError:
            return []


@pytest.fixture
def run_plugin(plugin_bin_dir: Path, short_tmp: Path) -> PluginExec:
    return PluginExec(plugin_bin_dir, short_tmp / "log" / "plugin.log")


def go_env(cache: Path) -> dict[str, str]:
    """Offline GOPATH-mode build against Debian's golang-github-appc-cni-dev."""
    env = dict(os.environ)
    env.update(
        GOPATH=DEBIAN_GOPATH,
        GO111MODULE="off",
        GOFLAGS="",
        GOPROXY="off",
        GOTOOLCHAIN="local",
        GOCACHE=str(cache / "gocache"),
        CGO_ENABLED="0",
    )
    return env


@pytest.fixture(scope="session")
def libcni_runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Builds tests/cni/runner (a libcni client) once per session; skips when it cannot."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: cannot build the libcni runner")
    if not Path(DEBIAN_GOPATH, "src/github.com/containernetworking/cni/libcni").is_dir():
        pytest.skip("libcni source missing (apt-get install golang-github-appc-cni-dev)")
    out = tmp_path_factory.mktemp("libcni-runner")
    exe = out / "runner"
    proc = subprocess.run(
        [go, "build", "-o", str(exe), "."],
        cwd=RUNNER_SRC,
        env=go_env(out),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the libcni runner failed:\n{proc.stderr.decode()}")
    return exe
