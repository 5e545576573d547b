"""Named cloud faults for reliability tests and benchmarks: what goes wrong, started and stopped.

Each :class:`NamedFault` starts against a :class:`~backends.fakecloud.cloud.FakeCloud` and one
instance and returns an :class:`ActiveFault`, whose ``stop()`` ends it and whose ``hits`` counts
the failures it caused (calls refused) or the out-of-band changes it made. The catalogue covers
issue 6's "Cloud faults": throttling (``RequestLimitExceeded``) of each EC2 action the agent
uses, a full subnet, address and ENI limits, ENIs that vanish or appear out of band, a
metadata view that lags or is stale, and an endpoint unreachable for minutes.

``restart`` marks faults that only matter when the agent reads instance metadata, i.e. at
start: the driver restarts the agent while they are active. ``blocks_growth`` marks faults
during which no new address can be obtained, so an ADD beyond the warm pool must be answered
"try again later".
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from backends.fakecloud.cloud import FakeCloud
from backends.fakecloud.faults import CallInfo
from ipamcore.errors import FailureKind
from ipamcore.model import NO_MANAGE_TAG

# Every EC2 action the agent's cloud port performs (FakeEc2 names them as EC2 does).
AGENT_ACTIONS = (
    # (DescribeInstances is not here: the core picks device indexes, no call needs it.)
    "CreateNetworkInterface",
    "AttachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "DescribeNetworkInterfaces",
    "DetachNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeSubnets",
)
GROWTH_ACTIONS = frozenset({"CreateNetworkInterface", "AssignPrivateIpAddresses"})


@attrs.frozen
class FaultTarget:
    """What a fault may act on: the instance, and an ENI and an address the agent holds but
    no pod uses (so removing them out of band disturbs no pod by construction)."""

    instance_id: str
    idle_eni_id: str | None = None
    idle_address: tuple[str, str] | None = None  # (eni id, address)


@attrs.define
class ActiveFault:
    name: str
    hits: int = 0
    _stop: Callable[[], None] | None = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


@attrs.frozen
class NamedFault:
    name: str
    start: Callable[[FakeCloud, FaultTarget], ActiveFault]
    blocks_growth: bool = False
    restart: bool = False
    needs_idle_eni: bool = False


def _refusing(
    name: str, kind: FailureKind, code: str, actions: frozenset[str] | None
) -> Callable[[FakeCloud, FaultTarget], ActiveFault]:
    """Every call of ``actions`` (None: any action) fails with ``kind``/``code`` until stopped."""

    def start(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
        active = ActiveFault(name)

        def hit(info: CallInfo) -> bool:
            if actions is not None and info.action not in actions:
                return False
            active.hits += 1
            return True

        rule = cloud.fail_when(hit, kind, code)
        active._stop = lambda: cloud.faults.remove(rule)
        return active

    return start


def _unreachable(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
    active = ActiveFault("unreachable")

    def hit(info: CallInfo) -> bool:
        active.hits += 1
        return True

    # RequestTimeout as the fake's unreachable switch answers it, but counted.
    rule = cloud.fail_when(hit, FailureKind.OTHER, "RequestTimeout")

    def stop() -> None:
        cloud.faults.remove(rule)

    active._stop = stop
    return active


def _eni_vanishes(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
    assert target.idle_eni_id is not None, "eni-vanishes needs an idle ENI"
    cloud.remove_eni(target.idle_eni_id)
    return ActiveFault("eni-vanishes", hits=1)


def _address_vanishes(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
    assert target.idle_address is not None, "address-vanishes needs an idle address"
    eni_id, address = target.idle_address
    cloud.remove_address(eni_id, address)
    return ActiveFault("address-vanishes", hits=1)


def _eni_appears(tags: dict[str, str]) -> Callable[[FakeCloud, FaultTarget], ActiveFault]:
    def start(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
        cloud.add_eni(target.instance_id, ipv4_count=3, tags=tags)
        return ActiveFault("eni-appears", hits=1)

    return start


def _metadata_lags(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
    """Metadata 120 s behind EC2, and an ENI attached behind the agent's back just now: the
    restarted agent's metadata view lacks it (upstream #3019, #1967)."""
    cloud.metadata_lag = 120.0
    cloud.add_eni(target.instance_id, ipv4_count=2)
    active = ActiveFault("metadata-lags", hits=1)

    def stop() -> None:
        cloud.metadata_lag = 0.0

    active._stop = stop
    return active


def _metadata_stale(cloud: FakeCloud, target: FaultTarget) -> ActiveFault:
    """Metadata frozen 10 minutes back, then an idle ENI deleted: the restarted agent's
    metadata still lists an ENI (and addresses) that no longer exist (upstream #3887)."""
    assert target.idle_eni_id is not None, "metadata-stale needs an idle ENI"
    cloud.metadata_lag = 600.0
    cloud.remove_eni(target.idle_eni_id)
    active = ActiveFault("metadata-stale", hits=1)

    def stop() -> None:
        cloud.metadata_lag = 0.0

    active._stop = stop
    return active


def _catalogue() -> tuple[NamedFault, ...]:
    faults = [
        NamedFault(
            f"throttle-{action}",
            _refusing(
                f"throttle-{action}",
                FailureKind.THROTTLED,
                "RequestLimitExceeded",
                frozenset({action}),
            ),
        )
        for action in AGENT_ACTIONS
    ]
    faults += [
        NamedFault(
            "throttle-all",
            _refusing("throttle-all", FailureKind.THROTTLED, "RequestLimitExceeded", None),
            blocks_growth=True,
        ),
        NamedFault(
            "subnet-full",
            _refusing(
                "subnet-full",
                FailureKind.SUBNET_FULL,
                "InsufficientFreeAddressesInSubnet",
                GROWTH_ACTIONS,
            ),
            blocks_growth=True,
        ),
        NamedFault(
            "address-limit",
            _refusing(
                "address-limit",
                FailureKind.LIMIT_EXCEEDED,
                "PrivateIpAddressLimitExceeded",
                frozenset({"AssignPrivateIpAddresses"}),
            ),
        ),
        NamedFault(
            "eni-limit",
            _refusing(
                "eni-limit",
                FailureKind.LIMIT_EXCEEDED,
                "AttachmentLimitExceeded",
                frozenset({"AttachNetworkInterface"}),
            ),
        ),
        NamedFault("eni-vanishes", _eni_vanishes, needs_idle_eni=True),
        NamedFault("address-vanishes", _address_vanishes),
        NamedFault("eni-appears", _eni_appears({})),
        NamedFault("eni-appears-no-manage", _eni_appears({NO_MANAGE_TAG: "true"})),
        NamedFault("metadata-lags", _metadata_lags, restart=True),
        NamedFault("metadata-stale", _metadata_stale, restart=True, needs_idle_eni=True),
        NamedFault("unreachable", _unreachable, blocks_growth=True),
        NamedFault("unreachable-restart", _unreachable, blocks_growth=True, restart=True),
    ]
    return tuple(faults)


NAMED_FAULTS: tuple[NamedFault, ...] = _catalogue()
FAULTS_BY_NAME = {fault.name: fault for fault in NAMED_FAULTS}
