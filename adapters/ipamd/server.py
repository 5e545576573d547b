"""The Unix socket server: one JSON-line request per connection (adapters.protocol).

The socket is created with mode 0600 (umask during bind, then chmod) and owned by the
daemon's user; a peer whose uid (SO_PEERCRED) is not root, the daemon's own or one of
``allowed_uids`` gets a ``forbidden`` reply, so a socket whose mode was widened still refuses
other users. Hostile input costs nothing: a frame over 64 KiB, a connection closed before
the newline, garbage, or a client that sends nothing for ``read_timeout_s`` gets an error
reply (when the peer still listens) and the connection is closed; nothing reaches the core.
Requests run concurrently, one task per connection; :meth:`SocketServer.stop` stops
accepting and waits for the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Iterable

from adapters import protocol as p
from adapters.ipamd.executor import NodeExecutor
from adapters.ipamd.handlers import handle

SOCKET_MODE = 0o600
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _Connection(asyncio.Protocol):
    """One client connection: buffer until the newline, answer once, close.

    A plain Protocol (not streams): the per-request cost on the event loop thread is what
    bounds the daemon's throughput, and streams add a reader, a writer and extra wake-ups.
    """

    def __init__(self, server: SocketServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server.read_timeout_s, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        newline = data.find(b"\n")
        if newline < 0:
            self._buffer += data
            if len(self._buffer) > p.MAX_MESSAGE_SIZE:
                self._reject(p.ERR_TOO_LARGE, f"request exceeds {p.MAX_MESSAGE_SIZE} bytes")
            return
        self._buffer += data[: newline + 1]
        if len(self._buffer) > p.MAX_MESSAGE_SIZE:
            self._reject(p.ERR_TOO_LARGE, f"request exceeds {p.MAX_MESSAGE_SIZE} bytes")
            return
        self._answered = True
        self._cancel_timer()
        assert self._transport is not None
        self._transport.pause_reading()
        self._task = self._server.dispatch(bytes(self._buffer), self._transport)
        if self._task is not None:
            self._transport.resume_reading()  # to see the EOF of a client that leaves

    def eof_received(self) -> bool:
        if self._task is not None and not self._task.done():
            # The protocol's clients never half-close: EOF while a request is served means
            # the client is gone (the plugin was killed or timed out). An ADD keeps no
            # address for it; a DEL still completes.
            self._server.client_gone(self._task)
        if not self._answered:
            what = "before any data" if not self._buffer else "before the newline"
            self._reject(p.ERR_BAD_REQUEST, f"connection closed {what}")
        return True  # keep the transport open: the reply may still be in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _timed_out(self) -> None:
        if not self._answered:
            self._reject(p.ERR_BAD_REQUEST, "no complete request in time")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _reject(self, code: str, message: str) -> None:
        self._answered = True
        self._cancel_timer()
        self._server.rejected += 1
        assert self._transport is not None
        _send(self._transport, p.error_reply(code, message))


class SocketInUse(RuntimeError):
    """A process is listening on the socket path: it is not unlinked."""


def _someone_listens(path: str) -> bool:
    """Whether a connect to the Unix socket at ``path`` succeeds (a live daemon)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False  # refused (nobody listens), or not connectable at all: stale
    finally:
        probe.close()
    return True


def _send(transport: asyncio.Transport, data: bytes) -> None:
    if not transport.is_closing():
        transport.write(data)
        transport.close()


class SocketServer:
    def __init__(
        self,
        agent: NodeExecutor,
        path: str,
        read_timeout_s: float = 10.0,
        allowed_uids: Iterable[int] = (),
    ) -> None:
        self.agent = agent
        self.path = path
        self.read_timeout_s = read_timeout_s
        # Root and the daemon's own user always; a chmod'd socket lets no one else in.
        self.allowed_uids = frozenset({0, os.geteuid(), *allowed_uids})
        self._server: asyncio.AbstractServer | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._inode: int | None = None  # the socket file this server bound
        self.rejected = 0

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                if _someone_listens(self.path):
                    raise SocketInUse(f"another process is listening on {self.path}")
                os.unlink(self.path)  # a stale socket of a previous run
        old = os.umask(0o177)
        try:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                lambda: _Connection(self), self.path, backlog=1024
            )
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        self._inode = os.lstat(self.path).st_ino

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, then wait (bounded, real time) for requests in flight."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)  # ours: never another process's socket at that path
        self._inode = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)

    def refused_peer(self, transport: asyncio.BaseTransport) -> str:
        """Why the peer may not use the socket ("" if it may): its uid (SO_PEERCRED) must be
        in :attr:`allowed_uids`."""
        sock = transport.get_extra_info("socket")
        if sock is None:  # not a socket transport (in-memory tests)
            return ""
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError as exc:
            return f"cannot read peer credentials: {exc.strerror or exc}"
        _pid, uid, _gid = _UCRED.unpack(creds)
        if uid in self.allowed_uids:
            return ""
        return f"uid {uid} may not use this socket"

    def client_gone(self, task: asyncio.Task[None]) -> None:
        """The client of the request ``task`` serves closed its end."""
        if self.agent is not None:
            self.agent.client_gone(task)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def dispatch(self, frame: bytes, transport: asyncio.Transport) -> asyncio.Task[None] | None:
        """A complete frame arrived: check the peer, decode the frame here, handle it in a task
        of its own. (A refused peer is answered only once its frame is read: a close with
        unread data would reset the connection and lose the reply.)"""
        try:
            refused = self.refused_peer(transport)
            if refused:
                raise p.ProtocolError(p.ERR_FORBIDDEN, refused)
            req = p.decode_request(frame)
        except p.ProtocolError as exc:
            self.rejected += 1
            _send(transport, p.error_reply(exc.code, exc.message))
            return None
        task = asyncio.get_running_loop().create_task(self._serve(req, transport))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _serve(self, req: p.Request, transport: asyncio.Transport) -> None:
        try:
            reply = await handle(self.agent, req)
        except Exception as exc:
            self.agent.log.exception("request failed", op=req.op, error=str(exc))
            reply = p.Reply.failure(p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}")
        _send(transport, p.encode_reply(reply))
