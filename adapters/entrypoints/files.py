"""Atomic installs into the host's directories (hostPath mounts) and small shared helpers.

kubelet may exec a plugin or read a conflist at any moment: every file lands by a rename
within its directory, never half-written. A directory (the plugin's one-dir build) is copied
beside its destination and swapped in by renames, the previous copy removed afterwards.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

TRUE = frozenset({"1", "t", "true", "yes", "on"})


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in TRUE


def log(component: str, msg: str, level: str = "info") -> None:
    """One plain line on stderr (the container's log): time, level, component, message."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp} {level.upper()} {component}: {msg}", file=sys.stderr, flush=True)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` by a temporary file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def install_file(src: Path, dest: Path, mode: int = 0o755) -> bool:
    """Copy ``src`` (symlinks followed) to ``dest`` atomically; False when already identical."""
    data = Path(src).read_bytes()
    with contextlib.suppress(OSError):
        if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == data:
            if (dest.stat().st_mode & 0o777) != mode:
                os.chmod(dest, mode)
            return False
    write_atomic(dest, data, mode)
    return True


def _same_tree(a: Path, b: Path) -> bool:
    if not b.is_dir() or b.is_symlink():
        return False
    files_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*"))
    if files_a != files_b:
        return False
    for rel in files_a:
        pa, pb = a / rel, b / rel
        if pa.is_symlink() or pb.is_symlink():
            if not (pa.is_symlink() and pb.is_symlink() and os.readlink(pa) == os.readlink(pb)):
                return False
        elif pa.is_file() and (not pb.is_file() or pa.read_bytes() != pb.read_bytes()):
            return False
    return True


def install_tree(src: Path, dest: Path) -> bool:
    """Copy the directory ``src`` to ``dest``: into ``.dest.new``, then ``dest`` is renamed
    to ``.dest.old`` and the new copy renamed in (two renames; a plugin exec in between finds
    the symlink dangling for microseconds at most), then the old copy is removed.
    False when ``dest`` already holds the same files."""
    src = Path(os.path.realpath(src))
    if _same_tree(src, dest):
        return False
    new = dest.with_name(f".{dest.name}.new")
    old = dest.with_name(f".{dest.name}.old")
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(src, new, symlinks=True)
    if dest.exists() or dest.is_symlink():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
    return True


def install_symlink(target: str, dest: Path) -> bool:
    """Make ``dest`` a symlink to ``target`` (relative), replaced atomically."""
    with contextlib.suppress(OSError):
        if dest.is_symlink() and os.readlink(dest) == target:
            return False
    tmp = dest.with_name(f".{dest.name}.lnk-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, dest)
    return True
