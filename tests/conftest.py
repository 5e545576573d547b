"""Test-wide settings: hypothesis profiles (``HYPOTHESIS_PROFILE=ci|dev|deep``), the libcni
runner (``tests/cni/runner``, built once per session for the CNI and end-to-end tests), and
the aws-node image (built once per session for the container tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.cni.helpers import DEBIAN_GOPATH, RUNNER_SRC, go_env

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "deep", max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


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


@pytest.fixture(scope="session")
def aws_node_image() -> Iterator[tuple[Any, str]]:
    """The aws-node image built (or found up to date) by deploy/image.py: (its podman store,
    its tag). Skips with the reason where images cannot be built or run; podman's files
    outside its store that were not there before are removed at the end."""
    from deploy import image

    reason = image.unavailable_reason()
    if reason:
        pytest.skip(f"cannot build or run images here: {reason}")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    before = image.leftovers()
    cache = image.default_cache()
    try:
        tag = image.build(cache)
        yield image.Store(cache / "store"), tag
    finally:
        image.remove_new_leftovers(before)
