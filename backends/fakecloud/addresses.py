"""IPv4 text <-> integer conversion, done by hand because :mod:`ipaddress` is too slow for
the fake's hot path (every assign/unassign converts addresses)."""

from __future__ import annotations

from ipamcore.errors import CloudError, FailureKind


def int_to_ip(value: int) -> str:
    """Dotted-quad text of a 32-bit integer."""
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def ip_to_int(text: str) -> int:
    """Integer of a dotted-quad address; a malformed one is the caller's ``InvalidParameterValue``
    (what EC2 answers for a bad address)."""
    parts = text.split(".")
    if len(parts) != 4:
        raise invalid(f"malformed IPv4 address {text!r}")
    value = 0
    for part in parts:
        if not part.isdigit() or int(part) > 255:
            raise invalid(f"malformed IPv4 address {text!r}")
        value = (value << 8) | int(part)
    return value


def prefix_to_int(text: str, length: int = 28) -> int:
    """Network address of a ``a.b.c.d/length`` prefix, which must be aligned."""
    addr, _, plen = text.partition("/")
    if plen != str(length):
        raise invalid(f"expected a /{length} prefix, got {text!r}")
    value = ip_to_int(addr)
    if value & ((1 << (32 - length)) - 1):
        raise invalid(f"prefix {text!r} is not aligned")
    return value


def invalid(message: str) -> CloudError:
    """EC2's answer to a malformed or inconsistent parameter."""
    return CloudError(FailureKind.OTHER, message, code="InvalidParameterValue")
