"""The Unix socket server: one JSON-line request per connection (adapters.protocol).

The socket is created with mode 0600 (umask during bind, then chmod) and owned by the
daemon's user. Hostile input costs nothing: a frame over 64 KiB, a connection closed before
the newline, garbage, or a client that sends nothing for ``read_timeout_s`` gets an error
reply (when the peer still listens) and the connection is closed; nothing reaches the core.
Requests run concurrently, one task per connection; :meth:`SocketServer.stop` stops
accepting and waits for the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat

from adapters import protocol as p
from adapters.ipamd.agent import Agent
from adapters.ipamd.handlers import handle

SOCKET_MODE = 0o600


class SocketServer:
    def __init__(self, agent: Agent, path: str, read_timeout_s: float = 10.0) -> None:
        self.agent = agent
        self.path = path
        self.read_timeout_s = read_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.rejected = 0

    async def start(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # a stale socket of a previous run
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_connection, self.path, limit=p.MAX_MESSAGE_SIZE + 1
            )
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, then wait (bounded, real time) for requests in flight."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            reply = await self._serve(reader)
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; its request (if any) was processed
        finally:
            self._in_flight.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout_s)
        except asyncio.LimitOverrunError:
            raise p.ProtocolError(
                p.ERR_TOO_LARGE, f"request exceeds {p.MAX_MESSAGE_SIZE} bytes"
            ) from None
        except asyncio.IncompleteReadError as exc:
            if len(exc.partial) > p.MAX_MESSAGE_SIZE:
                raise p.ProtocolError(p.ERR_TOO_LARGE, "request too large") from None
            what = "before any data" if not exc.partial else "before the newline"
            raise p.ProtocolError(p.ERR_BAD_REQUEST, f"connection closed {what}") from None
        except TimeoutError:
            raise p.ProtocolError(p.ERR_BAD_REQUEST, "no complete request in time") from None
        except ValueError:  # StreamReader: separator found but the chunk exceeds the limit
            raise p.ProtocolError(
                p.ERR_TOO_LARGE, f"request exceeds {p.MAX_MESSAGE_SIZE} bytes"
            ) from None

    async def _serve(self, reader: asyncio.StreamReader) -> bytes:
        try:
            req = p.decode_request(await self._read_frame(reader))
        except p.ProtocolError as exc:
            self.rejected += 1
            return p.error_reply(exc.code, exc.message)
        try:
            reply = await handle(self.agent, req)
        except Exception as exc:
            self.agent.log.exception("request failed", op=req.op, error=str(exc))
            reply = p.Reply.failure(p.ERR_INTERNAL, f"{type(exc).__name__}: {exc}")
        return p.encode_reply(reply)
