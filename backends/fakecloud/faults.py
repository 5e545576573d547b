"""Fault injection: make chosen EC2 calls fail, or the whole endpoint unreachable.

A rule matches by action name (or any action with ``action=None``) and optionally by a
predicate on the call; it fires ``times`` times (``None``: until removed). Injected failures
happen before throttling, so they take no token (EC2 does not bill requests it never saw).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ipamcore.errors import CloudError, FailureKind

DEFAULT_CODES = {
    FailureKind.THROTTLED: "RequestLimitExceeded",
    FailureKind.SUBNET_FULL: "InsufficientFreeAddressesInSubnet",
    FailureKind.LIMIT_EXCEEDED: "AttachmentLimitExceeded",
    FailureKind.NOT_FOUND: "InvalidNetworkInterfaceID.NotFound",
    FailureKind.OTHER: "InternalError",
}


@attrs.frozen
class CallInfo:
    """What a fault predicate sees of one EC2 call.

    ``target`` is the ENI id for ENI actions, the subnet id for CreateNetworkInterface and
    DescribeSubnets, the instance id otherwise.
    """

    action: str
    instance_id: str
    target: str
    now: float


FaultPredicate = Callable[[CallInfo], bool]


@attrs.define
class FaultRule:
    """One injected failure; ``remaining=None`` fires until removed."""

    action: str | None
    kind: FailureKind
    code: str
    remaining: int | None = 1
    predicate: FaultPredicate | None = None
    message: str = "injected failure"

    def matches(self, info: CallInfo) -> bool:
        if self.action is not None and self.action != info.action:
            return False
        return self.predicate is None or self.predicate(info)


class FaultInjector:
    """The rules in force, and the unreachable switch."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.unreachable = False

    @property
    def active(self) -> bool:
        return self.unreachable or bool(self.rules)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        if rule in self.rules:
            self.rules.remove(rule)

    def clear(self) -> None:
        self.rules.clear()
        self.unreachable = False

    def check(self, info: CallInfo) -> None:
        """Raise the first matching fault (consuming one of its uses)."""
        if self.unreachable:
            raise CloudError(
                FailureKind.OTHER, f"{info.action}: endpoint unreachable", "RequestTimeout"
            )
        for rule in self.rules:
            if rule.matches(info):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rules.remove(rule)
                raise CloudError(rule.kind, f"{info.action}: {rule.message}", rule.code)
