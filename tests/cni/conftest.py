"""Fixtures for the CNI plugin tests: a fake ipamd and a plugin runner (the libcni runner is
built by ``tests/conftest.py``, shared with the end-to-end tests)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.helpers import PluginExec
from tests.rigs.fake_ipamd import FakeIpamd


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
