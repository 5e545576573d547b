"""vpc-ipamd as a subprocess with the fake backends: SIGTERM -> exit 0, checkpoint written."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

from adapters import protocol as p
from backends.checkpoint import read_checkpoint_file
from tests.adapters.harness import add_request, base_env


def wait_for_event(proc: subprocess.Popen[bytes], event: str, timeout: float = 20.0) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if not ready:
            assert proc.poll() is None, "daemon exited early"
            continue
        chunk = os.read(proc.stderr.fileno(), 65536)
        assert chunk, "daemon closed stderr"
        buffered += chunk
        for line in buffered.splitlines():
            try:
                if json.loads(line).get("event") == event:
                    return
            except ValueError:
                continue
    raise AssertionError(f"no {event!r} log line in time: {buffered[-2000:]!r}")


def test_sigterm_exits_0_with_the_checkpoint_written(tmp_path: object) -> None:
    import tempfile

    state = tempfile.mkdtemp(prefix="ipamd-", dir="/tmp")
    env = {**os.environ, **base_env(state), "IPAMD_LOG_FORMAT": "json",
           "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.ipamd.main"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_event(proc, "serving")
        sock = os.path.join(state, "ipam.sock")
        reply = p.request(sock, add_request(1), timeout=10)
        assert reply.ok, reply
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        checkpoint = read_checkpoint_file(os.path.join(state, "ipam.json"))
        assert checkpoint is not None
        assert [a.ipv4 for a in checkpoint.allocations] == [reply.result["ipv4"]]
        assert not os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        import shutil

        shutil.rmtree(state, ignore_errors=True)


def test_bad_setting_exits_2_naming_it() -> None:
    env = {**os.environ, "WARM_ENI_TARGET": "lots"}
    proc = subprocess.run(
        [sys.executable, "-m", "adapters.ipamd.main"], env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 2 and b"WARM_ENI_TARGET" in proc.stderr
