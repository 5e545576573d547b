"""Issue 16, items 8, 9 and 15, against the daemon process (fake cloud and datapath, real
checkpoint files and socket): what it reads at start, a second daemon on the same state
directory, stop signals, and ADDs cut off by a crash as the runtime sees them (libcni)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import protocol as p
from backends.checkpoint import read_checkpoint_file
from backends.statefile import UnsafeStateFile, read_state_file
from tests.adapters.harness import add_request, base_env
from tests.rigs.cni_runtime import SYSTEM_CNI_DIR, CniError, Libcni, PluginExec


class Daemon:
    """``vpc-ipamd`` as a process, its JSON log lines collected from stderr."""

    def __init__(self, state: str, nofile: int | None = None, **extra: str) -> None:
        env = {**os.environ, **base_env(state), "IPAMD_LOG_FORMAT": "json",
               "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO", **extra}  # fmt: skip
        self.state = state
        self.socket = env["IPAMD_SOCKET"]

        def limit() -> None:  # the default soft limit of many systems
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.rigs.crashpoints"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    def _read(self, wait: float) -> bool:
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], wait)
        if not ready:
            return True
        chunk = os.read(self.proc.stderr.fileno(), 65536)
        if not chunk:
            return False
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": line.decode(errors="replace")})
        return True

    def wait_for(self, prefix: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if str(line.get("event", "")).startswith(prefix):
                    return line
            seen = len(self.lines)
            if not self._read(0.2):
                break
        raise AssertionError(f"no {prefix!r} in time; log: {self.lines[-20:]}")

    def exit_code(self, timeout: float = 30.0) -> int:
        while self._read(0.1):
            if self.proc.poll() is not None and not select.select([self.proc.stderr], [], [], 0)[0]:
                break
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def state() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ipamd-", dir="/tmp")  # short: the socket path limit
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def start(daemons: list[Daemon], state: str, nofile: int | None = None, **extra: str) -> Daemon:
    d = Daemon(state, nofile, **extra)
    daemons.append(d)
    return d


def a_valid_checkpoint(daemons: list[Daemon]) -> tuple[str, str]:
    """A checkpoint holding one allocation, written by a daemon in a directory of its own."""
    elsewhere = tempfile.mkdtemp(prefix="ipamd-o-", dir="/tmp")
    d = start(daemons, elsewhere)
    d.wait_for("serving")
    reply = p.request(d.socket, add_request(1), timeout=10)
    assert reply.ok, reply
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    return os.path.join(elsewhere, "ipam.json"), reply.result["ipv4"]


# --------------------------------------------------------------------------- item 8


def test_a_checkpoint_that_is_a_symlink_is_never_followed(
    state: str, daemons: list[Daemon]
) -> None:
    outside, ipv4 = a_valid_checkpoint(daemons)
    original = Path(outside).read_bytes()
    os.symlink(outside, os.path.join(state, "ipam.json"))
    d = start(daemons, state)
    line = d.wait_for("CHECKPOINT UNREADABLE")
    assert "symbolic link" in line["error"]
    d.wait_for("serving")
    assert read_checkpoint_file(os.path.join(state, "ipam.json")).allocations == ()  # type: ignore[union-attr]
    assert Path(outside).read_bytes() == original  # the target was neither read nor moved
    assert os.path.islink(line["moved_to"])
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    shutil.rmtree(os.path.dirname(outside), ignore_errors=True)
    assert ipv4


@pytest.mark.parametrize("name", ["ipam.json", "ipam.json.netns"])
def test_a_fifo_among_the_start_files_does_not_hang_the_start(
    state: str, daemons: list[Daemon], name: str
) -> None:
    os.mkfifo(os.path.join(state, name))
    d = start(daemons, state)
    d.wait_for("serving", timeout=30)
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0


def test_a_device_is_not_read(state: str, daemons: list[Daemon]) -> None:
    os.symlink("/dev/zero", os.path.join(state, "ipam.json"))
    d = start(daemons, state)
    d.wait_for("CHECKPOINT UNREADABLE", timeout=30)
    d.wait_for("serving")


def test_state_file_reads_are_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 4097)
    with pytest.raises(UnsafeStateFile, match="larger than 4096"):
        read_state_file(str(big), 4096)
    assert read_state_file(str(big), 4097) == b"x" * 4097
    with pytest.raises(IsADirectoryError):
        read_state_file(str(tmp_path), 10)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeStateFile, match="not a regular file"):
        read_state_file(str(tmp_path / "fifo"), 10)
    with pytest.raises(FileNotFoundError):
        read_state_file(str(tmp_path / "missing"), 10)


# --------------------------------------------------------------------------- item 9


def test_a_second_daemon_on_the_same_state_directory_leaves_the_first_alone(
    state: str, daemons: list[Daemon]
) -> None:
    first = start(daemons, state)
    first.wait_for("serving")
    assert p.request(first.socket, add_request(1), timeout=10).ok
    # the first daemon folds its journal into ipam.json about a second after the ADD; from
    # then on it writes nothing, so any change to the files is the second daemon's doing
    deadline = time.monotonic() + 10
    while b'"c0001"' not in Path(state, "ipam.json").read_bytes():
        assert time.monotonic() < deadline, "the ADD never reached ipam.json"
        time.sleep(0.05)
    files = ("ipam.json", "ipam.json.journal")
    before = [Path(state, name).read_bytes() for name in files]
    second = start(daemons, state)
    assert second.exit_code() == 1
    assert any("lock" in str(line.get("event")) for line in second.lines), second.lines
    assert [Path(state, name).read_bytes() for name in files] == before
    reply = p.request(first.socket, add_request(2), timeout=10)  # still reachable
    assert reply.ok, reply


def test_a_socket_someone_listens_on_is_never_unlinked(state: str, daemons: list[Daemon]) -> None:
    other_dir = tempfile.mkdtemp(prefix="ipamd-s-", dir="/tmp")
    path = os.path.join(other_dir, "ipam.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen()
        inode = os.lstat(path).st_ino
        d = start(daemons, state, IPAMD_SOCKET=path)
        assert d.exit_code() == 1
        assert os.lstat(path).st_ino == inode
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(path)  # the listener is still reachable
        probe.close()
    finally:
        listener.close()
        shutil.rmtree(other_dir, ignore_errors=True)


# --------------------------------------------------------------------------- item 15


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_stop_signals_stop_in_order(state: str, daemons: list[Daemon], sig: int) -> None:
    d = start(daemons, state)
    d.wait_for("serving")
    reply = p.request(d.socket, add_request(1), timeout=10)
    d.proc.send_signal(sig)
    assert d.exit_code() == 0
    assert not os.path.exists(d.socket)
    saved = read_checkpoint_file(os.path.join(state, "ipam.json"))
    assert saved is not None and [a.ipv4 for a in saved.allocations] == [reply.result["ipv4"]]


def test_a_stop_signal_during_the_start_stops_it(state: str, daemons: list[Daemon]) -> None:
    d = start(daemons, state, IPAMD_FAKE_LATENCY="realistic")
    d.wait_for("starting")
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    assert not os.path.exists(d.socket)


def test_an_add_cut_off_by_a_crash_is_try_again_later(
    state: str, daemons: list[Daemon], libcni_runner: Path
) -> None:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR}")
    # The start writes the checkpoint once; the ADD's commit is the second write.
    d = start(
        daemons, state, IPAMD_CRASH_POINT="checkpoint.temp-written:2",
        IPAMD_CHECKPOINT_JOURNAL="false",  # the full-rewrite store: these are its steps
    )  # fmt: skip
    d.wait_for("serving")
    work = tempfile.mkdtemp(prefix="ipamd-cni-", dir="/tmp")
    try:
        runtime = Libcni(str(libcni_runner), work, d.socket, os.path.join(state, "pending"), None)
        with pytest.raises(CniError) as cut:
            runtime("ADD", "web-0", "/var/run/netns/cni-crash", "c0crash")
        assert cut.value.doc["code"] == 11, cut.value.doc
        assert d.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- item 13


@pytest.fixture
def runtime(state: str, daemons: list[Daemon], libcni_runner: Path) -> Iterator[Any]:
    """A daemon and libcni with the shipped conflist pointed at it."""
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR}")
    d = start(daemons, state)
    d.wait_for("serving")
    work = tempfile.mkdtemp(prefix="ipamd-cni-", dir="/tmp")
    try:
        yield d, Libcni(str(libcni_runner), work, d.socket, os.path.join(state, "pending"), None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def held(d: Daemon) -> list[str]:
    """How many addresses the daemon holds (its STATUS)."""
    reply = p.request(d.socket, p.Request(p.OP_STATUS, network_name="aws-cni"), timeout=10)
    return [str(reply.result["assigned"])]


def test_del_with_a_netns_outside_the_allowed_directories_releases(runtime: Any) -> None:
    d, cni = runtime
    result = cni("ADD", "web-0", "/var/run/netns/cni-del1", "c0del1")
    assert held(d) == ["1"], result
    cni("DEL", "web-0", "/opt/elsewhere/netns/x", "c0del1")  # exits 0
    assert held(d) == ["0"]


def test_del_of_a_sandbox_whose_add_was_refused_succeeds(runtime: Any) -> None:
    _d, cni = runtime
    with pytest.raises(CniError) as refused:
        cni("ADD", "Web-0", "/var/run/netns/cni-del2", "c0del2")  # not a Kubernetes name
    assert refused.value.doc["code"] == 4
    cni("DEL", "Web-0", "/var/run/netns/cni-del2", "c0del2")  # exits 0


# --------------------------------------------------------------------------- item 11


def connected(sockets: list[socket.socket], deadline: float) -> None:
    """Wait (on the sockets, epoll) until every non-blocking connect has completed or failed."""
    import selectors

    waiting = selectors.DefaultSelector()
    for s in sockets:
        waiting.register(s, selectors.EVENT_WRITE)
    while waiting.get_map() and time.monotonic() < deadline:
        for key, _ in waiting.select(timeout=1.0):
            waiting.unregister(key.fileobj)
    waiting.close()


def test_thousands_of_idle_http_connections_do_not_block_cni_adds(
    state: str, daemons: list[Daemon], libcni_runner: Path
) -> None:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for the flood")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), hard))
    d = start(daemons, state, nofile=1024)  # the daemon raises it itself
    ports = [d.wait_for("introspection serving")["port"], d.wait_for("metrics serving")["port"]]
    d.wait_for("serving")
    flood: list[socket.socket] = []
    work = tempfile.mkdtemp(prefix="ipamd-cni-", dir="/tmp")
    try:
        for i in range(3000):  # idle: connected, nothing sent
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", ports[i % 2]))
            flood.append(s)
        connected(flood, deadline=time.monotonic() + 30)  # past the listen backlog: accepted
        runtime = Libcni(str(libcni_runner), work, d.socket, os.path.join(state, "pending"), None)
        began = time.monotonic()
        for n in range(3):
            result = runtime("ADD", f"web-{n}", f"/var/run/netns/cni-flood{n}", f"c0flood{n}")
            assert result["ips"], result
        assert time.monotonic() - began < 60
    finally:
        for s in flood:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d.proc.send_signal(signal.SIGTERM)
    assert d.exit_code() == 0
    errors = [line for line in d.lines if line.get("level") == "error"]
    assert len(errors) < 20, errors[:5]


# --------------------------------------------------------------------------- CHECK


def test_check_with_the_conflists_mtu_and_prev_result(runtime: Any, state: str) -> None:
    _d, cni = runtime
    conf = json.loads(cni.conflist.read_text())
    conf["plugins"][0]["mtu"] = 1500  # not POD_MTU (9001): ADD applied it, CHECK must too
    cni.conflist.write_text(json.dumps(conf))
    result = cni("ADD", "web-0", "/var/run/netns/cni-chk1", "c0chk1")
    cni("CHECK", "web-0", "/var/run/netns/cni-chk1", "c0chk1")
    # The same CHECK with a prevResult naming another address fails (the spec's CHECK).
    direct = PluginExec({**conf["plugins"][0], "cniVersion": "1.0.0", "name": conf["name"]})
    other = json.loads(json.dumps(result))
    other["ips"][0]["address"] = "10.255.255.254/32"
    with pytest.raises(CniError, match="differs from prevResult"):
        direct("CHECK", "web-0", "/var/run/netns/cni-chk1", "c0chk1", other)
    direct("CHECK", "web-0", "/var/run/netns/cni-chk1", "c0chk1", result)
