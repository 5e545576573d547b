"""An in-memory EC2 + IMDS for tests, the simulator and benchmarks.

It enforces what real EC2 enforces and moto does not (ENI and address limits by instance type,
subnet exhaustion and /28 fragmentation, device indexes, detach-before-delete), throttles with
account-wide token buckets, runs in virtual time, lags metadata and injects faults. Start with
:class:`FakeCloud`.
"""

from backends.fakecloud.buckets import BucketSpec, Throttle, TokenBucket
from backends.fakecloud.cloud import DEFAULT_SECURITY_GROUP, DEFAULT_START, FakeCloud
from backends.fakecloud.ec2 import FakeEc2
from backends.fakecloud.faults import CallInfo, FaultRule
from backends.fakecloud.metadata import FakeMetadata

__all__ = [
    "DEFAULT_SECURITY_GROUP",
    "DEFAULT_START",
    "BucketSpec",
    "CallInfo",
    "FakeCloud",
    "FakeEc2",
    "FakeMetadata",
    "FaultRule",
    "Throttle",
    "TokenBucket",
]
