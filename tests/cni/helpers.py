"""Helpers for the CNI tests: exec'ing the plugin, paths, the offline Go environment."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNNER_SRC = Path(__file__).resolve().parent / "runner"
SHIPPED_CONFLIST = REPO / "adapters" / "cni" / "10-vpc-cni.conflist"
DEBIAN_GOPATH = "/usr/share/gocode"
SYSTEM_CNI_DIR = "/usr/lib/cni"


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
