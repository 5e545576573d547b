"""Cold exec of the vpc-cni plugin for ADD (through the socket, against a fake ipamd) beside a
bare ``python -c "import json, socket"`` in the same environment.

Runs what kubelet's runtime would run: the ``vpc-cni`` console script installed beside this
interpreter (``python -m adapters.cni.plugin`` when it is missing). The two commands are run
alternately, N times each; the medians and their ratio are printed, and the last line is one
JSON object::

    {"plugin_add_p50_ms": .., "python_import_p50_ms": .., "ratio": .., "target_ratio": 1.5, ...}

Usage: python benchmarks/plugin_exec.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cni.cni_fake_ipamd import FakeIpamd  # noqa: E402

TARGET_RATIO = 1.5


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    opts = ap.parse_args()

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
            plugin_ms: list[float] = []
            python_ms: list[float] = []
            for i in range(opts.warmup + opts.runs):
                p_ms = timed(cmd, plugin_env, stdin, b'"10.0.0.5/32"')
                b_ms = timed(baseline, base_env, b"", b"")
                if i >= opts.warmup:
                    plugin_ms.append(p_ms)
                    python_ms.append(b_ms)
            served = len(server.requests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

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
    print(
        json.dumps(
            {
                "plugin_add_p50_ms": round(plugin_p50, 2),
                "python_import_p50_ms": round(python_p50, 2),
                "ratio": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "runs": opts.runs,
                "launcher": launcher,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
