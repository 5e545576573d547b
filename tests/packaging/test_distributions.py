"""The two distributions built from this tree: `ipamcore` (the core alone, `attrs` its one
dependency) and `ipamcore-node` (the daemon, plugin, CLI and simulator around it).

Both wheels are built from a copy of the tree with the build tools of the test environment
(no build isolation), and the core wheel is installed alone into a fresh virtual environment:
an embedder gets `ipamcore` and `attrs`, and no top-level `adapters` or `backends`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import ipamcore

pytest.importorskip("build")
pytest.importorskip("hatchling")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "NOTICE", "ipamcore",
           "adapters", "backends", "packaging")
NOT_SHIPPED = ("tests", "benchmarks", "docs")



def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tree = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SHIPPED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(src, tree / name)
    out = tmp_path_factory.mktemp("wheels")
    built: dict[str, Path] = {}
    for name, project in (("ipamcore", tree), ("ipamcore_node", tree / "packaging/ipamcore-node")):
        done = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out,
                   project)
        # No wall of deprecation warnings (the license is an SPDX expression, ...).
        assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
        (built[name],) = out.glob(f"{name}-*.whl")
    return built


def metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(meta).decode())
        entry = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry[0]).decode().splitlines() if entry else []
    return names, {
        "Requires-Dist": [r for r in fields.get_all("Requires-Dist") or [] if "extra ==" not in r],
        "Classifier": fields.get_all("Classifier") or [],
        "License-Expression": fields.get_all("License-Expression") or [],
        "Version": fields.get_all("Version") or [],
        "scripts": scripts,
    }


def top_level(names: list[str]) -> set[str]:
    return {n.split("/")[0] for n in names if ".dist-info/" not in n}


def test_the_core_wheel_holds_the_core_only(wheels: dict[str, Path]) -> None:
    names, meta = metadata(wheels["ipamcore"])
    assert top_level(names) == {"ipamcore"}
    assert meta["Requires-Dist"] == ["attrs>=23.1"]
    assert meta["Version"] == [ipamcore.__version__]
    assert meta["License-Expression"] == ["Apache-2.0"]
    assert "Typing :: Typed" in meta["Classifier"]
    assert "ipamcore/py.typed" in names
    assert "ipamcore/data/instance-limits.json" in names
    assert any(n.endswith("licenses/NOTICE") for n in names)


def test_the_node_wheel_holds_the_agent_around_the_pinned_core(wheels: dict[str, Path]) -> None:
    names, meta = metadata(wheels["ipamcore_node"])
    assert top_level(names) == {"adapters", "backends"}
    assert f"ipamcore=={ipamcore.__version__}" in meta["Requires-Dist"]
    assert meta["Version"] == [ipamcore.__version__]
    assert {"vpc-ipamd = adapters.ipamd.main:main", "vpc-cni = adapters.cni.plugin:main",
            "ipamctl = adapters.ipamctl.cli:main"} <= set(meta["scripts"])
    assert "adapters/cni/10-vpc-cni.conflist" in names
    assert not [n for n in names if "__pycache__" in n or n.split("/")[0] in NOT_SHIPPED]
    # Test rigs stay in tests/rigs: nothing that only tests use ships.
    rigs = ("localnode", "eni_hotplug", "moto_addresses", "cni_runtime", "fake_ipamd",
            "metadata_server", "crashpoints", "threaded", "reliability/")
    assert not [n for n in names if any(rig in n for rig in rigs)]


@pytest.mark.slow  # a fresh venv and a pip install: 10 to 50 s
def test_the_core_installs_alone(wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"

    def installed() -> set[str]:
        listing = run(python, "-m", "pip", "list", "--format=json").stdout
        return {d["name"].lower() for d in json.loads(listing)}

    before = installed()
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheels["ipamcore"])
    assert installed() - before == {"ipamcore", "attrs"}
    probe = (
        "import importlib.util, ipamcore\n"
        "assert ipamcore.limits_for('m5.large').max_enis == 3\n"
        "assert ipamcore.__version__\n"
        "print([m for m in ('adapters', 'backends') if importlib.util.find_spec(m)])\n"
    )
    assert run(python, "-c", probe, cwd=tmp_path).stdout.strip() == "[]"
