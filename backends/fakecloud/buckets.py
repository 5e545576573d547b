"""EC2's request throttling: one token bucket per API action, shared by the whole account.

Every node of a cluster draws on the same buckets, so one busy node can throttle the others:
that is the point of modelling them per account rather than per instance. Time is virtual
(the caller passes ``now``); a bucket refills continuously at ``refill_per_s`` up to
``capacity``. Figures follow EC2's documented defaults for the actions the CNI uses.
"""

from __future__ import annotations

import attrs

from ipamcore.errors import CloudError, FailureKind

# Actions with their own, larger "resource" buckets in EC2.
RESOURCE_ACTIONS = frozenset(
    {
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "CreateNetworkInterface",
        "DeleteNetworkInterface",
    }
)


@attrs.frozen
class BucketSpec:
    """Size and refill rate of one bucket."""

    capacity: float
    refill_per_s: float


RESOURCE_BUCKET = BucketSpec(100, 5)
MUTATING_BUCKET = BucketSpec(50, 5)
DESCRIBE_BUCKET = BucketSpec(100, 20)


def default_spec(action: str) -> BucketSpec:
    """EC2's default bucket for an action: resource actions, describes, other mutations."""
    if action in RESOURCE_ACTIONS:
        return RESOURCE_BUCKET
    if action.startswith("Describe"):
        return DESCRIBE_BUCKET
    return MUTATING_BUCKET


class TokenBucket:
    """A token bucket in virtual time; starts full."""

    __slots__ = ("capacity", "last", "refill_per_s", "tokens")

    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.capacity = float(spec.capacity)
        self.refill_per_s = float(spec.refill_per_s)
        self.tokens = self.capacity
        self.last = now

    def take(self, now: float) -> bool:
        """Take one token if there is one (after refilling up to ``now``)."""
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.refill_per_s)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (without taking any)."""
        elapsed = max(0.0, now - self.last)
        return min(self.capacity, self.tokens + elapsed * self.refill_per_s)


class Throttle:
    """The account's buckets, created on first use of each action.

    ``enabled = False`` lets every call through (tests of other behaviour, benchmarks).
    ``configure(action, spec)`` overrides one action's bucket (and refills it).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._specs: dict[str, BucketSpec] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def configure(self, action: str, spec: BucketSpec) -> None:
        self._specs[action] = spec
        self._buckets.pop(action, None)

    def reset(self) -> None:
        """Refill every bucket (as if the account had been idle for a long time)."""
        self._buckets.clear()

    def bucket(self, action: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(action)
        if bucket is None:
            spec = self._specs.get(action) or default_spec(action)
            bucket = self._buckets[action] = TokenBucket(spec, now)
        return bucket

    def check(self, action: str, now: float) -> None:
        """Take a token for ``action`` or raise THROTTLED (``RequestLimitExceeded``)."""
        if not self.enabled:
            return
        if not self.bucket(action, now).take(now):
            raise CloudError(
                FailureKind.THROTTLED, f"{action}: request limit exceeded", "RequestLimitExceeded"
            )
