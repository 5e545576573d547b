"""Observation of cloud calls: every call's action, latency and outcome, for metrics and counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attrs

OK = "ok"

MUTATING_ACTIONS = frozenset(
    {
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "AssignIpv6Addresses",
        "UnassignIpv6Addresses",
        "CreateTags",
    }
)


@attrs.frozen
class CallRecord:
    """One cloud API call: ``outcome`` is ``"ok"`` or a FailureKind value; ``code`` the
    cloud's error code (e.g. ``RequestLimitExceeded``) when it failed; ``target`` what the call
    was about (an ENI id, or the subnet of a CreateNetworkInterface) when the backend knows it
    (the fake cloud does; it is left out of equality)."""

    action: str
    latency_s: float
    outcome: str = OK
    code: str = ""
    target: str = attrs.field(default="", eq=False)

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING_ACTIONS


CallObserver = Callable[[CallRecord], None]


@attrs.define
class CallCounter:
    """A CallObserver that counts calls by (action, outcome) and keeps total latency."""

    counts: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    latency_s: dict[str, float] = attrs.field(factory=dict)

    def __call__(self, record: CallRecord) -> None:
        self.counts[(record.action, record.outcome)] += 1
        self.latency_s[record.action] = self.latency_s.get(record.action, 0.0) + record.latency_s

    def total(self, action: str | None = None, outcome: str | None = None) -> int:
        return sum(
            n
            for (a, o), n in self.counts.items()
            if (action is None or a == action) and (outcome is None or o == outcome)
        )

    def mutating(self) -> int:
        return sum(n for (a, _o), n in self.counts.items() if a in MUTATING_ACTIONS)
