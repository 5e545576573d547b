"""The embedding guide's example runs, and the API reference builds without a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedding_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "embed.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pods wait for an address" in done.stdout
    assert "restored 12 allocations, dropped 0" in done.stdout


def test_the_example_uses_only_the_public_api() -> None:
    source = (ROOT / "docs" / "examples" / "embed.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    ours = [line for line in imports if "ipamcore" in line]
    assert ours and all(line in ("import ipamcore", "from ipamcore import (") for line in ours)
    assert not [line for line in imports if "adapters" in line or "backends" in line]


def test_the_api_reference_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "api" / "index.html").exists()
