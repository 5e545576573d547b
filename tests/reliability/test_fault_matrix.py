"""The cloud-fault matrix (issue 6): every named fault x every property.

Each fault runs once against an in-process vpc-ipamd in virtual time (see
:mod:`tests.reliability.fault_driver`); the observations are kept for the module and each
property is its own test, so a failure names the fault and the property.
"""

from __future__ import annotations

import pytest

from adapters import protocol as p
from backends.fakecloud.named_faults import AGENT_ACTIONS, FAULTS_BY_NAME, NAMED_FAULTS, NamedFault
from tests.adapters.harness import World, add_request, call, logs, until
from tests.reliability.fault_driver import E_TRY_AGAIN, MODES, FaultRun, Observations

_seen: dict[tuple[str, str], Observations] = {}


async def observe(case: tuple[NamedFault, str]) -> Observations:
    fault, mode = case
    if (fault.name, mode) not in _seen:
        _seen[fault.name, mode] = await FaultRun(fault, mode).run()
    return _seen[fault.name, mode]


# A warm-ENI pool gets its addresses with each new ENI and gives back whole ENIs: it never
# calls (Un)AssignPrivateIpAddresses, so those faults run with a warm IP target only. A warm-IP
# pool keeps no idle ENI, so faults that remove one run with warm ENIs only.
NOT_EXERCISED = {
    "warm-eni": {
        "throttle-AssignPrivateIpAddresses", "throttle-UnassignPrivateIpAddresses",
        "address-limit",
    },
    "warm-ip": {f.name for f in NAMED_FAULTS if f.needs_idle_eni},
}  # fmt: skip
CASES = [
    (fault, mode)
    for fault in NAMED_FAULTS
    for mode in MODES
    if fault.name not in NOT_EXERCISED[mode]
]
FAULTS = pytest.mark.parametrize("case", CASES, ids=[f"{f.name}:{m}" for f, m in CASES])


@FAULTS
async def test_fault_is_exercised(case: tuple[NamedFault, str]) -> None:
    """The fault really happened: calls were refused or the cloud was changed."""
    obs = await observe(case)
    assert obs.hits > 0, obs


@FAULTS
async def test_running_pods_undisturbed(case: tuple[NamedFault, str]) -> None:
    """Allocations, datapath and cloud addresses of running pods intact at every step;
    nothing force-removed; every allocation on an address the instance holds."""
    obs = await observe(case)
    assert obs.violations == []


@FAULTS
async def test_warm_pool_keeps_serving(case: tuple[NamedFault, str]) -> None:
    """Every address the pool had available when the fault hit is handed out."""
    fault = case[0]
    obs = await observe(case)
    assert obs.warm_failures == []
    assert obs.warm_served == obs.warm_available
    if fault.name != "unreachable-restart":  # no daemon until EC2 answers: no warm pool
        assert obs.warm_available > 0, "the fault left no warm pool to test"


@FAULTS
async def test_beyond_the_pool_try_again_never_a_wrong_address(
    case: tuple[NamedFault, str],
) -> None:
    """ADDs beyond the warm pool: a correct address, or an answer the plugin turns into CNI
    code 11 "try again later" (pool empty; or no daemon yet while it waits for EC2)."""
    fault = case[0]
    obs = await observe(case)
    assert obs.wrong_addresses == []
    assert set(obs.beyond_codes) <= {"ok", p.ERR_POOL_EMPTY, p.ERR_UNAVAILABLE}, obs.beyond_codes
    assert obs.beyond_cni_codes == [E_TRY_AGAIN] * len(obs.beyond_cni_codes)
    if fault.blocks_growth:
        assert "ok" not in obs.beyond_codes and obs.beyond_codes


@FAULTS
async def test_recovers_by_itself(case: tuple[NamedFault, str]) -> None:
    """After the fault: the pool matches the cloud, is back to its warm level with nothing in
    flight, and a new pod gets an address, with no outside help."""
    obs = await observe(case)
    assert obs.recovered, obs.recovery_notes
    assert obs.after_recovery_ok


def test_catalogue_covers_the_issue() -> None:
    names = set(FAULTS_BY_NAME)
    for action in AGENT_ACTIONS:
        assert f"throttle-{action}" in names
    for name in ("subnet-full", "address-limit", "eni-limit", "eni-vanishes", "eni-appears",
                 "metadata-lags", "metadata-stale", "unreachable"):  # fmt: skip
        assert name in names


async def test_stale_metadata_ghost_eni_is_never_served() -> None:
    """Regression: at start the daemon used to add ENIs that only (stale) metadata listed, and
    handed pods addresses of an ENI deleted minutes before."""
    world = World.create("m5.xlarge")
    d = world.daemon(WARM_ENI_TARGET="2")
    await d.start()
    await until(lambda: d.executor.stats().enis >= 2, world.clock)
    spare = max(d.executor.eni_views(), key=lambda v: v.device_index).eni_id
    await d.stop()
    world.cloud.metadata_lag = 600.0
    world.cloud.remove_eni(spare)
    assert spare in {e.eni_id for e in world.cloud.metadata(world.instance_id).enis()}

    d2 = world.daemon(WARM_ENI_TARGET="0")
    await d2.start()
    try:
        assert spare not in {v.eni_id for v in d2.executor.eni_views()}
        assert "ENIs in metadata but not in EC2 ignored" in logs(world)
        held = {a for e in world.cloud.enis_of(world.instance_id) for a in e.ipv4_addresses}
        total = d2.executor.stats().available
        for n in range(total):
            reply = await call(world.socket_path, add_request(n))
            assert reply.ok and reply.result["ipv4"] in held
    finally:
        await d2.stop()
        world.cleanup()
