"""Make the self-contained ``vpc-cni`` plugin: its own interpreter, for nodes without Python.

Run at image build (deploy/Containerfile) as ``python3 plugin_bundle.py OUT_DIR SRC_ROOT``::

    OUT_DIR/bin/vpc-cni          Debian's python3.11 executable, renamed, RUNPATH $ORIGIN/../lib
    OUT_DIR/lib/libz.so.1 ...    the shared libraries it needs beyond glibc (libm, libc)
    OUT_DIR/lib/python3.11/      the standard library it can need (compiled .pyc, no tests,
                                 GUI, package tools, ...), and ``sitecustomize.py``
    OUT_DIR/lib/plugin/adapters  the plugin's own modules (plugin, protocol, validators,
                                 pending_dels), compiled

The host installs ``OUT_DIR`` as ``/opt/cni/bin/vpc-cni.d`` and ``vpc-cni`` as a symlink to
``vpc-cni.d/bin/vpc-cni``. kubelet execs the symlink with no arguments; the interpreter finds
its prefix from its real path (``lib/python3.11/os.py``), and ``site`` imports
``sitecustomize``, which keeps ``sys.path`` inside the bundle, runs the plugin's ``main()``
and leaves with ``os._exit`` (the interpreter never goes on to read stdin as a script).
Start-up is the interpreter's own: no unpacking, no archive (a PyInstaller build measured
2.8x a bare ``python3 -c "import json, socket"`` here, mostly its bootloader and runtime hooks).

Needs glibc >= 2.34 on the node (Debian bookworm's build): Amazon Linux 2023, Bottlerocket,
Ubuntu 22.04 and later; not Amazon Linux 2 (glibc 2.26).
"""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
STDLIB = Path(f"/usr/lib/{VERSION}")
INTERPRETER = Path(f"/usr/bin/{VERSION}")
# top-level stdlib entries never needed by the plugin (its imports, json, socket, subprocess,
# hashlib's builtin fallbacks, and their dependencies stay)
SKIP = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip",
    "distutils", "pydoc_data", "pydoc.py", "unittest", "asyncio", "sqlite3", "venv",
    "curses", "dbm", "xmlrpc", "wsgiref", "http", "urllib", "email", "html", "xml",
    "multiprocessing", "concurrent", "ctypes", "site-packages", "dist-packages",
    f"config-{sys.version_info.major}.{sys.version_info.minor}-x86_64-linux-gnu",
    "__pycache__", "tomllib", "zoneinfo", "mailbox.py", "imaplib.py", "smtplib.py",
    "nntplib.py", "ftplib.py", "poplib.py", "telnetlib.py", "doctest.py", "pdb.py",
}
# extension modules kept from lib-dynload (the rest need libraries a node may lack)
DYNLOAD_KEEP = ("_json.", "_contextvars.", "_queue.", "resource.", "mmap.")
PLUGIN_MODULES = (
    "adapters/__init__.py",
    "adapters/cni/__init__.py",
    "adapters/cni/plugin.py",
    "adapters/protocol.py",
    "adapters/validators.py",
    "adapters/pending_dels.py",
)
SITECUSTOMIZE = '''\
"""Runs the vpc-cni plugin (this interpreter is the plugin; see deploy/plugin_bundle.py)."""
import os
import sys

_lib = os.path.join(sys.prefix, "lib")
sys.path[:] = [os.path.join(_lib, "plugin")] + [p for p in sys.path if p.startswith(_lib)]
try:
    from adapters.cni.plugin import main as _main

    _code = _main([])
except SystemExit as _exit:
    _code = _exit.code if isinstance(_exit.code, int) else 1
except BaseException as _exc:  # never fall through to reading stdin as a script
    sys.stderr.write(f"vpc-cni: {type(_exc).__name__}: {_exc}\\n")
    _code = 1
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    os._exit(_code if isinstance(_code, int) else 1)
'''


def needed_libraries(executable: Path) -> list[Path]:
    """The interpreter's shared libraries other than glibc's own (ldd)."""
    out = subprocess.run(["ldd", str(executable)], capture_output=True, text=True, check=True)
    libs = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if not m:
            continue
        name, path = m.groups()
        if re.match(r"lib(c|m|pthread|dl|rt|util)\.so", name) or name.startswith("ld-linux"):
            continue
        libs.append(Path(path))
    return libs


def copy_stdlib(dest: Path) -> None:
    dest.mkdir(parents=True)
    for entry in sorted(STDLIB.iterdir()):
        if entry.name in SKIP:
            continue
        if entry.name == "lib-dynload":
            (dest / "lib-dynload").mkdir(parents=True)
            for so in entry.iterdir():
                if so.name.startswith(DYNLOAD_KEEP):
                    shutil.copy2(so, dest / "lib-dynload" / so.name)
        elif entry.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "test", "tests")
            shutil.copytree(entry, dest / entry.name, ignore=skip)
        elif entry.suffix == ".py":
            shutil.copy2(entry, dest / entry.name)


def make(out: Path, src_root: Path, patchelf: str) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "bin").mkdir(parents=True)
    exe = out / "bin" / "vpc-cni"
    shutil.copy2(INTERPRETER, exe)
    (out / "lib").mkdir()
    for lib in needed_libraries(INTERPRETER):
        shutil.copy2(lib.resolve(), out / "lib" / lib.name)
    subprocess.run([patchelf, "--set-rpath", "$ORIGIN/../lib", str(exe)], check=True)
    stdlib = out / "lib" / VERSION
    copy_stdlib(stdlib)
    (stdlib / "sitecustomize.py").write_text(SITECUSTOMIZE)
    for rel in PLUGIN_MODULES:
        target = out / "lib" / "plugin" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, target)
    for tree in (stdlib, out / "lib" / "plugin"):
        # unchecked hashes: the interpreter never compares sources (nor tries to rewrite)
        mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
        if not compileall.compile_dir(str(tree), quiet=1, workers=0, invalidation_mode=mode):
            raise SystemExit(f"compileall failed in {tree}")
    os.chmod(exe, 0o755)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: plugin_bundle.py OUT_DIR SRC_ROOT [PATCHELF]")
    make(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else "patchelf")
