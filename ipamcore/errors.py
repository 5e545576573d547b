"""Typed errors of the core.

Two families, as in h11: :class:`UsageError` is a caller's mistake (bad argument, bad
configuration), :class:`DataError` is bad data from outside (a checkpoint that does not
decode, an unknown instance type). Failures of the cloud are not exceptions in the core:
they arrive as :class:`ipamcore.events.EffectFailed` with a :class:`FailureKind`.
"""

from __future__ import annotations

import enum


class IpamError(Exception):
    """Base class of every error the core raises."""


class UsageError(IpamError):
    """The caller used the core wrongly (invalid argument or configuration)."""


class ConfigError(UsageError):
    """A configuration value or combination is invalid. ``setting`` names the knob."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class DataError(IpamError):
    """Data from outside the core is malformed."""


class CheckpointError(DataError):
    """A checkpoint document does not decode (malformed JSON, wrong shape, unknown version)."""


class UnsupportedCheckpointVersion(CheckpointError):
    """The checkpoint was written by a format version this core does not know."""

    def __init__(self, version: object) -> None:
        shown = repr(version)
        if len(shown) > 80:  # hostile input: keep the message readable
            shown = shown[:77] + "..."
        super().__init__(f"unsupported checkpoint version {shown}")
        self.version = version


class UnknownInstanceType(DataError):
    """The instance type is not in the limits table (ask DescribeInstanceTypes)."""

    def __init__(self, instance_type: str) -> None:
        super().__init__(f"unknown instance type {instance_type!r}")
        self.instance_type = instance_type


class PoolExhausted(IpamError):
    """No address is ready to hand out right now (the caller should retry later)."""


class FailureKind(enum.Enum):
    """How a cloud call failed, as far as the core needs to know."""

    THROTTLED = "throttled"
    SUBNET_FULL = "subnet_full"
    LIMIT_EXCEEDED = "limit_exceeded"
    NOT_FOUND = "not_found"
    OTHER = "other"


class CloudError(IpamError):
    """Raised by cloud backends (never by the core) with the failure kind already translated.

    Backends translate their library's errors into this at the boundary, so no botocore
    exception ever reaches the core or the daemon's decision logic.
    """

    def __init__(self, kind: FailureKind, message: str, code: str = "") -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.code = code
