"""Translation of botocore failures into :class:`ipamcore.errors.CloudError`.

The core only knows :class:`~ipamcore.errors.FailureKind`; every botocore exception is
translated here, at the boundary, so none escapes the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from ipamcore.errors import CloudError, FailureKind

THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "BandwidthLimitExceeded",
        "SlowDown",
    }
)
SUBNET_FULL_CODES = frozenset({"InsufficientFreeAddressesInSubnet", "InsufficientCidrBlocks"})
LIMIT_CODES = frozenset(
    {
        "AttachmentLimitExceeded",
        "PrivateIpAddressLimitExceeded",
        "NetworkInterfaceLimitExceeded",
    }
)

# DescribeInstanceTypes answers an unknown type with InvalidInstanceType (no ".NotFound").
NOT_FOUND_CODES = frozenset({"InvalidInstanceType"})


def kind_for_code(code: str) -> FailureKind:
    """The failure kind of an EC2 error code."""
    if code in THROTTLE_CODES:
        return FailureKind.THROTTLED
    if code in SUBNET_FULL_CODES:
        return FailureKind.SUBNET_FULL
    if code in LIMIT_CODES:
        return FailureKind.LIMIT_EXCEEDED
    if code.endswith(".NotFound") or code in NOT_FOUND_CODES:
        return FailureKind.NOT_FOUND
    return FailureKind.OTHER


def translate(exc: BaseException) -> CloudError:
    """A CloudError for any exception raised by botocore (or by the HTTP layer under it)."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "")
        message = str(error.get("Message", "") or str(exc))
        return CloudError(kind_for_code(code), message, code)
    if isinstance(exc, BotoCoreError):
        return CloudError(FailureKind.OTHER, str(exc), type(exc).__name__)
    return CloudError(FailureKind.OTHER, f"{type(exc).__name__}: {exc}", type(exc).__name__)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise anything botocore raises inside the block as a CloudError.

    Catches every ``Exception``: urllib3 and socket errors can surface through botocore
    unwrapped, and the contract is that the backend raises CloudError and nothing else.
    """
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:
        raise translate(exc) from exc
