"""Fuzz targets for input that arrives from outside, and the contract each must keep.

Three targets, each a function ``bytes -> None`` that raises :class:`Violation` when an input
breaks its module's contract (a finding) and returns otherwise:

- ``plugin``: the CNI plugin's whole command path (``adapters.cni.plugin.Plugin.run``) on a
  fuzzed stdin, a fuzzed environment and a fuzzed daemon reply frame. Contract: exit code 0
  with the spec's output, or 1 with exactly one CNI error object whose code is one of the
  spec's and which is not the catch-all "internal plugin error" (an unexpected exception);
  pending-DEL records land in the record directory and nowhere else.
- ``server``: the daemon's socket reading and request decoding (``adapters.ipamd.server``'s
  connection protocol and ``SocketServer.dispatch``) on garbage, truncated, oversized,
  chunked and stalled frames. Contract: exactly one reply frame per connection, then close;
  an error reply carries a daemon error code, and the outcome matches
  ``adapters.protocol.decode_request`` on the same bytes.
- ``checkpoint``: ``ipamcore.checkpoint.decode``. Contract: a Checkpoint that encodes and
  decodes back to itself, or a ``CheckpointError`` with a short, non-empty message.

Every input runs under a hang guard (:func:`deadline`, a real-time interval timer) so a loop
that never ends is a finding too. Input layouts are plain bytes with separators, so seeds are
readable and mutations stay meaningful: see :func:`plugin_seeds` and friends.

The engine is atheris when installed (``benchmarks/reliability_fuzz.py``), else the small
deterministic mutator :func:`mutate` here, which the CI short run uses
(``tests/reliability/test_fuzz.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from adapters import protocol as p
from adapters.cni import plugin as cni
from adapters.ipamd import server as srv
from ipamcore import checkpoint as ckpt
from ipamcore.config import PoolConfig
from ipamcore.errors import CheckpointError
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.model import ObservedEni

SEP = b"\x1e"  # between the fields of a plugin input
CHUNK = b"\x1f"  # between the chunks of a server input
MAX_ERROR_MESSAGE = 1000  # a "clear error" is also a short one
CNI_CODES = frozenset(
    {
        cni.E_INCOMPATIBLE_VERSION, cni.E_UNSUPPORTED_FIELD, cni.E_UNKNOWN_CONTAINER,
        cni.E_INVALID_ENV, cni.E_IO, cni.E_DECODE, cni.E_INVALID_CONFIG, cni.E_TRY_AGAIN,
        cni.E_NOT_AVAILABLE, cni.E_OTHER,
    }
)  # fmt: skip


class Violation(Exception):
    """An input broke the target's contract."""


class Hang(BaseException):
    """The per-input time bound passed (BaseException: no ``except Exception`` swallows it)."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise Hang("input took longer than the hang bound")


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds``."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- plugin


class _SandboxedPlugin(cni.Plugin):
    """The real plugin with its three ways out replaced: the daemon answers with the fuzzed
    reply frame, the log is discarded, and ``ip link del`` is recorded, not run. Pending-DEL
    records are really written, into the sandbox directory."""

    def __init__(self, environ: dict[str, str], stdin: bytes, reply: bytes, sandbox: str) -> None:
        super().__init__(environ, stdin, io.StringIO())
        self.reply = reply
        self.sandbox = sandbox
        self.deleted_links: list[str] = []

    def make_logger(self, conf: cni.NetConf) -> cni.Logger:
        return cni.Logger("", conf.log_level)

    def _call(self, conf: cni.NetConf, req: p.Request) -> p.Reply:
        p.encode_request(req)  # what p.request does before it connects
        if self.reply == b"!unavailable":
            raise p.ProtocolError(p.ERR_UNAVAILABLE, "cannot connect (fuzz)")
        if self.reply == b"!timeout":
            raise p.ProtocolError(p.ERR_TIMEOUT, "no reply (fuzz)")
        return p.decode_reply(self.reply)

    def _record_pending_del(self, conf: cni.NetConf, req: p.Request, why: str) -> None:
        conf.pending_del_dir = self.sandbox
        super()._record_pending_del(conf, req, why)

    def _delete_link(self, veth: str, tag: str) -> None:
        self.deleted_links.append(veth)


def _fast_tmp() -> str | None:
    """tmpfs when there is one: the plugin fsyncs every pending-DEL record it writes."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _env_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as os.environ decodes


def split_plugin_input(data: bytes) -> tuple[dict[str, str], bytes, bytes]:
    """``COMMAND SEP CONTAINERID SEP IFNAME SEP NETNS SEP CNI_ARGS SEP REPLY SEP STDIN``;
    a missing field is an unset variable."""
    fields = data.split(SEP, 6)
    names = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS")
    environ = {
        name: _env_text(value) for name, value in zip(names, fields[:5], strict=False)
    }
    environ = {k: v for k, v in environ.items() if "\x00" not in v}  # execve cannot pass NUL
    reply = fields[5] if len(fields) > 5 else b"!unavailable"
    stdin = fields[6] if len(fields) > 6 else b""
    return environ, reply, stdin


class PluginTarget:
    """The plugin target with its sandbox directory (call :meth:`close` when done)."""

    name = "plugin"

    def __init__(self) -> None:
        self.sandbox = tempfile.mkdtemp(prefix=f"ipamcore-fuzz-{os.getpid()}-", dir=_fast_tmp())

    def close(self) -> None:
        shutil.rmtree(self.sandbox, ignore_errors=True)

    def __call__(self, data: bytes) -> None:
        environ, reply, stdin = split_plugin_input(data)
        if len(stdin) > cni.MAX_STDIN:  # main() answers these before run()
            return
        plugin = _SandboxedPlugin(environ, stdin, reply, self.sandbox)
        rc = plugin.run()
        out = plugin.stdout.getvalue()
        self._check_records()
        command = environ.get("CNI_COMMAND", "")
        lines = out.splitlines()
        if rc == 1:
            if len(lines) != 1:
                raise Violation(f"error exit with {len(lines)} output lines: {out[:300]!r}")
            _check_cni_error(json.loads(lines[0]))
            return
        if rc != 0:
            raise Violation(f"exit code {rc}")
        if command in ("ADD", "VERSION"):
            if len(lines) != 1:
                raise Violation(f"{command} success with {len(lines)} output lines")
            doc = json.loads(lines[0])
            if command == "ADD" and not (doc.get("ips") and doc.get("interfaces")):
                raise Violation(f"ADD success without ips/interfaces: {lines[0][:300]}")
            if command == "VERSION" and "supportedVersions" not in doc:
                raise Violation("VERSION answer has no supportedVersions")
        elif lines:
            raise Violation(f"{command} success wrote output: {out[:300]!r}")
        for veth in plugin.deleted_links:
            p.validate_if_name(veth)

    def _check_records(self) -> None:
        for name in os.listdir(self.sandbox):
            path = os.path.join(self.sandbox, name)
            if not (name.startswith("del-") and name.endswith(".json")):
                raise Violation(f"unexpected file in the pending-DEL directory: {name!r}")
            with open(path, "rb") as f:
                req = p.decode_request(f.read())
            if req.op != p.OP_DEL:
                raise Violation(f"pending record holds {req.op}")
            os.unlink(path)


def _check_cni_error(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise Violation(f"error output is not an object: {doc!r}"[:300])
    code, msg, details = doc.get("code"), doc.get("msg"), doc.get("details")
    if not isinstance(doc.get("cniVersion"), str) or code not in CNI_CODES:
        raise Violation(f"malformed CNI error: {doc!r}"[:300])
    if not isinstance(msg, str) or not msg or not isinstance(details, str):
        raise Violation(f"CNI error without msg/details: {doc!r}"[:300])
    if msg == "internal plugin error":
        raise Violation(f"unhandled exception in the plugin: {details}")
    if len(msg) + len(details) > 2 * MAX_ERROR_MESSAGE + p.MAX_MESSAGE_SIZE // 8:
        raise Violation(f"CNI error message of {len(msg) + len(details)} characters")


def _conf(**extra: Any) -> bytes:
    doc = {"cniVersion": "1.0.0", "name": "aws-cni", "type": "aws-cni", **extra}
    return json.dumps(doc).encode()


def _add_reply(**extra: Any) -> bytes:
    result = {
        "host_veth": "eni1a2b3c4d5e6", "if_name": "eth0", "ipv4": "10.0.1.5",
        "prefix_len": 32, "mac": "02:00:00:00:00:01", "eni_id": "eni-0123", "mtu": 9001,
        **extra,
    }  # fmt: skip
    return p.encode_reply(p.Reply.success(result)).rstrip(b"\n")


def plugin_seeds() -> list[bytes]:
    cid, netns = b"0123456789abcdef", b"/var/run/netns/cni-1234"
    args = b"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eni1a2b3c4d5e6"}, {"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.0.1.5/32", "interface": 1}],
    }
    err = p.error_reply(p.ERR_POOL_EMPTY, "no address").rstrip(b"\n")
    ok = p.encode_reply(p.Reply.success()).rstrip(b"\n")

    def seed(cmd: bytes, reply: bytes, stdin: bytes, c: bytes = cid, i: bytes = b"eth0",
             n: bytes = netns, a: bytes = args) -> bytes:  # fmt: skip
        return SEP.join((cmd, c, i, n, a, reply, stdin))

    return [
        seed(b"ADD", _add_reply(), _conf()),
        seed(b"ADD", _add_reply(ipv6="2001:db8::5", gateway_v6="fe80::1"), _conf(mtu=1500)),
        seed(b"ADD", err, _conf(cniVersion="0.4.0")),
        seed(b"ADD", b"!timeout", _conf(cniVersion="1.1.0", timeoutSeconds=2)),
        seed(b"DEL", ok, _conf(prevResult=prev)),
        seed(b"DEL", b"!unavailable", _conf(prevResult=prev)),
        seed(b"DEL", b"!unavailable", _conf(pendingDelDir="/var/run/aws-node/pending-del")),
        seed(b"CHECK", ok, _conf(prevResult=prev)),
        seed(b"STATUS", ok, _conf()),
        seed(b"GC", ok, _conf(**{"cni.dev/valid-attachments": [
            {"containerID": "0123456789abcdef", "ifname": "eth0"}]})),
        seed(b"VERSION", b"", _conf()),
        seed(b"ADD", _add_reply(), _conf(), c=b"../../etc/passwd", i=b"../eth0"),
        seed(b"DEL", b"!unavailable", _conf(), c=b"a" * 300, n=b"/proc/1/../../etc"),
        seed(b"ADD", _add_reply(), _conf(), a=b"K8S_POD_NAME=..;K8S_POD_NAMESPACE=x\xc3\xa9"),
        seed(b"ADD", _add_reply(), _conf(socketPath="/run/../tmp/x", pluginLogFile="a/../b")),
    ]


# --------------------------------------------------------------------------- server


class _Transport(asyncio.Transport):
    """Records what the connection writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.writes_after_close = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.writes_after_close += 1
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _EchoServer(srv.SocketServer):
    """The real server's reading and dispatch; a decoded request is answered at once (the
    handlers, which need a whole agent, are tested elsewhere)."""

    def __init__(self) -> None:
        super().__init__(agent=None, path="", read_timeout_s=3600.0)  # type: ignore[arg-type]

    async def _serve(self, req: p.Request, transport: asyncio.Transport) -> None:
        srv._send(transport, p.encode_reply(p.Reply.success({"op": req.op})))


def split_server_input(data: bytes) -> tuple[list[bytes], bool]:
    """First byte: bit 0 split the rest into chunks at CHUNK, bit 1 repeat it past the size
    limit, bit 2 the read timer fires instead of EOF. Returns (chunks, timed_out)."""
    mode = data[0] if data else 0
    payload = data[1:]
    chunks = payload.split(CHUNK) if mode & 1 else [payload]
    if mode & 2 and payload:  # each chunk repeated: as many chunks, past the limit in total
        repeat = p.MAX_MESSAGE_SIZE // len(payload) + 2
        chunks = [c * repeat for c in chunks]
    return [c for c in chunks if c], bool(mode & 4)


def _expected_reply(stream: bytes) -> tuple[bool, str]:
    """(ok, error code) the server must answer for this byte stream."""
    newline = stream.find(b"\n")
    if newline < 0:
        return False, p.ERR_TOO_LARGE if len(stream) > p.MAX_MESSAGE_SIZE else p.ERR_BAD_REQUEST
    frame = stream[: newline + 1]
    if len(frame) > p.MAX_MESSAGE_SIZE:
        return False, p.ERR_TOO_LARGE
    try:
        p.decode_request(frame)
    except p.ProtocolError as e:
        return False, e.code
    return True, ""


class ServerTarget:
    name = "server"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def __call__(self, data: bytes) -> None:
        chunks, timed_out = split_server_input(data)
        transport = self.loop.run_until_complete(self._connection(chunks, timed_out))
        stream = b"".join(chunks)
        frame = bytes(transport.written)
        if not transport.closed:
            raise Violation("connection left open")
        if transport.writes_after_close:
            raise Violation("wrote after closing")
        if frame.count(b"\n") != 1 or not frame.endswith(b"\n"):
            raise Violation(f"not exactly one reply frame: {frame[:200]!r}")
        if len(frame) > p.MAX_MESSAGE_SIZE:
            raise Violation(f"reply of {len(frame)} bytes")
        reply = p.decode_reply(frame)
        expected_ok, expected_code = _expected_reply(stream)
        if reply.ok != expected_ok or (not reply.ok and reply.error_code != expected_code):
            raise Violation(
                f"reply {reply!r} but decode_request says ok={expected_ok} {expected_code}"
            )
        if not reply.ok and (
            reply.error_code not in p.DAEMON_ERROR_CODES
            or not reply.error_message
            or len(reply.error_message) > MAX_ERROR_MESSAGE
        ):
            raise Violation(f"unclear error reply {reply!r}"[:400])

    async def _connection(self, chunks: list[bytes], timed_out: bool) -> _Transport:
        server = _EchoServer()
        conn = srv._Connection(server)
        transport = _Transport()
        conn.connection_made(transport)
        for chunk in chunks:
            conn.data_received(chunk)
        if timed_out:
            conn._timed_out()
        else:
            conn.eof_received()
        while server._in_flight:
            await asyncio.gather(*server._in_flight)
        conn.connection_lost(None)
        return transport


def server_seeds() -> list[bytes]:
    base = {"version": 1, "network_name": "aws-cni", "container_id": "0123456789abcdef",
            "if_name": "eth0", "netns": "/var/run/netns/cni-1", "pod_namespace": "default",
            "pod_name": "web-0"}  # fmt: skip
    frames = [
        p.encode_request(p.Request(p.OP_ADD, **{k: v for k, v in base.items() if k != "version"},
                                   mtu=1500)),
        json.dumps({**base, "op": "del", "prev_result": {"interfaces": []}}).encode() + b"\n",
        json.dumps({**base, "op": "check"}).encode() + b"\n",
        json.dumps({"version": 1, "op": "status"}).encode() + b"\n",
        json.dumps({"version": 1, "op": "gc", "network_name": "aws-cni", "valid_attachments": [
            {"container_id": "abc", "if_name": "eth0"}]}).encode() + b"\n",
        json.dumps({**base, "op": "add", "container_id": "../../x"}).encode() + b"\n",
        json.dumps({**base, "op": "add", "netns": "/proc/1/ns/../../../etc"}).encode() + b"\n",
        b'{"version": 2, "op": "add"}\n',
        b"garbage\n",
        b"",
    ]
    seeds = []
    for i, frame in enumerate(frames):
        seeds.append(bytes([0]) + frame)
        seeds.append(bytes([1]) + frame[:7] + CHUNK + frame[7:])
        seeds.append(bytes([4 + (i & 1)]) + frame[:-1])
        seeds.append(bytes([2]) + frame[:20])
    return seeds


# --------------------------------------------------------------------------- checkpoint


_NODE_ENI = ObservedEni(
    eni_id="eni-0123", mac="02:00:00:00:00:01", device_index=0, subnet_id="subnet-1",
    subnet_cidr="10.0.0.0/20", primary_ip="10.0.1.4",
    ipv4_addresses=("10.0.1.5", "10.0.1.6", "10.0.1.9"), ipv6_prefixes=("2001:db8::/80",),
    is_primary=True,
)  # fmt: skip
_NOW = 1_700_000_100.0


class CheckpointTarget:
    """Decode, then restore what decoded into a core that knows one ENI (as the daemon does
    at start)."""

    name = "checkpoint"

    def close(self) -> None:
        pass

    def __call__(self, data: bytes) -> None:
        try:
            decoded = ckpt.decode(data)
        except CheckpointError as e:
            message = str(e)
            if not message or len(message) > MAX_ERROR_MESSAGE:
                raise Violation(f"unclear checkpoint error ({len(message)} chars)") from None
            return
        again = ckpt.decode(ckpt.encode(decoded))
        if again != decoded:
            raise Violation(f"round trip changed the checkpoint: {decoded!r} -> {again!r}"[:400])
        ipam = Ipam(PoolConfig(), limits_for("m5.large"))
        ipam.load([_NODE_ENI], _NOW)
        report = ipam.restore(decoded, _NOW)
        if len(report.restored) + len(report.dropped) != len(decoded.allocations):
            raise Violation("restore lost allocations without a reason")


def checkpoint_seeds() -> list[bytes]:
    alloc = {
        "networkName": "aws-cni", "containerID": "0123456789abcdef", "ifName": "eth0",
        "ipv4": "10.0.1.5", "ipv6": "", "allocationTimestamp": 1_700_000_000_123_456_789,
        "metadata": {"k8sPodNamespace": "default", "k8sPodName": "web-0"},
    }  # fmt: skip
    v6 = {**alloc, "containerID": "fedcba", "ipv4": "", "ipv6": "2001:db8::5"}
    released = [{"address": "10.0.1.9", "releasedAt": 1_700_000_001_000_000_000}]
    docs: list[Any] = [
        {"version": ckpt.CHECKPOINT_VERSION, "allocations": [alloc, v6]},
        {"version": ckpt.CHECKPOINT_VERSION, "allocations": [alloc],
         "releasedAddresses": released},
        {"version": ckpt.CHECKPOINT_VERSION, "allocations": None},
        {"version": "vpc-cni-ipam/2", "allocations": []},
        {"version": ckpt.CHECKPOINT_VERSION, "allocations": [alloc, alloc]},
        {"version": ckpt.CHECKPOINT_VERSION,
         "allocations": [{**alloc, "allocationTimestamp": 2**70}]},
    ]
    return [json.dumps(d).encode() for d in docs] + [b"", b"[]", b"\xff\xfe{", b"[" * 5000]


# --------------------------------------------------------------------------- engine

TARGETS: dict[str, Callable[[], Any]] = {
    "plugin": PluginTarget,
    "server": ServerTarget,
    "checkpoint": CheckpointTarget,
}
SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "plugin": plugin_seeds,
    "server": server_seeds,
    "checkpoint": checkpoint_seeds,
}
TOKENS = (
    b"\n", b"\x00", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b'"', b"\\", b"{", b"}", b"[", b"]",
    b",", b":", b"../", b"/..", b"//", b"./", b"/proc/", b"/var/run/netns/", b"null", b"true",
    b"false", b"0", b"-1", b"1e999", b"NaN", b"Infinity", b"9" * 40, b"9" * 5000, b"\\u0000",
    b"\\ud800", b'"version"', b'"op"', b'"add"', b'"del"', b'"gc"', b'"netns"',
    b'"container_id"', b'"if_name"', b'"prev_result"', b'"valid_attachments"', b'"mtu"',
    b'"cniVersion"', b'"1.1.0"', b'"0.4.0"', b'"prevResult"', b'"interfaces"', b'"sandbox"',
    b'"pendingDelDir"', b'"pluginLogFile"', b'"socketPath"', b'"timeoutSeconds"',
    b'"allocations"', b'"releasedAddresses"', b'"allocationTimestamp"', b'"containerID"',
    b'"ok"', b"K8S_POD_NAME=", b"K8S_POD_NAMESPACE=", b";", b"=", SEP, CHUNK,
)  # fmt: skip


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """One to four random edits: bit flips, byte and token insertion, deletion, duplication,
    truncation and splicing with another seed."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 3 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4 and buf:
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end]
        elif op == 5:
            del buf[pos:]
        elif op == 6:
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:]
        elif buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice(b"\x00\n\"{}[]/.:;=\\\x1e\x1f\xff0")
    return bytes(buf)


def inputs(name: str, count: int, seed: int = 0) -> Iterator[bytes]:
    """``count`` inputs for target ``name``: its seeds, then mutants, mostly of a seed (so
    most stay close to valid and reach the deep paths), some of earlier mutants (a small
    pool), and a few purely random byte strings."""
    rng = random.Random(seed)
    seeds = SEEDS[name]()
    pool = list(seeds)
    for i in range(count):
        if i < len(seeds):
            yield seeds[i]
            continue
        roll = rng.random()
        if roll < 0.02:
            yield rng.randbytes(rng.randint(0, 64))
            continue
        parent = rng.choice(seeds) if roll < 0.7 else rng.choice(pool)
        mutant = mutate(parent, rng, seeds)
        if rng.random() < 0.1 and len(mutant) < 4096:
            pool[rng.randrange(len(pool))] = mutant
        yield mutant


def run_one(target: Callable[[bytes], None], data: bytes, hang_s: float) -> str | None:
    """Run one input; the finding as text, or None."""
    try:
        with deadline(hang_s):
            target(data)
    except Violation as e:
        return f"violation: {e}"
    except Hang:
        return f"hang: more than {hang_s:g}s"
    except Exception as e:
        return f"unhandled {type(e).__name__}: {e}"[:1000]
    return None
