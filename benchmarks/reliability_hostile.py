"""Faults driven from outside the daemon process (issue 16): a full or read-only disk during
ADD and DEL, a second daemon on the same state directory, hostile files and paths, floods of
idle HTTP connections, and sandbox recreation with the same pod name.

Each class runs ``--rounds`` times against a real ``vpc-ipamd`` process (fake cloud; the fake
datapath, except sandbox recreation, which needs root and uses the real one in network
namespaces through :mod:`tests.rigs.localnode`) with real checkpoint files, and checks:

* disk full / read-only: what the daemon acknowledged is what the file holds once the disk is
  back and the daemon has stopped (an ADD answered ok is in it, a DEL answered ok is not); a
  repeated ADD of a running pod never loses its address; no address is held twice;
* second daemon: it exits 1 without touching the first one's socket or checkpoint;
* hostile files: a symlinked, FIFO or device checkpoint is neither followed nor waited on
  (the daemon serves within a bound); a DEL with a netns outside the allowed directories
  releases the address;
* idle flood: with the daemon's soft open-file limit at 1024 and 3,000 idle connections on
  its HTTP ports, ADDs are answered;
* sandbox recreation: ADD of a second sandbox of a pod, then DEL of the first, leaves the
  second's network whole (CHECK passes, the host veth is its own).

Clock steps run in process, with the daemon's wall and monotonic clocks injected (the
machine's clock is never changed): a wall step back or forward of an hour moves no ADD
deadline and no cooldown, and a restart after a step back keeps cooldowns bounded. Classes
that need root are skipped without it.

Last line: one JSON object with ``classes`` (runs and violations per class),
``faults_injected`` and ``invariant_violations`` (for benchmarks/reliability.py).

    python benchmarks/reliability_hostile.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapters import protocol as p
from adapters.ipamd.settings import state_env
from backends.checkpoint import read_checkpoint_file
from ipamcore.errors import FailureKind
from tests.rigs.cni_runtime import CniError, PluginExec

SERVE_BOUND_S = 60.0


def base_env(state: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ, **state_env(state), "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake",
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "IPAMD_LOG_FORMAT": "json", "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO", **extra,
    }  # fmt: skip


class Daemon:
    """A ``vpc-ipamd`` process and its JSON log lines."""

    def __init__(self, state: str, nofile: int | None = None, **extra: str) -> None:
        env = base_env(state, **extra)
        self.socket = env["IPAMD_SOCKET"]

        def limit() -> None:
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.ipamd.main"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    def _read(self, wait: float) -> bool:
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        ready = sel.select(wait)
        sel.close()
        if not ready:
            return True
        chunk = os.read(self.proc.stderr.fileno(), 65536)
        if not chunk:
            return False
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))
        return True

    def wait_for(self, prefix: str, timeout: float = SERVE_BOUND_S) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if str(line.get("event", "")).startswith(prefix):
                    return line
            seen = len(self.lines)
            if not self._read(0.2):
                return None
        return None

    def logged(self, prefix: str) -> bool:
        return any(str(line.get("event", "")).startswith(prefix) for line in self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        while self._read(0):
            pass
        return code


def request(d: Daemon, op: str, n: int, **kw: Any) -> p.Reply | None:
    fields: dict[str, Any] = {
        "network_name": "aws-cni", "container_id": f"c{n:04d}", "if_name": "eth0",
    }  # fmt: skip
    if op == p.OP_ADD:
        fields.update(netns=f"/var/run/netns/cni-{n}", pod_namespace="default", pod_name=f"p{n}")
    fields.update(kw)
    try:
        return p.request(d.socket, p.Request(op, **fields), timeout=15)
    except p.ProtocolError:
        return None


@contextlib.contextmanager
def state_dir(size: str | None = None) -> Iterator[str]:
    """A state directory; with ``size``, a private tmpfs of that size (root)."""
    path = tempfile.mkdtemp(prefix="ipamd-h-", dir="/tmp")
    try:
        if size is not None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                           check=True)  # fmt: skip
        yield path
    finally:
        if size is not None:
            subprocess.run(["mount", "-o", "remount,rw", path], check=False, capture_output=True)
            subprocess.run(["umount", "-l", path], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def fill(path: str) -> str:
    """Fill the filesystem of ``path`` (a filler file); returns the filler's path."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)
    return filler


# --------------------------------------------------------------------------- disk classes


def disk_round(
    break_disk: Callable[[str], Any], heal: Callable[[str, Any], None], **env: str
) -> list[str]:
    """ADDs and DELs while the state directory cannot be written; returns the violations."""
    problems: list[str] = []
    # 16 MiB: the journal preallocates 4 MiB and the flight record keeps 2 x 2 MiB
    with state_dir("16m") as state:
        d = Daemon(state, **env)
        try:
            if d.wait_for("serving") is None:
                return ["the daemon did not start"]
            held: dict[int, str] = {}
            for n in (1, 2, 3):
                reply = request(d, p.OP_ADD, n)
                if reply is None or not reply.ok:
                    return [f"ADD {n} failed before the fault: {reply}"]
                held[n] = reply.result["ipv4"]
            token = break_disk(state)
            released: set[int] = set()
            again = request(d, p.OP_ADD, 1)  # a repeated ADD of a running pod
            if again is not None and again.ok and again.result["ipv4"] != held[1]:
                problems.append("a repeated ADD answered another address")
            new = request(d, p.OP_ADD, 4)
            if new is not None and new.ok:
                held[4] = new.result["ipv4"]
            gone = request(d, p.OP_DEL, 2)
            if gone is not None and gone.ok:
                released.add(2)
            heal(state, token)
            if 2 not in released:
                retry = request(d, p.OP_DEL, 2)
                if retry is not None and retry.ok:
                    if not retry.result.get("released"):
                        problems.append(
                            "a DEL refused on the broken disk was done in memory (item 7)"
                        )
                    released.add(2)
            if d.stop() != 0:
                problems.append("the daemon did not stop cleanly")
        finally:
            d.stop(signal.SIGKILL)
        saved = read_checkpoint_file(os.path.join(state, "ipam.json"))
        in_file = {a.key.container_id: a.ipv4 for a in (saved.allocations if saved else ())}
        expected = {f"c{n:04d}": ip for n, ip in held.items() if n not in released}
        if in_file != expected:
            problems.append(f"the file holds {in_file}, the daemon acknowledged {expected}")
        if len(set(in_file.values())) != len(in_file):
            problems.append("an address is held twice")
    return problems


def disk_full() -> list[str]:
    return disk_round(fill, lambda _state, filler: os.unlink(filler))


def read_only() -> list[str]:
    def ro(state: str) -> None:
        subprocess.run(["mount", "-o", "remount,ro", state], check=True)

    def rw(state: str, _token: None) -> None:
        subprocess.run(["mount", "-o", "remount,rw", state], check=True)

    # The kernel refuses to remount a filesystem read-only while a file on it is open for
    # writing (EBUSY), and the checkpoint journal and the flight record stay open: only a
    # forced remount (errors=remount-ro) could make them read-only under the daemon, which
    # tmpfs cannot do. This class therefore runs the full-rewrite store with no flight
    # record; the journal's refused writes are the disk-full class's.
    return disk_round(ro, rw, IPAMD_CHECKPOINT_JOURNAL="false", IPAMD_FLIGHT_RECORDER_BYTES="0")


# --------------------------------------------------------------------------- other classes


def second_daemon() -> list[str]:
    problems: list[str] = []
    with state_dir() as state:
        first = Daemon(state)
        second: Daemon | None = None
        try:
            if first.wait_for("serving") is None:
                return ["the first daemon did not start"]
            if not (reply := request(first, p.OP_ADD, 1)) or not reply.ok:
                return ["ADD failed"]
            before = Path(state, "ipam.json").read_bytes()
            inode = os.lstat(first.socket).st_ino
            second = Daemon(state)
            try:
                code = second.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if code != 1:
                problems.append(f"the second daemon did not exit 1 ({code})")
            if Path(state, "ipam.json").read_bytes() != before:
                problems.append("the second daemon rewrote the checkpoint")
            if os.lstat(first.socket).st_ino != inode:
                problems.append("the first daemon's socket was replaced")
            if not (reply := request(first, p.OP_ADD, 2)) or not reply.ok:
                problems.append("the first daemon stopped answering")
        finally:
            first.stop()
            if second is not None:
                second.stop(signal.SIGKILL)
    return problems


def hostile_files() -> list[str]:
    problems: list[str] = []
    outside = tempfile.mkdtemp(prefix="ipamd-o-", dir="/tmp")
    try:
        for kind in ("symlink", "fifo", "device"):
            with state_dir() as state:
                path = os.path.join(state, "ipam.json")
                if kind == "symlink":
                    Path(outside, "ipam.json").write_text(
                        '{"version":"vpc-cni-ipam/1","allocations":[]}'
                    )
                    os.symlink(os.path.join(outside, "ipam.json"), path)
                elif kind == "fifo":
                    os.mkfifo(path)
                else:
                    os.symlink("/dev/zero", path)
                d = Daemon(state)
                try:
                    if d.wait_for("serving") is None:
                        problems.append(f"a {kind} checkpoint kept the daemon from serving")
                        continue
                    if not d.logged("CHECKPOINT UNREADABLE") and kind != "fifo":
                        problems.append(f"a {kind} checkpoint was trusted")
                finally:
                    if d.stop() != 0:
                        problems.append(f"no orderly stop after a {kind} checkpoint")
        with state_dir() as state:
            d = Daemon(state)
            try:
                d.wait_for("serving")
                conf = {"cniVersion": "1.0.0", "name": "aws-cni", "type": "vpc-cni",
                        "socketPath": d.socket, "pendingDelDir": os.path.join(state, "pd"),
                        "pluginLogFile": os.path.join(state, "plugin.log")}  # fmt: skip
                cni = PluginExec(conf)
                cni("ADD", "web-0", "/var/run/netns/cni-h1", "c0h1")
                cni("DEL", "web-0", "/opt/elsewhere/ns", "c0h1")
                status = p.request(d.socket, p.Request(p.OP_STATUS, network_name="aws-cni"))
                if status.result["assigned"] != 0:
                    problems.append("a DEL with a netns outside the allowed dirs kept the address")
            except CniError as exc:
                problems.append(f"CNI command failed: {exc}")
            finally:
                d.stop()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    return problems


def idle_flood(connections: int) -> list[str]:
    problems: list[str] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < connections + 1024:
        return []  # cannot open the flood here; counted as a run without violation
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, connections + 1024), hard))
    flood: list[socket.socket] = []
    with state_dir() as state:
        d = Daemon(state, nofile=1024)
        try:
            ports = [(d.wait_for("introspection serving") or {}).get("port"),
                     (d.wait_for("metrics serving") or {}).get("port")]  # fmt: skip
            if d.wait_for("serving") is None or None in ports:
                return ["the daemon did not start"]
            sel = selectors.DefaultSelector()
            for i in range(connections):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    s.connect(("127.0.0.1", ports[i % 2]))
                flood.append(s)
                sel.register(s, selectors.EVENT_WRITE)
            deadline = time.monotonic() + 30
            while sel.get_map() and time.monotonic() < deadline:
                for key, _ in sel.select(1.0):
                    sel.unregister(key.fileobj)
            sel.close()
            for n in range(3):
                reply = request(d, p.OP_ADD, n + 1)
                if reply is None or not reply.ok:
                    problems.append(f"ADD under the flood: {reply}")
        finally:
            for s in flood:
                s.close()
            d.stop()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return problems


def sandbox_recreation() -> list[str]:
    from tests.rigs.localnode import Pod, local_node

    problems: list[str] = []
    with local_node(real=True) as node:
        host_pod = node.add_pod("probe")
        for attempt in range(2):
            old_ns, new_ns = node.make_netns(f"o{attempt}"), node.make_netns(f"n{attempt}")
            old_id, new_id = f"cold{attempt}{node.tag}", f"cnew{attempt}{node.tag}"
            old = Pod("web-0", old_id, old_ns, node.plugin("ADD", "web-0", old_ns, old_id))
            new = Pod("web-0", new_id, new_ns, node.plugin("ADD", "web-0", new_ns, new_id))
            if not node.ping(old, host_pod.ip):
                problems.append("the new sandbox's ADD cut off the old one")
            node.plugin("DEL", "web-0", old_ns, old_id, old.result)
            if not node.ping(new, host_pod.ip):
                problems.append("the old sandbox's DEL cut off the new one")
            try:
                node.plugin("CHECK", "web-0", new_ns, new_id, new.result)
            except CniError as exc:
                problems.append(f"CHECK of the new sandbox failed: {exc}")
            node.plugin("DEL", "web-0", new_ns, new_id, new.result)
    return problems


# --------------------------------------------------------------------------- campaign


async def clock_steps() -> list[str]:
    """The wall clock stepped back and forward an hour under a daemon (in process, its
    wall and monotonic clocks injected: the machine's clock is never changed): a waiting ADD
    still ends at its deadline, a released address still cools for its whole cooldown and is
    not handed out early, and a restart after a step back keeps the cooldown bounded."""
    from tests.adapters.harness import World, add_request, call, del_request, eventually, until

    violations: list[str] = []
    world = World.create()
    try:
        d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="5")
        await d.start()
        try:
            world.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.THROTTLED)
            waiting = asyncio.create_task(call(world.socket_path, add_request(1)))
            await eventually(lambda: d.executor.node.waiting == 1)
            world.clock.step_wall(-3600.0)
            try:
                await until(waiting.done, world.clock, step=1.0, limit=8)
            except AssertionError:
                violations.append("a wall step back kept an ADD waiting past its deadline")
            if not waiting.done():
                waiting.cancel()
        finally:
            await d.stop()
        d = world.daemon(WARM_IP_TARGET="3", IP_COOLDOWN_PERIOD="30")
        await d.start()
        try:
            await until(lambda: d.executor.stats().available >= 3, world.clock)
            first = await call(world.socket_path, add_request(2))
            await call(world.socket_path, del_request(2))
            world.clock.step_wall(3600.0)
            if d.executor.stats().cooling != 1:
                violations.append("a wall step forward ended a cooldown")
            others = [await call(world.socket_path, add_request(n)) for n in (3, 4)]
            if any(r.ok and r.result.get("ipv4") == first.result.get("ipv4") for r in others):
                violations.append("an address cooling 0 s of 30 s went to another pod")
            for n in (3, 4):
                await call(world.socket_path, del_request(n))
        finally:
            await d.stop()
        world.clock.step_wall(-7200.0)  # the restart reads release times from the future
        d = world.daemon(WARM_IP_TARGET="3", IP_COOLDOWN_PERIOD="30")
        await d.start()
        try:
            await world.clock.advance(31.0)
            if d.executor.stats().cooling:
                violations.append("after a step back, restored cooldowns outlast their 30 s")
        finally:
            await d.stop()
    finally:
        world.cleanup()
    return violations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of each class")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    root = os.geteuid() == 0
    classes: dict[str, tuple[Callable[[], list[str]], bool]] = {
        "disk_full": (disk_full, True),
        "read_only": (read_only, True),
        "second_daemon": (second_daemon, False),
        "hostile_files": (hostile_files, False),
        "idle_flood": (lambda: idle_flood(3000), False),
        "sandbox_recreation": (sandbox_recreation, True),
    }
    report: dict[str, dict[str, Any]] = {}
    for name, (run, needs_root) in classes.items():
        if needs_root and not root:
            report[name] = {"runs": 0, "violations": 0, "note": "needs root: skipped"}
            continue
        violations: list[str] = []
        for _ in range(rounds):
            try:
                violations += run()
            except Exception as exc:
                violations.append(f"{type(exc).__name__}: {exc}")
        report[name] = {"runs": rounds, "violations": len(violations),
                        "examples": violations[:3]}  # fmt: skip
        print(f"== {name}: {report[name]}", file=sys.stderr, flush=True)
    violations = []
    for _ in range(rounds):
        try:
            violations += asyncio.run(clock_steps())
        except Exception as exc:
            violations.append(f"{type(exc).__name__}: {exc}")
    report["clock_step"] = {"runs": rounds, "violations": len(violations),
                            "examples": violations[:3]}  # fmt: skip
    print(f"== clock_step: {report['clock_step']}", file=sys.stderr, flush=True)
    print(json.dumps({
        "classes": report,
        "faults_injected": sum(c["runs"] for c in report.values()),
        "invariant_violations": sum(c["violations"] for c in report.values()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
