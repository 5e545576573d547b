"""The wire protocol between the CNI plugin (and ipamctl) and the ipamd daemon.

Standard library only, and cheap to import: the CNI plugin is exec'd for every pod, so this
module avoids ``typing``, ``dataclasses``, ``re``, ``tempfile`` and ``hashlib`` at import time.

Transport: a Unix stream socket (default :data:`DEFAULT_SOCKET_PATH`), one request per
connection. Framing: one compact JSON object terminated by ``\\n``; a message, newline included,
is at most :data:`MAX_MESSAGE_SIZE` bytes.

Request::

    {"version": 1, "op": "add"|"del"|"check"|"status"|"gc",
     "network_name": str, "container_id": str, "if_name": str, "netns": str,
     "pod_namespace": str, "pod_name": str,
     "prev_result"?: {...}, "valid_attachments"?: [{"container_id", "if_name"}, ...],
     "mtu"?: int, "multi_nic"?: true}

``multi_nic`` (ADD): the pod is annotated ``k8s.amazonaws.com/nicConfig:
multi-nic-attachment`` (the runtime passes the annotations in the plugin's runtimeConfig);
the ADD result then lists the interfaces on the other network cards in ``attachments``.

Reply::

    {"version": 1, "ok": true, "result": {...}}
    {"version": 1, "ok": false, "error": {"code": "<ERR_*>", "message": str}}

Every rejection of outside input is a :class:`ProtocolError` carrying one of the ``ERR_*`` codes.

For the daemon:

- Serve with ``asyncio.start_unix_server(handle, path, limit=MAX_MESSAGE_SIZE)``; in ``handle``,
  ``req = await read_request_async(reader)`` (or ``decode_request(frame)`` on bytes you read
  yourself), then write ``encode_reply(Reply.success(AddResult(...).to_dict()))`` or
  ``error_reply(code, message)`` and close. On ``ProtocolError e`` reply
  ``error_reply(e.code, e.message)``. Requests are validated: names are safe to use in paths and
  netlink calls, netns paths are normalized and under :data:`NETNS_ALLOWED_PREFIXES`.
- DEL must be idempotent (unknown attachment -> ok, or ``not_found`` which the plugin treats as
  success). CHECK of an unknown attachment -> ``not_found`` (CNI error 3).
- Pending DELs (:mod:`adapters.pending_dels`): the plugin records a DEL it could not deliver
  (``write_pending_del``). The daemon, during its start and before it listens, reads the
  records and releases each exactly like a DEL, then removes them; once it listens it
  rescans (at once, then every reconcile interval) and sends each record it finds through
  the node as an ordinary DEL, ordered with any request for the same attachment, removing
  the record once the DEL succeeded. So a DEL recorded while a start is under way (after
  the first scan) is processed within seconds of the daemon listening, not at the next
  start; until then its address stays held (never handed out twice).
"""

from __future__ import annotations

import json
import socket

from adapters.validators import (
    _ALNUM as _ALNUM,
)
from adapters.validators import (
    _HEX as _HEX,
)
from adapters.validators import (
    _ID_CHARS as _ID_CHARS,
)
from adapters.validators import (
    _LOWER_ALNUM as _LOWER_ALNUM,
)
from adapters.validators import (  # re-exported: callers use protocol.X
    DAEMON_ERROR_CODES as DAEMON_ERROR_CODES,
)
from adapters.validators import (
    ERR_BAD_REPLY as ERR_BAD_REPLY,
)
from adapters.validators import (
    ERR_BAD_REQUEST as ERR_BAD_REQUEST,
)
from adapters.validators import (
    ERR_CONNECTION_LOST as ERR_CONNECTION_LOST,
)
from adapters.validators import (
    ERR_DATAPATH_FAILED as ERR_DATAPATH_FAILED,
)
from adapters.validators import (
    ERR_FORBIDDEN as ERR_FORBIDDEN,
)
from adapters.validators import (
    ERR_INTERNAL as ERR_INTERNAL,
)
from adapters.validators import (
    ERR_IO as ERR_IO,
)
from adapters.validators import (
    ERR_NOT_FOUND as ERR_NOT_FOUND,
)
from adapters.validators import (
    ERR_POOL_EMPTY as ERR_POOL_EMPTY,
)
from adapters.validators import (
    ERR_SHUTTING_DOWN as ERR_SHUTTING_DOWN,
)
from adapters.validators import (
    ERR_TIMEOUT as ERR_TIMEOUT,
)
from adapters.validators import (
    ERR_TOO_LARGE as ERR_TOO_LARGE,
)
from adapters.validators import (
    ERR_UNAVAILABLE as ERR_UNAVAILABLE,
)
from adapters.validators import (
    ERR_UNSUPPORTED_VERSION as ERR_UNSUPPORTED_VERSION,
)
from adapters.validators import (
    MAX_CONTAINER_ID_LEN as MAX_CONTAINER_ID_LEN,
)
from adapters.validators import (
    MAX_DNS_LABEL_LEN as MAX_DNS_LABEL_LEN,
)
from adapters.validators import (
    MAX_DNS_SUBDOMAIN_LEN as MAX_DNS_SUBDOMAIN_LEN,
)
from adapters.validators import (
    MAX_IF_NAME_LEN as MAX_IF_NAME_LEN,
)
from adapters.validators import (
    MAX_MTU as MAX_MTU,
)
from adapters.validators import (
    MAX_NETNS_LEN as MAX_NETNS_LEN,
)
from adapters.validators import (
    MAX_NETWORK_NAME_LEN as MAX_NETWORK_NAME_LEN,
)
from adapters.validators import (
    MAX_VALID_ATTACHMENTS as MAX_VALID_ATTACHMENTS,
)
from adapters.validators import (
    MIN_MTU as MIN_MTU,
)
from adapters.validators import (
    NETNS_ALLOWED_PREFIXES as NETNS_ALLOWED_PREFIXES,
)
from adapters.validators import (
    ProtocolError as ProtocolError,
)
from adapters.validators import (
    bad_request as bad_request,
)
from adapters.validators import (
    require_str as require_str,
)
from adapters.validators import (
    show as show,
)
from adapters.validators import (
    validate_container_id as validate_container_id,
)
from adapters.validators import (
    validate_if_name as validate_if_name,
)
from adapters.validators import (
    validate_ipv4 as validate_ipv4,
)
from adapters.validators import (
    validate_ipv6 as validate_ipv6,
)
from adapters.validators import (
    validate_mac as validate_mac,
)
from adapters.validators import (
    validate_mtu as validate_mtu,
)
from adapters.validators import (
    validate_netns as validate_netns,
)
from adapters.validators import (
    validate_network_name as validate_network_name,
)
from adapters.validators import (
    validate_pod_name as validate_pod_name,
)
from adapters.validators import (
    validate_pod_namespace as validate_pod_namespace,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # only for type checkers; keeps ``typing`` out of the plugin's cold start
    from collections.abc import Callable
    from typing import Any


PROTOCOL_VERSION = 1
MAX_MESSAGE_SIZE = 64 * 1024
DEFAULT_SOCKET_PATH = "/var/run/aws-node/ipam.sock"
DEFAULT_PENDING_DEL_DIR = "/var/run/aws-node/pending-del"
DEFAULT_TIMEOUT = 10.0

OP_ADD = "add"
OP_DEL = "del"
OP_CHECK = "check"
OP_STATUS = "status"
OP_GC = "gc"
OPS = frozenset({OP_ADD, OP_DEL, OP_CHECK, OP_STATUS, OP_GC})

_REQUEST_FIELDS = (
    "network_name",
    "container_id",
    "if_name",
    "netns",
    "pod_namespace",
    "pod_name",
)


MAX_ATTACHMENTS = 64  # interfaces of one multi-NIC pod (p5.48xlarge has 32 cards)


# --------------------------------------------------------------------------- messages


class Request:
    """One request from the plugin (or ipamctl) to the daemon."""

    __slots__ = (
        "container_id",
        "if_name",
        "mtu",
        "multi_nic",
        "netns",
        "network_name",
        "op",
        "pod_name",
        "pod_namespace",
        "prev_result",
        "valid_attachments",
        "version",
    )

    def __init__(
        self,
        op: str,
        network_name: str = "",
        container_id: str = "",
        if_name: str = "",
        netns: str = "",
        pod_namespace: str = "",
        pod_name: str = "",
        prev_result: dict[str, Any] | None = None,
        valid_attachments: list[tuple[str, str]] | None = None,
        mtu: int | None = None,
        version: int = PROTOCOL_VERSION,
        multi_nic: bool = False,
    ) -> None:
        self.version = version
        self.multi_nic = multi_nic
        self.op = op
        self.network_name = network_name
        self.container_id = container_id
        self.if_name = if_name
        self.netns = netns
        self.pod_namespace = pod_namespace
        self.pod_name = pod_name
        self.prev_result = prev_result
        self.valid_attachments = valid_attachments
        self.mtu = mtu

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version, "op": self.op}
        for name in _REQUEST_FIELDS:
            d[name] = getattr(self, name)
        if self.prev_result is not None:
            d["prev_result"] = self.prev_result
        if self.valid_attachments is not None:
            d["valid_attachments"] = [
                {"container_id": c, "if_name": i} for c, i in self.valid_attachments
            ]
        if self.mtu is not None:
            d["mtu"] = self.mtu
        if self.multi_nic:
            d["multi_nic"] = True
        return d

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Request({self.to_dict()!r})"


class Reply:
    """The daemon's answer: ``ok`` with a ``result`` dict, or not ``ok`` with an error."""

    __slots__ = ("error_code", "error_message", "ok", "result", "version")

    def __init__(
        self,
        ok: bool,
        result: dict[str, Any] | None = None,
        error_code: str = "",
        error_message: str = "",
        version: int = PROTOCOL_VERSION,
    ) -> None:
        self.version = version
        self.ok = ok
        self.result = result if result is not None else ({} if ok else None)
        self.error_code = error_code
        self.error_message = error_message

    @classmethod
    def success(cls, result: dict[str, Any] | None = None) -> Reply:
        return cls(True, result if result is not None else {})

    @classmethod
    def failure(cls, code: str, message: str) -> Reply:
        return cls(False, None, code, message)

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"version": self.version, "ok": True, "result": self.result or {}}
        return {
            "version": self.version,
            "ok": False,
            "error": {"code": self.error_code, "message": self.error_message},
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Reply({self.to_dict()!r})"


class AddResult:
    """The ``result`` of a successful ADD."""

    __slots__ = (
        "attachments",
        "device_index",
        "eni_id",
        "gateway",
        "gateway_v6",
        "host_mac",
        "host_veth",
        "if_name",
        "ipv4",
        "ipv6",
        "ipv6_prefix_len",
        "mac",
        "mtu",
        "prefix_len",
    )

    def __init__(
        self,
        host_veth: str,
        if_name: str,
        ipv4: str | None = None,
        ipv6: str | None = None,
        prefix_len: int = 32,
        ipv6_prefix_len: int = 128,
        mac: str | None = None,
        host_mac: str | None = None,
        gateway: str = "169.254.1.1",
        gateway_v6: str | None = None,
        eni_id: str = "",
        device_index: int = 0,
        mtu: int = 9001,
        attachments: list[AddResult] | None = None,
    ) -> None:
        self.attachments = attachments or []
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.prefix_len = prefix_len
        self.ipv6_prefix_len = ipv6_prefix_len
        self.host_veth = host_veth
        self.if_name = if_name
        self.mac = mac
        self.host_mac = host_mac
        self.gateway = gateway
        self.gateway_v6 = gateway_v6
        self.eni_id = eni_id
        self.device_index = device_index
        self.mtu = mtu

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {name: getattr(self, name) for name in sorted(self.__slots__)}
        d["attachments"] = [a.to_dict() for a in self.attachments] or None
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: object) -> AddResult:
        """Validate an ADD result (raises ProtocolError with code ``bad_reply``)."""
        try:
            return cls._from_dict(d)
        except ProtocolError as e:
            raise ProtocolError(ERR_BAD_REPLY, f"invalid add result: {e.message}") from None

    @classmethod
    def _from_dict(cls, d: object) -> AddResult:
        if not isinstance(d, dict):
            raise bad_request("result must be an object")

        def opt(key: str, check: Callable[[object, str], str]) -> str | None:
            v = d.get(key)
            return None if v is None else check(v, key)

        def integer(key: str, default: int, lo: int, hi: int) -> int:
            v = d.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad_request(f"{key} must be an integer in {lo}..{hi}: {show(v)}")
            return v

        ipv4 = opt("ipv4", validate_ipv4)
        ipv6 = opt("ipv6", validate_ipv6)
        if ipv4 is None and ipv6 is None:
            raise bad_request("result has neither ipv4 nor ipv6")
        eni_id = d.get("eni_id", "")
        if not isinstance(eni_id, str) or len(eni_id) > 64:
            raise bad_request(f"eni_id must be a short string: {show(eni_id)}")
        raw_attachments = d.get("attachments", [])
        if not isinstance(raw_attachments, list) or len(raw_attachments) > MAX_ATTACHMENTS:
            raise bad_request(f"attachments must be a list of at most {MAX_ATTACHMENTS}")
        attachments = [cls._from_dict(a) for a in raw_attachments]
        if any(a.attachments for a in attachments):
            raise bad_request("attachments do not nest")
        return cls(
            attachments=attachments,
            host_veth=validate_if_name(d.get("host_veth"), "host_veth"),
            if_name=validate_if_name(d.get("if_name"), "if_name"),
            ipv4=ipv4,
            ipv6=ipv6,
            prefix_len=integer("prefix_len", 32, 0, 32),
            ipv6_prefix_len=integer("ipv6_prefix_len", 128, 0, 128),
            mac=opt("mac", validate_mac),
            host_mac=opt("host_mac", validate_mac),
            gateway=validate_ipv4(d.get("gateway", "169.254.1.1"), "gateway"),
            gateway_v6=opt("gateway_v6", validate_ipv6),
            eni_id=eni_id,
            device_index=integer("device_index", 0, 0, 1024),
            mtu=integer("mtu", 9001, MIN_MTU, MAX_MTU),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AddResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AddResult({self.to_dict()!r})"


# --------------------------------------------------------------------------- encoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {show(k)}")
        d[k] = v
    return d


def _encode(obj: dict[str, Any], what: str) -> bytes:
    try:
        data = _ENCODER.encode(obj).encode("ascii")
    except (TypeError, ValueError) as e:
        raise ProtocolError(ERR_BAD_REQUEST, f"cannot encode {what}: {e}") from None
    data += b"\n"
    if len(data) > MAX_MESSAGE_SIZE:
        raise ProtocolError(
            ERR_TOO_LARGE, f"{what} is {len(data)} bytes, more than {MAX_MESSAGE_SIZE}"
        )
    return data


# One decoder for every frame (json.loads with hooks builds a new one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _parse_frame(data: object, code: str, what: str) -> dict[str, Any]:
    """Bytes (one frame, trailing newline optional) -> JSON object, or ProtocolError(code)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(code, f"{what} must be bytes")
    raw = bytes(data)
    if len(raw) > MAX_MESSAGE_SIZE:
        raise ProtocolError(
            ERR_TOO_LARGE, f"{what} is {len(raw)} bytes, more than {MAX_MESSAGE_SIZE}"
        )
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if b"\n" in raw:
        raise ProtocolError(code, f"{what} has data after the terminating newline")
    if not raw.strip():
        raise ProtocolError(code, f"{what} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(code, f"{what} is not valid UTF-8: {e.reason}") from None
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(code, f"{what} is not valid JSON: {show(str(e), 120)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(code, f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_version(obj: dict[str, Any], what: str, code: str) -> None:
    if "version" not in obj:
        raise ProtocolError(code, f"{what} has no 'version'")
    v = obj["version"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(code, f"{what} 'version' must be an integer")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(
            ERR_UNSUPPORTED_VERSION,
            f"{what} version {show(v)} is not supported (this side speaks {PROTOCOL_VERSION})",
        )


def _request_from_obj(obj: dict[str, Any]) -> Request:
    _check_version(obj, "request", ERR_BAD_REQUEST)
    op = obj.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise bad_request(f"unknown op {show(op)} (expected one of {', '.join(sorted(OPS))})")
    fields: dict[str, str] = {}
    for name in _REQUEST_FIELDS:
        v = obj.get(name, "")
        fields[name] = require_str(v, name)
    needs_attachment = op in (OP_ADD, OP_DEL, OP_CHECK)
    if fields["network_name"] or op != OP_STATUS:
        validate_network_name(fields["network_name"])
    if needs_attachment or fields["container_id"]:
        validate_container_id(fields["container_id"])
    if needs_attachment or fields["if_name"]:
        validate_if_name(fields["if_name"])
    if op in (OP_ADD, OP_CHECK) or fields["netns"]:
        validate_netns(fields["netns"])
    validate_pod_namespace(fields["pod_namespace"])
    validate_pod_name(fields["pod_name"])

    prev_result = obj.get("prev_result")
    if prev_result is not None and not isinstance(prev_result, dict):
        raise bad_request("prev_result must be an object")

    attachments: list[tuple[str, str]] | None = None
    raw_att = obj.get("valid_attachments")
    if raw_att is not None:
        if not isinstance(raw_att, list):
            raise bad_request("valid_attachments must be a list")
        if len(raw_att) > MAX_VALID_ATTACHMENTS:
            raise bad_request(f"valid_attachments has more than {MAX_VALID_ATTACHMENTS} entries")
        attachments = []
        for i, a in enumerate(raw_att):
            if not isinstance(a, dict):
                raise bad_request(f"valid_attachments[{i}] must be an object")
            try:
                cid = validate_container_id(a.get("container_id"))
                ifn = validate_if_name(a.get("if_name"))
            except ProtocolError as e:
                raise bad_request(f"valid_attachments[{i}]: {e.message}") from None
            attachments.append((cid, ifn))
    elif op == OP_GC:
        raise bad_request("gc needs valid_attachments")

    mtu = obj.get("mtu")
    if mtu is not None:
        validate_mtu(mtu)
    multi_nic = obj.get("multi_nic", False)
    if not isinstance(multi_nic, bool):
        raise bad_request(f"multi_nic must be a boolean: {show(multi_nic)}")

    return Request(
        op,
        network_name=fields["network_name"],
        container_id=fields["container_id"],
        if_name=fields["if_name"],
        netns=fields["netns"],
        pod_namespace=fields["pod_namespace"],
        pod_name=fields["pod_name"],
        prev_result=prev_result,
        valid_attachments=attachments,
        mtu=mtu,
        multi_nic=multi_nic,
    )


def validate_request(req: Request) -> Request:
    """Check a Request built in code the same way decode_request checks one from the wire."""
    return _request_from_obj(req.to_dict())


def encode_request(req: Request) -> bytes:
    """Validate and frame a request (raises ProtocolError for an invalid one)."""
    validate_request(req)
    return _encode(req.to_dict(), "request")


def decode_request(data: bytes) -> Request:
    """Parse and validate one request frame; every rejection is a ProtocolError whose code is
    ``bad_request``, ``unsupported_version`` or ``too_large``."""
    return _request_from_obj(_parse_frame(data, ERR_BAD_REQUEST, "request"))


def encode_reply(reply: Reply) -> bytes:
    """Frame a reply. A result too large to send becomes an ``internal`` error reply."""
    try:
        return _encode(reply.to_dict(), "reply")
    except ProtocolError as e:
        return _encode(Reply.failure(ERR_INTERNAL, e.message).to_dict(), "reply")


def error_reply(code: str, message: str) -> bytes:
    """Shortcut for the daemon: a framed error reply."""
    return encode_reply(Reply.failure(code, message[:4096]))


def decode_reply(data: bytes) -> Reply:
    """Parse one reply frame; a malformed one raises ProtocolError(``bad_reply``)."""
    obj = _parse_frame(data, ERR_BAD_REPLY, "reply")
    _check_version(obj, "reply", ERR_BAD_REPLY)
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError(ERR_BAD_REPLY, "reply 'ok' must be a boolean")
    if ok:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise ProtocolError(ERR_BAD_REPLY, "reply 'result' must be an object")
        return Reply(True, result)
    err = obj.get("error")
    if not isinstance(err, dict):
        raise ProtocolError(ERR_BAD_REPLY, "error reply has no 'error' object")
    code, message = err.get("code"), err.get("message", "")
    if not isinstance(code, str) or not code or not isinstance(message, str):
        raise ProtocolError(ERR_BAD_REPLY, "reply 'error' needs string 'code' and 'message'")
    return Reply(False, None, code, message)


# --------------------------------------------------------------------------- socket I/O


def recv_frame(sock: socket.socket, max_size: int = MAX_MESSAGE_SIZE) -> bytes:
    """Read one newline-terminated frame (newline included) from a blocking socket.

    Raises ProtocolError ``too_large`` past ``max_size`` bytes, ``bad_request`` if the peer
    closes before the newline. Socket timeouts propagate as ``TimeoutError``.
    """
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            if not buf:
                raise ProtocolError(ERR_BAD_REQUEST, "connection closed before any data")
            raise ProtocolError(ERR_BAD_REQUEST, "connection closed before the newline")
        nl = chunk.find(b"\n")
        if nl >= 0:
            buf += chunk[: nl + 1]
            if len(buf) > max_size:
                raise ProtocolError(ERR_TOO_LARGE, f"message exceeds {max_size} bytes")
            return bytes(buf)
        buf += chunk
        if len(buf) >= max_size:
            raise ProtocolError(ERR_TOO_LARGE, f"message exceeds {max_size} bytes")


async def read_request_async(reader: Any) -> Request:
    """Read and decode one request from an ``asyncio.StreamReader`` created with
    ``limit=MAX_MESSAGE_SIZE``. Raises ProtocolError (``too_large``, ``bad_request``, ...)."""
    import asyncio

    try:
        frame = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError(ERR_TOO_LARGE, f"message exceeds {MAX_MESSAGE_SIZE} bytes") from None
    except asyncio.IncompleteReadError as e:
        raise ProtocolError(
            ERR_BAD_REQUEST,
            "connection closed before the newline" if e.partial else "connection closed",
        ) from None
    return decode_request(frame)


def request(sock_path: str, req: Request, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """Blocking client: send one request, return the daemon's reply.

    Raises ProtocolError: ``unavailable`` when nothing accepts on ``sock_path`` (the daemon is
    not running: the request was certainly not processed), ``timeout`` when connected but no
    reply came in time (it may have been processed), ``connection_lost`` when the connection
    closed or was reset before a complete reply (the daemon crashed or stopped mid-request; it
    may have been processed), ``bad_reply`` for a malformed reply, and the encode errors of
    :func:`encode_request`.
    """
    data = encode_request(req)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(sock_path)
        except TimeoutError:
            raise ProtocolError(ERR_UNAVAILABLE, f"timed out connecting to {sock_path}") from None
        except OSError as e:
            raise ProtocolError(
                ERR_UNAVAILABLE, f"cannot connect to {sock_path}: {e.strerror or e}"
            ) from None
        try:
            sock.sendall(data)
            frame = recv_frame(sock)
        except TimeoutError:
            raise ProtocolError(
                ERR_TIMEOUT, f"no reply from {sock_path} within {timeout:g}s"
            ) from None
        except ProtocolError as e:
            lost = e.code == ERR_BAD_REQUEST  # closed before a complete reply
            raise ProtocolError(ERR_CONNECTION_LOST if lost else ERR_BAD_REPLY, e.message) from None
        except OSError as e:
            raise ProtocolError(
                ERR_CONNECTION_LOST, f"connection to {sock_path} failed: {e.strerror or e}"
            ) from None
        return decode_reply(frame)
    finally:
        sock.close()
