"""Validation of names that arrive from outside (CNI environment, stdin, the socket), and
the error type every rejection raises.

Standard library only and cheap to import (the CNI plugin imports it on every exec). Each
validator returns the value when it is safe to use in a path or a netlink call and raises
:class:`ProtocolError` with code ``bad_request`` otherwise.
"""

from __future__ import annotations

import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # only for type checkers; keeps ``typing`` out of the plugin's cold start
    from collections.abc import Iterable

# Error codes carried in replies (daemon side) and in ProtocolError (both sides).
ERR_BAD_REQUEST = "bad_request"  # malformed or invalid request
ERR_UNSUPPORTED_VERSION = "unsupported_version"  # "version" is not PROTOCOL_VERSION
ERR_TOO_LARGE = "too_large"  # message larger than MAX_MESSAGE_SIZE
ERR_POOL_EMPTY = "pool_empty"  # no address available now: try again later
ERR_NOT_FOUND = "not_found"  # no such attachment (CHECK of an unknown container)
ERR_DATAPATH_FAILED = "datapath_failed"  # veth/route/rule setup or teardown failed
ERR_INTERNAL = "internal"  # anything else inside the daemon
ERR_SHUTTING_DOWN = "shutting_down"  # the daemon is stopping: try again later
ERR_FORBIDDEN = "forbidden"  # the peer's uid may not use the socket
# Client-side only (never sent by the daemon):
ERR_UNAVAILABLE = "unavailable"  # could not connect to the socket: the daemon is not running
ERR_TIMEOUT = "timeout"  # connected, but no complete reply in time
ERR_BAD_REPLY = "bad_reply"  # the daemon's reply is malformed
# The connection closed or was reset before a complete reply (the daemon crashed or stopped
# mid-request): the request may or may not have been processed; retrying is safe.
ERR_CONNECTION_LOST = "connection_lost"
ERR_IO = "io"  # a local file operation failed (pending-DEL records)

DAEMON_ERROR_CODES = frozenset(
    {
        ERR_BAD_REQUEST,
        ERR_UNSUPPORTED_VERSION,
        ERR_TOO_LARGE,
        ERR_POOL_EMPTY,
        ERR_NOT_FOUND,
        ERR_DATAPATH_FAILED,
        ERR_INTERNAL,
        ERR_SHUTTING_DOWN,
        ERR_FORBIDDEN,
    }
)

# Validation limits.
MAX_CONTAINER_ID_LEN = 256
MAX_IF_NAME_LEN = 15
MAX_NETNS_LEN = 1024
MAX_NETWORK_NAME_LEN = 256
MAX_DNS_LABEL_LEN = 63
MAX_DNS_SUBDOMAIN_LEN = 253
MAX_VALID_ATTACHMENTS = 1024  # the message size bounds it too
MIN_MTU = 576
MAX_MTU = 65535

# A netns path must lie strictly under one of these directories.
NETNS_ALLOWED_PREFIXES: tuple[str, ...] = (
    "/proc/",
    "/var/run/netns/",
    "/run/netns/",
    "/var/run/docker/netns/",
    "/run/docker/netns/",
)

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_CHARS = _ALNUM | frozenset("_.-")
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")


class ProtocolError(Exception):
    """A rejected message or a failed exchange: ``code`` is one of the ``ERR_*`` codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(ERR_BAD_REQUEST, message)


def show(value: object, limit: int = 64) -> str:
    """A short, printable rendering of hostile input for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- validators


def require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string, got {type(value).__name__}")
    return value


def validate_container_id(value: object) -> str:
    """CNI spec: non-empty, starts with an alphanumeric, then alphanumerics, ``_``, ``.``, ``-``."""
    s = require_str(value, "container_id")
    if not s:
        raise bad_request("container_id must not be empty")
    if len(s) > MAX_CONTAINER_ID_LEN:
        raise bad_request(f"container_id is longer than {MAX_CONTAINER_ID_LEN} characters")
    if s[0] not in _ALNUM:
        raise bad_request(f"container_id must start with an alphanumeric character: {show(s)}")
    if not _ID_CHARS.issuperset(s):
        raise bad_request(f"container_id may contain only alphanumerics, '_', '.', '-': {show(s)}")
    return s


def validate_network_name(value: object) -> str:
    """CNI spec: same character rules as a container id."""
    s = require_str(value, "network_name")
    if not s:
        raise bad_request("network_name must not be empty")
    if len(s) > MAX_NETWORK_NAME_LEN:
        raise bad_request(f"network_name is longer than {MAX_NETWORK_NAME_LEN} characters")
    if s[0] not in _ALNUM or not _ID_CHARS.issuperset(s):
        raise bad_request(
            "network_name must start with an alphanumeric and contain only "
            f"alphanumerics, '_', '.', '-': {show(s)}"
        )
    return s


def validate_if_name(value: object, what: str = "if_name") -> str:
    """Linux interface name (CNI spec): 1..15 characters, no ``/``, ``:``, whitespace or NUL,
    not ``.`` or ``..``; restricted to printable ASCII."""
    s = require_str(value, what)
    if not s:
        raise bad_request(f"{what} must not be empty")
    if len(s) > MAX_IF_NAME_LEN:
        raise bad_request(f"{what} is longer than {MAX_IF_NAME_LEN} characters: {show(s)}")
    if s in (".", ".."):
        raise bad_request(f"{what} must not be '.' or '..'")
    for ch in s:
        if ch in "/:" or ch.isspace() or not ("!" <= ch <= "~"):
            raise bad_request(f"{what} contains a forbidden character {ch!r}: {show(s)}")
    return s


def validate_netns(value: object, allowed_prefixes: Iterable[str] = NETNS_ALLOWED_PREFIXES) -> str:
    """An absolute, normalized path strictly under one of ``allowed_prefixes``."""
    s = require_str(value, "netns")
    if not s:
        raise bad_request("netns must not be empty")
    if len(s) > MAX_NETNS_LEN:
        raise bad_request(f"netns is longer than {MAX_NETNS_LEN} characters")
    if "\x00" in s:
        raise bad_request("netns contains a NUL byte")
    if not s.isprintable():
        raise bad_request(f"netns contains non-printable characters: {show(s)}")
    if not s.startswith("/"):
        raise bad_request(f"netns must be an absolute path: {show(s)}")
    parts = s.split("/")
    if ".." in parts or "." in parts:
        raise bad_request(f"netns must not contain '.' or '..' components: {show(s)}")
    if os.path.normpath(s) != s or s.startswith("//"):
        raise bad_request(f"netns must be a normalized path: {show(s)}")
    for prefix in allowed_prefixes:
        if s.startswith(prefix) and len(s) > len(prefix):
            return s
    raise bad_request(
        f"netns {show(s)} is not under an allowed directory ({', '.join(allowed_prefixes)})"
    )


def _dns_label_ok(s: str) -> bool:
    return (
        0 < len(s) <= MAX_DNS_LABEL_LEN
        and _LOWER_ALNUM.issuperset(s.replace("-", ""))
        and s[0] in _LOWER_ALNUM
        and s[-1] in _LOWER_ALNUM
    )


def validate_pod_namespace(value: object) -> str:
    """A Kubernetes namespace: a DNS-1123 label (<= 63). Empty means unknown (non-Kubernetes
    runtime)."""
    s = require_str(value, "pod_namespace")
    if s and not _dns_label_ok(s):
        raise bad_request(f"pod_namespace is not a DNS-1123 label: {show(s)}")
    return s


def validate_pod_name(value: object) -> str:
    """A Kubernetes pod name: a DNS-1123 subdomain (<= 253). Empty means unknown."""
    s = require_str(value, "pod_name")
    if not s:
        return s
    if len(s) > MAX_DNS_SUBDOMAIN_LEN or not all(_dns_label_ok(p) for p in s.split(".")):
        raise bad_request(f"pod_name is not a DNS-1123 subdomain: {show(s)}")
    return s


def validate_mtu(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"mtu must be an integer, got {type(value).__name__}")
    if not MIN_MTU <= value <= MAX_MTU:
        raise bad_request(f"mtu {value} is outside {MIN_MTU}..{MAX_MTU}")
    return value


def validate_ipv4(value: object, what: str = "ipv4") -> str:
    s = require_str(value, what)
    try:
        packed = socket.inet_pton(socket.AF_INET, s)
    except (OSError, ValueError):
        raise bad_request(f"{what} is not an IPv4 address: {show(s)}") from None
    if socket.inet_ntop(socket.AF_INET, packed) != s:
        raise bad_request(f"{what} is not a canonical IPv4 address: {show(s)}")
    return s


def validate_ipv6(value: object, what: str = "ipv6") -> str:
    s = require_str(value, what)
    try:
        socket.inet_pton(socket.AF_INET6, s)
    except (OSError, ValueError):
        raise bad_request(f"{what} is not an IPv6 address: {show(s)}") from None
    return s


def validate_mac(value: object, what: str = "mac") -> str:
    s = require_str(value, what)
    parts = s.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and _HEX.issuperset(p) for p in parts):
        raise bad_request(f"{what} is not a MAC address: {show(s)}")
    return s.lower()

