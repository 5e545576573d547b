"""Fixtures for the CNI plugin tests: a fake ipamd, a plugin runner, and the libcni runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.cni_fake_ipamd import FakeIpamd
from tests.cni.helpers import DEBIAN_GOPATH, RUNNER_SRC, PluginExec, go_env


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


@pytest.fixture
def run_plugin(plugin_bin_dir: Path, short_tmp: Path) -> PluginExec:
    return PluginExec(plugin_bin_dir, short_tmp / "log" / "plugin.log")


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
