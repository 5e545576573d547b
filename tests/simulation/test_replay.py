"""The daemon and the simulator are two executors of one :class:`ipamcore.node.Node`: a small
trace through the daemon itself (its socket, the fake cloud, the fake datapath, a virtual
clock) and through the simulator gives the same decisions.

Compared: each pod's address (from the node's replies), the cloud effects the node issued
(in order, with their ids and arguments), the EC2 mutating calls (action and outcome, in call
order) and what the cloud holds at the end. Both run in virtual time with zero-latency EC2
calls. What may differ is only execution: the daemon runs a pod's datapath setup and its
checkpoint write in worker threads, so their answers (and so checkpoint batches) can come in
another order than in the simulator, where both succeed at once.
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.ipamd.clock import settle_loop
from adapters.simulator import Cluster, PodEvent, SimConfig, parse_trace
from backends.observe import CallRecord
from ipamcore.config import PoolConfig
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
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

Run = tuple[
    dict[str, str], list[object], list[tuple[str, str]], list[tuple[int, tuple[str, ...]]]
]


class Decisions:
    """What a node decided, seen from its inputs and commands (the same for both executors)."""

    def __init__(self) -> None:
        self.pods: dict[int, str] = {}  # request id -> pod name
        self.allocations: dict[str, str] = {}
        self.effects: list[object] = []

    def __call__(self, inp: i.Input, commands: list[c.Command]) -> None:
        if isinstance(inp, i.Add):
            self.pods[inp.request_id] = inp.pod.name
        for command in commands:
            if isinstance(command, c.PerformEffect):
                self.effects.append(command.effect)
            elif isinstance(command, c.Reply) and command.pod is not None:
                assert command.allocation is not None and command.allocation.ipv4 is not None
                self.allocations[self.pods[command.request_id]] = command.allocation.ipv4


def _mutating(records: list[CallRecord]) -> list[tuple[str, str]]:
    return [(r.action, r.outcome) for r in records if r.mutating]


async def replay_through_daemon(events: list[PodEvent], env: dict[str, str]) -> Run:
    world = World.create(INSTANCE_TYPE)
    records: list[CallRecord] = []
    world.cloud.observers.append(records.append)
    daemon = world.daemon(IPAMD_ADD_WAIT_SECONDS="60", **env)
    decisions = Decisions()
    daemon.executor.observe = decisions
    number = {e.pod: n for n, e in enumerate(events)}
    clock = world.clock
    start = clock.now()

    async def quiet() -> None:
        """Wait (real time) until every command the node gave is answered (worker threads
        included) and its timer is asleep on the virtual clock again."""
        await settle_loop()
        await eventually(
            lambda: daemon.executor.commands_in_flight == 0 and clock.sleepers >= sleeping
        )
        await settle_loop()

    async def advance_to(t: float) -> None:
        """Step from one timer deadline to the next, letting the work each wake-up starts
        finish (worker threads included) before time moves on, as the simulator does."""
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
    return decisions.allocations, decisions.effects, _mutating(records), sorted(left)


def replay_through_simulator(events: list[PodEvent], pool: PoolConfig) -> Run:
    config = SimConfig(
        nodes=1, duration_s=END_S, instance_type=INSTANCE_TYPE, pool=pool, throttling=False,
        latencies=(), boot_spread_s=0.0,
    )  # fmt: skip
    cluster = Cluster(config, events)
    records: list[CallRecord] = []
    cluster.cloud.observers.append(records.append)
    node = cluster.nodes[0]
    decisions = Decisions()
    node.observe = decisions
    measures = cluster.run()
    assert measures.pods_unserved == 0
    left = [(e.device_index, tuple(sorted(e.ipv4_addresses)))
            for e in cluster.cloud.enis_of(node.instance_id)]  # fmt: skip
    return decisions.allocations, decisions.effects, _mutating(records), sorted(left)


@pytest.mark.parametrize(
    "env",
    [
        {},  # upstream defaults: WARM_ENI_TARGET=1
        {"WARM_IP_TARGET": "2"},
        {"IPAMD_POLICY": "adaptive"},
    ],
    ids=["warm-eni", "warm-ip", "adaptive"],
)
async def test_daemon_and_simulator_make_the_same_decisions(env: dict[str, str]) -> None:
    events = parse_trace(TRACE)
    world = World.create(INSTANCE_TYPE)
    pool = world.settings(**env).pool  # the daemon's own parsing of the same environment
    world.cleanup()
    d_alloc, d_effects, d_calls, d_left = await replay_through_daemon(events, env)
    s_alloc, s_effects, s_calls, s_left = await asyncio.to_thread(
        replay_through_simulator, events, pool
    )
    assert len(d_alloc) == 15
    assert d_alloc == s_alloc
    assert d_effects == s_effects
    assert d_calls == s_calls
    assert any(action == "CreateNetworkInterface" for action, _ in d_calls)
    assert d_left == s_left
