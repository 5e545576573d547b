"""One small trace replayed through the daemon itself (its socket, the fake cloud, the fake
datapath, a virtual clock) and through the simulator: the same allocations, the same EC2
calls in the same order, the same ENIs and addresses left on the instance.

What is compared, and why that is what should be equal:

* allocations: each pod's address, as the daemon replied to the ADD and as the simulator's
  core recorded it;
* EC2 mutating calls (CreateNetworkInterface, AttachNetworkInterface, Assign/Unassign...),
  action and outcome in call order; describe calls are left out on purpose: the daemon
  reconciles from EC2's DescribeNetworkInterfaces and looks up subnets for subnet discovery,
  the simulator reconciles from the metadata view (no EC2 call), so describes differ by
  design and change nothing (with no metadata lag both views are the same ENIs);
* what the cloud holds at the end: each ENI's device index and addresses.

Both run in virtual time with zero-latency EC2 calls, so every effect completes at the
instant it is issued in both (the simulator applies an outcome ``latency`` seconds later).
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.ipamd.clock import settle_loop
from backends.observe import CallRecord
from backends.simulation import Cluster, PodEvent, SimConfig, parse_trace
from ipamcore.config import PoolConfig
from ipamcore.model import Allocation, AllocationKey, PodRef
from tests.adapters.harness import World, add_request, call, del_request, eventually

TRACE = """\
time,node,event,pod
10.63,0,add,a0
11.69,0,add,a1
12.51,0,add,a2
13.66,0,add,a3
14.84,0,add,a4
15.23,0,add,a5
15.55,0,add,a6
17.02,0,add,a7
17.68,0,add,a8
18.31,0,add,a9
20.07,0,add,a10
20.96,0,add,a11
46.47,0,del,a0
47.44,0,del,a1
48.63,0,del,a2
49.14,0,del,a3
50.33,0,del,a4
51.85,0,del,a5
52.88,0,del,a6
54.22,0,del,a7
55.46,0,del,a8
120.39,0,add,b0
121.75,0,add,b1
122.88,0,add,b2
"""
END_S = 400.0  # long enough for shrink passes after the dels
INSTANCE_TYPE = "m5.large"

Outcome = tuple[dict[str, str], list[tuple[str, str]], list[tuple[int, tuple[str, ...]]]]


def _mutating(records: list[CallRecord]) -> list[tuple[str, str]]:
    return [(r.action, r.outcome) for r in records if r.mutating]


async def replay_through_daemon(events: list[PodEvent], env: dict[str, str]) -> Outcome:
    world = World.create(INSTANCE_TYPE)
    records: list[CallRecord] = []
    world.cloud.observers.append(records.append)
    daemon = world.daemon(IPAMD_ADD_WAIT_SECONDS="60", **env)
    allocations: dict[str, str] = {}
    number = {e.pod: n for n, e in enumerate(events)}
    clock = world.clock
    start = clock.now()

    async def quiet() -> None:
        """Wait (real time) until the daemon's worker threads are done and every loop is
        asleep on the virtual clock again (policy, reconciliation, leaked-ENI cleanup)."""
        await settle_loop()
        await eventually(
            lambda: daemon.executor.effects_in_flight == 0 and clock.sleepers >= sleeping
        )
        await settle_loop()

    async def advance_to(t: float) -> None:
        """Step from one sleeper's deadline to the next, letting each woken loop finish its
        work (worker threads included) before time moves on, as the simulator's event
        queue does."""
        while clock.now() < t:
            deadline = clock.next_deadline
            step = t if deadline is None else min(t, deadline)
            await clock.advance(max(step - clock.now(), 0.0))
            await quiet()

    await daemon.start()
    try:
        await settle_loop()
        await eventually(lambda: daemon.executor.effects_in_flight == 0)
        await asyncio.sleep(0.05)
        sleeping = clock.sleepers
        await quiet()
        for event in events:
            await advance_to(start + event.time)
            n = number[event.pod]
            if event.event == "add":
                reply = await call(world.socket_path, add_request(n, pod_name=event.pod))
                assert reply.ok, reply
                allocations[event.pod] = reply.result["ipv4"]
            else:
                reply = await call(world.socket_path, del_request(n))
                assert reply.ok and reply.result["released"], reply
            await quiet()
        await advance_to(start + END_S)
        left = [(e.device_index, tuple(sorted(e.ipv4_addresses)))
                for e in world.cloud.enis_of(world.instance_id)]  # fmt: skip
    finally:
        await daemon.stop()
        world.cleanup()
    return allocations, _mutating(records), sorted(left)


def replay_through_simulator(events: list[PodEvent], pool: PoolConfig) -> Outcome:
    config = SimConfig(
        nodes=1, duration_s=END_S, instance_type=INSTANCE_TYPE, pool=pool, throttling=False,
        latencies=(), boot_spread_s=0.0,
    )  # fmt: skip
    cluster = Cluster(config, events)
    records: list[CallRecord] = []
    cluster.cloud.observers.append(records.append)
    node = cluster.nodes[0]
    allocations: dict[str, str] = {}
    real_assign = node.ipam.assign

    def assign(key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        allocation = real_assign(key, pod, now)  # raises PoolExhausted: the pod waits
        assert allocation.ipv4 is not None
        allocations[pod.name] = allocation.ipv4
        return allocation

    node.ipam.assign = assign  # type: ignore[method-assign]
    measures = cluster.run()
    assert measures.pods_unserved == 0
    left = [(e.device_index, tuple(sorted(e.ipv4_addresses)))
            for e in cluster.cloud.enis_of(node.instance_id)]  # fmt: skip
    return allocations, _mutating(records), sorted(left)


@pytest.mark.parametrize(
    "env",
    [
        {},  # upstream defaults: WARM_ENI_TARGET=1
        {"WARM_IP_TARGET": "2"},
        {"IPAMD_POLICY": "adaptive"},
    ],
    ids=["warm-eni", "warm-ip", "adaptive"],
)
async def test_daemon_and_simulator_make_the_same_allocations_and_ec2_calls(
    env: dict[str, str],
) -> None:
    events = parse_trace(TRACE)
    world = World.create(INSTANCE_TYPE)
    pool = world.settings(**env).pool  # the daemon's own parsing of the same environment
    world.cleanup()
    daemon_run = await replay_through_daemon(events, env)
    sim_run = await asyncio.to_thread(replay_through_simulator, events, pool)
    d_alloc, d_calls, d_left = daemon_run
    s_alloc, s_calls, s_left = sim_run
    assert len(d_alloc) == 15
    assert d_alloc == s_alloc
    assert d_calls == s_calls
    assert any(action == "CreateNetworkInterface" for action, _ in d_calls)
    assert d_left == s_left

