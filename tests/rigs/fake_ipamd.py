"""A fake ipamd: a thread serving the protocol on a Unix socket, for plugin tests and benchmarks
(the plugin's side of the socket without a daemon; benchmarks import it, so it lives here).

Stdlib + adapters.protocol only. By default it behaves like a small, well-behaved daemon: ADD
hands out 10.0.0.<n>, DEL/GC/STATUS answer ok, CHECK answers ok for known attachments and
``not_found`` otherwise. ``replies`` overrides the answer per op (a Reply, raw bytes to send
verbatim, or a callable taking the Request).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from adapters import protocol as p

Handler = p.Reply | bytes | Callable[[p.Request], "p.Reply | bytes"]


class FakeIpamd:
    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path
        self.requests: list[p.Request] = []
        self.raw_frames: list[bytes] = []
        self.replies: dict[str, Handler] = {}
        self.attachments: dict[tuple[str, str], dict[str, Any]] = {}
        self._next = 5
        self._lock = threading.Lock()
        self._stopping = False
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- default behaviour

    def default_reply(self, req: p.Request) -> p.Reply:
        if req.op == p.OP_ADD:
            key = (req.container_id, req.if_name)
            with self._lock:
                if key not in self.attachments:
                    n = self._next
                    self._next += 1
                    self.attachments[key] = p.AddResult(
                        ipv4=f"10.0.0.{n}",
                        host_veth=f"eni{n:011x}",
                        if_name=req.if_name,
                        mac=f"0a:58:0a:00:00:{n:02x}",
                        eni_id="eni-0123456789abcdef0",
                        device_index=0,
                        mtu=req.mtu or 9001,
                    ).to_dict()
                return p.Reply.success(self.attachments[key])
        if req.op == p.OP_DEL:
            with self._lock:
                self.attachments.pop((req.container_id, req.if_name), None)
            return p.Reply.success()
        if req.op == p.OP_CHECK:
            if (req.container_id, req.if_name) in self.attachments:
                return p.Reply.success()
            return p.Reply.failure(p.ERR_NOT_FOUND, f"no attachment {req.container_id}")
        if req.op == p.OP_GC:
            valid = set(req.valid_attachments or [])
            with self._lock:
                for key in list(self.attachments):
                    if key not in valid:
                        del self.attachments[key]
            return p.Reply.success()
        return p.Reply.success({"ready": True})

    # -- server

    def start(self) -> FakeIpamd:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.sock_path)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="fake-ipamd", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._sock is not None:
            try:  # wake up accept()
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.sock_path)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> FakeIpamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            conn, _ = self._sock.accept()
            if self._stopping:
                conn.close()
                return
            with conn:
                conn.settimeout(10)
                try:
                    self._handle(conn)
                except OSError:
                    pass

    def _handle(self, conn: socket.socket) -> None:
        try:
            frame = p.recv_frame(conn)
        except p.ProtocolError as e:
            conn.sendall(p.error_reply(e.code, e.message))
            return
        self.raw_frames.append(frame)
        try:
            req = p.decode_request(frame)
        except p.ProtocolError as e:
            conn.sendall(p.error_reply(e.code, e.message))
            return
        self.requests.append(req)
        handler = self.replies.get(req.op)
        answer: p.Reply | bytes
        if handler is None:
            answer = self.default_reply(req)
        elif callable(handler):
            answer = handler(req)
        else:
            answer = handler
        conn.sendall(answer if isinstance(answer, bytes) else p.encode_reply(answer))
