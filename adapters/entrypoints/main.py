"""``aws-vpc-cni``: the aws-node container's entrypoint (upstream's cmd/aws-vpc-cni).

kubelet takes a node's network as ready once a CNI configuration file is in its conf dir, so
the file must appear only when ipamd can serve. In order:

1. checks the plugin settings (``AWS_VPC_K8S_PLUGIN_LOG_FILE`` may not be ``stdout``, veth
   prefix, MTUs) and installs the ``vpc-cni`` plugin into ``HOST_CNI_BIN_PATH`` (default
   ``/host/opt/cni/bin``) as upstream's entrypoint does (a no-op when init already did);
2. starts ``vpc-ipamd`` (its stdout and stderr are this container's log, ``kubectl logs -c
   aws-node``; with ``AWS_VPC_K8S_CNI_LOG_FILE`` set to a path, each line is also appended
   there, as upstream's ipamd.log);
3. waits until ipamd answers ``status`` on its socket (``IPAMD_SOCKET``); if ipamd exits
   first, exits 1;
4. writes ``10-aws.conflist`` into ``HOST_CNI_CONFDIR_PATH`` (default ``/host/etc/cni/net.d``)
   atomically, from the template (``/app/10-aws.conflist``, which the chart's ``cniConfig``
   replaces, as upstream) with upstream's variables applied, see :func:`render_conflist`;
5. waits. On SIGTERM or SIGINT it stops ipamd (SIGTERM, then SIGKILL after
   ``--stop-timeout``) and exits 0 when ipamd stopped cleanly; the conflist stays, as
   upstream's does (a node keeps serving its pods from the checkpoint across restarts).
   When ipamd exits on its own, exits 1 (0 if ipamd exited 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.entrypoints.files import (
    env_bool,
    install_file,
    install_symlink,
    install_tree,
    log,
    write_atomic,
)
from adapters.entrypoints.init import PLUGIN, PLUGIN_DIR, PLUGIN_LINK
from adapters.ipamctl.health import check as health_check
from adapters.protocol import DEFAULT_SOCKET_PATH

DEFAULT_HOST_BIN = "/host/opt/cni/bin"
DEFAULT_HOST_CONFDIR = "/host/etc/cni/net.d"
DEFAULT_TEMPLATE = "/app/10-aws.conflist"
CONFLIST_NAME = "10-aws.conflist"
PACKAGED_TEMPLATE = Path(__file__).resolve().parents[1] / "cni" / "10-vpc-cni.conflist"
PLUGIN_TYPE = "vpc-cni"
RESERVED_VETH_PREFIXES = ("eth", "lo", "vlan")


class EntrypointError(Exception):
    pass


def _mtu(env: Mapping[str, str]) -> int:
    eni = env.get("AWS_VPC_ENI_MTU", "").strip() or "9001"
    pod = env.get("POD_MTU", "").strip() or eni
    for name, value in (("AWS_VPC_ENI_MTU", eni), ("POD_MTU", pod)):
        if not value.isdigit() or not 576 <= int(value) <= 9001:
            raise EntrypointError(f"{name}: expected an integer from 576 to 9001, got {value!r}")
    return int(pod)


def validate_env(env: Mapping[str, str]) -> None:
    """Upstream's validateEnvVars, for what the entrypoint itself uses."""
    if env.get("AWS_VPC_K8S_PLUGIN_LOG_FILE", "").strip().lower() == "stdout":
        raise EntrypointError("AWS_VPC_K8S_PLUGIN_LOG_FILE cannot be set to stdout")
    prefix = env.get("AWS_VPC_K8S_CNI_VETHPREFIX", "").strip() or "eni"
    if len(prefix) > 4 or prefix in RESERVED_VETH_PREFIXES:
        raise EntrypointError(
            "AWS_VPC_K8S_CNI_VETHPREFIX: 1 to 4 characters, not eth, lo or vlan; "
            f"got {prefix!r}"
        )
    _mtu(env)


def _substitute_upstream(text: str, env: Mapping[str, str]) -> str:
    """A conflist written for upstream (``cniConfig.fileContents``) carries placeholders;
    they get upstream's values (the egress plugin's stay disabled: not part of this CNI)."""
    eni_mtu = env.get("AWS_VPC_ENI_MTU", "").strip() or "9001"
    values = {
        "__VETHPREFIX__": env.get("AWS_VPC_K8S_CNI_VETHPREFIX", "").strip() or "eni",
        "__MTU__": env.get("POD_MTU", "").strip() or eni_mtu,
        "__PODSGENFORCINGMODE__": env.get("POD_SECURITY_GROUP_ENFORCING_MODE") or "strict",
        "__PLUGINLOGFILE__": env.get("AWS_VPC_K8S_PLUGIN_LOG_FILE")
        or "/var/log/aws-routed-eni/plugin.log",
        "__PLUGINLOGLEVEL__": env.get("AWS_VPC_K8S_PLUGIN_LOG_LEVEL") or "Debug",
        "__RANDOMIZESNAT__": env.get("AWS_VPC_K8S_CNI_RANDOMIZESNAT") or "prng",
        "__EGRESSPLUGINENABLED__": "false",
        "__NODEIP__": "",
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def render_conflist(template: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The conflist for the host: the template with, on each ``vpc-cni`` plugin entry,
    ``pluginLogFile`` = ``AWS_VPC_K8S_PLUGIN_LOG_FILE``, ``pluginLogLevel`` =
    ``AWS_VPC_K8S_PLUGIN_LOG_LEVEL``, ``mtu`` = ``POD_MTU`` (else ``AWS_VPC_ENI_MTU``),
    ``socketPath`` = ``IPAMD_SOCKET`` and ``pendingDelDir`` = ``IPAMD_PENDING_DEL_DIR`` when
    set; then, as upstream, ``bandwidth`` chained when ``ENABLE_BANDWIDTH_PLUGIN=true`` and
    ``tuning`` (IPv6 off in the pod) when ``DISABLE_POD_V6=true``."""
    try:
        conf = json.loads(_substitute_upstream(template, env))
    except ValueError as exc:
        raise EntrypointError(f"the conflist template is not valid JSON: {exc}") from None
    plugins = conf.get("plugins") if isinstance(conf, dict) else None
    if not isinstance(plugins, list) or not plugins:
        raise EntrypointError("the conflist template has no plugins list")
    mtu = _mtu(env)
    overrides = {
        "pluginLogFile": env.get("AWS_VPC_K8S_PLUGIN_LOG_FILE", "").strip(),
        "pluginLogLevel": env.get("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "").strip().lower(),
        "socketPath": env.get("IPAMD_SOCKET", "").strip(),
        "pendingDelDir": env.get("IPAMD_PENDING_DEL_DIR", "").strip(),
    }
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("type") == PLUGIN_TYPE:
            plugin["mtu"] = mtu
            for key, value in overrides.items():
                if value:
                    plugin[key] = value
    if env_bool(env, "ENABLE_BANDWIDTH_PLUGIN", False):
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    if env_bool(env, "DISABLE_POD_V6", False):
        plugins.append({"type": "tuning", "sysctl": {
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
            "net.ipv6.conf.lo.disable_ipv6": "1",
        }})  # fmt: skip
    return dict(conf)


def install_plugin(source: Path, host_bin: Path) -> bool:
    """The plugin alone (upstream's entrypoint reinstalls aws-cni too); False if unchanged
    or when this image has no plugin build (running from a checkout)."""
    host_bin.mkdir(parents=True, exist_ok=True)
    if (source / PLUGIN_DIR).is_dir():
        changed = install_tree(source / PLUGIN_DIR, host_bin / PLUGIN_DIR)
        return install_symlink(PLUGIN_LINK, host_bin / PLUGIN) or changed
    if (source / PLUGIN).is_file():
        return install_file(source / PLUGIN, host_bin / PLUGIN)
    log("aws-vpc-cni", f"no {PLUGIN} build in {source}: plugin not installed", "warn")
    return False


def ipamd_command() -> list[str]:
    exe = shutil.which("vpc-ipamd")
    return [exe] if exe else [sys.executable, "-m", "adapters.ipamd.main"]


LOG_FILE_MAX_BYTES = 100 * 1024 * 1024  # then rotated once to <file>.1, as upstream's ipamd.log


def _tee(stream: Any, sink: Any, path: str, max_bytes: int = LOG_FILE_MAX_BYTES) -> None:
    """Copy ipamd's lines to our own stream and append them to ``path`` (rotated to
    ``path.1`` past ``max_bytes``, so the host's disk never fills)."""

    def reopen() -> Any:
        try:
            return open(path, "ab")
        except OSError as exc:
            log("aws-vpc-cni", f"cannot open {path}: {exc}; ipamd logs to the container only",
                "warn")  # fmt: skip
            return None

    f = reopen()
    try:
        for line in iter(stream.readline, b""):
            sink.write(line)
            sink.flush()
            if f is None:
                continue
            try:
                f.write(line)
                f.flush()
                if f.tell() > max_bytes:
                    f.close()
                    os.replace(path, path + ".1")
                    f = reopen()
            except OSError:
                pass
    finally:
        if f is not None:
            f.close()


class Entrypoint:
    def __init__(self, env: Mapping[str, str], opts: argparse.Namespace) -> None:
        self.env = env
        self.opts = opts
        self.stop = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None

    def _signal(self, signum: int, _frame: object) -> None:
        log("aws-vpc-cni", f"{signal.Signals(signum).name}: stopping ipamd")
        self.stop.set()

    def start_ipamd(self) -> subprocess.Popen[bytes]:
        log_file = self.env.get("AWS_VPC_K8S_CNI_LOG_FILE", "").strip()
        tee = bool(log_file) and log_file.lower() not in ("stdout", "stderr")
        if tee:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            shlex.split(self.opts.ipamd_command) if self.opts.ipamd_command
            else ipamd_command(),
            env=dict(self.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if tee else None,
            stderr=subprocess.STDOUT if tee else None,
        )  # fmt: skip
        if tee:
            threading.Thread(
                target=_tee, args=(proc.stdout, sys.stderr.buffer, log_file), daemon=True
            ).start()
        log("aws-vpc-cni", f"started vpc-ipamd (pid {proc.pid})")
        return proc

    def wait_ipamd(self, proc: subprocess.Popen[bytes], sock: str) -> bool:
        """True once ipamd answers; False if it exited or we were told to stop."""
        began = time.monotonic()
        last_why = ""
        while not self.stop.is_set():
            if proc.poll() is not None:
                log("aws-vpc-cni", f"vpc-ipamd exited ({proc.returncode}) before serving", "error")
                return False
            ok, why, _ = health_check(sock, timeout=2.0)
            if ok:
                log("aws-vpc-cni", f"ipamd answers on {sock} after "
                    f"{time.monotonic() - began:.2f} s")  # fmt: skip
                return True
            if why != last_why and time.monotonic() - began > 5:
                log("aws-vpc-cni", f"waiting for ipamd: {why}")
                last_why = why
            self.stop.wait(self.opts.poll_interval)
        return False

    def stop_ipamd(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.opts.stop_timeout)
            except subprocess.TimeoutExpired:
                log("aws-vpc-cni", "vpc-ipamd did not stop in time: SIGKILL", "warn")
                proc.kill()
                proc.wait()
        log("aws-vpc-cni", f"vpc-ipamd stopped ({proc.returncode})")
        return 0 if proc.returncode == 0 else 1

    def run(self) -> int:
        env = self.env
        validate_env(env)
        template_path = Path(self.opts.template)
        if not template_path.is_file():
            template_path = PACKAGED_TEMPLATE
        template = template_path.read_text()
        render_conflist(template, env)  # a bad template stops us before ipamd starts
        host_bin = Path(env.get("HOST_CNI_BIN_PATH") or DEFAULT_HOST_BIN)
        if install_plugin(Path(self.opts.bin_source), host_bin):
            log("aws-vpc-cni", f"installed {PLUGIN} into {host_bin}")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        proc = self.proc = self.start_ipamd()
        sock = env.get("IPAMD_SOCKET") or DEFAULT_SOCKET_PATH
        if not self.wait_ipamd(proc, sock):
            return self.stop_ipamd(proc) if self.stop.is_set() else 1
        confdir = Path(env.get("HOST_CNI_CONFDIR_PATH") or DEFAULT_HOST_CONFDIR)
        data = json.dumps(render_conflist(template, env), indent=2).encode() + b"\n"
        write_atomic(confdir / CONFLIST_NAME, data, 0o644)
        log("aws-vpc-cni", f"wrote {confdir / CONFLIST_NAME}: node network ready for kubelet")
        while not self.stop.is_set():
            if proc.poll() is not None:
                log("aws-vpc-cni", f"vpc-ipamd exited ({proc.returncode})", "error")
                return 0 if proc.returncode == 0 else 1
            self.stop.wait(0.5)
        return self.stop_ipamd(proc)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aws-vpc-cni", description=__doc__.split("\n")[0])
    ap.add_argument("--template", default=DEFAULT_TEMPLATE, help="conflist template")
    ap.add_argument("--bin-source", default="/app", help="where the plugin build is")
    ap.add_argument("--stop-timeout", type=float, default=8.0, help="seconds before SIGKILL")
    ap.add_argument("--poll-interval", type=float, default=0.1, help="seconds between probes")
    ap.add_argument("--ipamd-command", default=None, help="instead of vpc-ipamd (shell words)")
    opts = ap.parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        return Entrypoint(environ, opts).run()
    except (EntrypointError, OSError) as exc:
        log("aws-vpc-cni", str(exc), "error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
