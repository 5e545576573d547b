"""The soak benchmark at CI size: 3,000 ADD/DEL pairs from 16 clients through the socket of a
vpc-ipamd subprocess (fake cloud and datapath, durable checkpoint, policy and reconciliation
on short intervals). No errors, no leaked address, checkpoint entry or file descriptor, and
a clean exit. Timing is not asserted here (see benchmarks/soak.py for the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_soak_ci_size() -> None:
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"), "--pairs", "3000",
         "--clients", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["soak_pairs"] == 3000
    assert result["errors"] == 0, result["error_samples"]
    assert result["invariant_violations"] == 0, result["violation_samples"]
    assert result["assigned_end"] == 0
    assert result["fds_end"] <= result["fds_start"] + 2
    assert result["daemon_exit"] == 0
