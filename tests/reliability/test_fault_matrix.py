"""The cloud-fault matrix (issue 6): every named fault x every property.

Each fault runs once against an in-process vpc-ipamd in virtual time (see
:mod:`tests.reliability.fault_driver`); the observations are kept for the module and each
property is its own test, so a failure names the fault and the property.
"""

from __future__ import annotations

import pytest

from adapters import protocol as p
from backends.fakecloud.named_faults import FAULTS_BY_NAME, NAMED_FAULTS, NamedFault
from tests.reliability.fault_driver import E_TRY_AGAIN, MODES, FaultRun, Observations

_seen: dict[tuple[str, str], Observations] = {}


async def observe(case: tuple[NamedFault, str]) -> Observations:
    fault, mode = case
    if (fault.name, mode) not in _seen:
        _seen[fault.name, mode] = await FaultRun(fault, mode).run()
    return _seen[fault.name, mode]


# A warm-IP pool keeps no idle ENI, so faults that remove one run with warm ENIs only.
CASES = [
    (fault, mode) for fault in NAMED_FAULTS for mode in MODES
    if not (fault.needs_idle_eni and mode == "warm-ip")
]
FAULTS = pytest.mark.parametrize("case", CASES, ids=[f"{f.name}:{m}" for f, m in CASES])


@FAULTS
async def test_fault_is_exercised(case: tuple[NamedFault, str]) -> None:
    """The fault really happened: calls were refused or the cloud was changed."""
    obs = await observe(case)
    assert obs.hits > 0, obs


@FAULTS
async def test_running_pods_undisturbed(case: tuple[NamedFault, str]) -> None:
    fault = case[0]
    obs = await observe(case)
    assert obs.violations == []


@FAULTS
async def test_warm_pool_keeps_serving(case: tuple[NamedFault, str]) -> None:
    fault = case[0]
    obs = await observe(case)
    assert obs.warm_failures == []
    assert obs.warm_served == obs.warm_available
    if fault.name not in ("unreachable-restart",):
        assert obs.warm_available > 0, "the fault left no warm pool to test"


@FAULTS
async def test_beyond_the_pool_try_again_never_a_wrong_address(case: tuple[NamedFault, str]) -> None:
    fault = case[0]
    obs = await observe(case)
    assert obs.wrong_addresses == []
    assert set(obs.beyond_codes) <= {"ok", p.ERR_POOL_EMPTY}, obs.beyond_codes
    assert all(code == E_TRY_AGAIN for code in obs.beyond_cni_codes)
    if fault.blocks_growth:
        assert obs.beyond_codes == [p.ERR_POOL_EMPTY] * len(obs.beyond_codes)


@FAULTS
async def test_recovers_by_itself(case: tuple[NamedFault, str]) -> None:
    fault = case[0]
    obs = await observe(case)
    assert obs.recovered, obs.recovery_notes
    assert obs.after_recovery_ok


def test_catalogue_covers_the_issue() -> None:
    names = set(FAULTS_BY_NAME)
    for action in ("AssignPrivateIpAddresses", "CreateNetworkInterface", "DescribeNetworkInterfaces"):
        assert f"throttle-{action}" in names
    for name in ("subnet-full", "address-limit", "eni-limit", "eni-vanishes", "eni-appears",
                 "metadata-lags", "metadata-stale", "unreachable"):
        assert name in names
