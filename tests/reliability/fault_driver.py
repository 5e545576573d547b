"""Run one named cloud fault against an in-process vpc-ipamd, in virtual time, and record what
the properties of issue 6 need: pods already running are never disturbed, the warm pool keeps
serving, ADDs beyond the pool get "try again later" (never a wrong address), the daemon
recovers by itself when the fault ends, and nothing in use is released from a stale view.

The run, in virtual time (a VirtualClock: minutes pass without sleeping):

1. start the daemon (WARM_IP_TARGET, so the pool also shrinks), ADD the running pods and the
   churn pods; let the pool settle;
2. start the fault (restart the daemon during it when the fault is a metadata one);
3. ADD as many pods as the pool has available addresses (each must be served at once);
4. ADD pods beyond the pool (ok with a correct address, or code 11 when the fault blocks
   growth); DEL every pod but the running ones (so the pool shrinks during the fault);
5. let ``fault_minutes`` pass, checking the invariants at every step;
6. stop the fault; let time pass until the daemon has recovered (or give up after
   ``recovery_limit_s``); ADD one more pod.

Invariants checked after every step (violations are collected, not raised, so a benchmark can
count them): every running pod keeps its allocation, its datapath and its address on the
cloud; no allocation is force-removed; every allocation is on an address the instance holds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import attrs

from adapters import protocol as p
from adapters.cni.plugin import E_TRY_AGAIN, Plugin
from adapters.ipamd.clock import settle_loop
from adapters.ipamd.daemon import Daemon
from adapters.ipamd.handlers import pod_network
from backends.fakecloud.named_faults import ActiveFault, FaultTarget, NamedFault
from ipamcore.model import NO_MANAGE_TAG, AllocationKey
from tests.adapters.harness import World, add_request, call, del_request

INSTANCE_TYPE = "m5.xlarge"  # 4 ENIs of 15 addresses: room to grow, shrink and add one
COMMON = {"IPAMD_ADD_WAIT_SECONDS": "5", "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN"}
# Two pool configurations: whole warm ENIs (upstream's default; ENIs are created and freed)
# and a warm IP target (addresses are assigned and unassigned one by one).
MODES: dict[str, dict[str, str]] = {
    "warm-eni": {**COMMON, "WARM_ENI_TARGET": "1"},
    "warm-ip": {**COMMON, "WARM_IP_TARGET": "4", "WARM_ENI_TARGET": "0"},
}
WARM_AVAILABLE = {"warm-eni": 14, "warm-ip": 4}  # free addresses the pool keeps at rest
RUNNING = 6  # pods running before the fault, checked all along
CHURN = 16  # pods running before the fault and deleted during it (the pool shrinks)
BEYOND = 4  # ADDs sent at once after the warm pool is used up
STEP_S = 5.0


@attrs.define
class Observations:
    """What one run saw; the properties are read from here."""

    fault: str
    hits: int = 0
    violations: list[str] = attrs.field(factory=list)
    warm_available: int = 0
    warm_served: int = 0
    warm_failures: list[str] = attrs.field(factory=list)
    beyond_codes: list[str] = attrs.field(factory=list)  # "ok" or the error code
    beyond_cni_codes: list[int] = attrs.field(factory=list)
    wrong_addresses: list[str] = attrs.field(factory=list)
    recovered: bool = False
    recovery_s: float = -1.0
    recovery_notes: list[str] = attrs.field(factory=list)
    after_recovery_ok: bool = False
    requests: int = 0


def key_of(n: int) -> AllocationKey:
    req = add_request(n)
    return AllocationKey(req.network_name, req.container_id, req.if_name)


class FaultRun:
    def __init__(self, fault: NamedFault, mode: str, fault_minutes: float = 3.0) -> None:
        self.fault = fault
        self.mode = mode
        self.settings = MODES[mode]
        self.fault_minutes = fault_minutes
        self.world = World.create(INSTANCE_TYPE)
        self.daemon: Daemon | None = None
        self.obs = Observations(fault.name)
        self.running: dict[int, str] = {}  # pod number -> address
        self.live: dict[int, str] = {}  # every pod with an address (running, churn, new)
        self.numbers = itertools.count(1)
        self.starting: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def d(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    async def start_daemon(self, limit_s: float = 60.0) -> bool:
        """Start a daemon; False if it is still not ready after ``limit_s`` of virtual time
        (it waits for EC2); :meth:`finish_start` then waits for it."""
        self.daemon = self.world.daemon(**self.settings)
        self.starting = asyncio.ensure_future(self.daemon.start())
        for _ in range(int(limit_s)):
            if self.starting.done():
                break
            await self.tick(1.0, check=False)
        if not self.starting.done():
            return False
        await self.starting
        return True

    async def finish_start(self) -> None:
        assert self.starting is not None
        while not self.starting.done():
            await self.tick(1.0, check=False)
        await self.starting

    async def tick(self, seconds: float, check: bool = True) -> None:
        """Advance virtual time, then let worker threads (cloud, datapath) finish."""
        await self.world.clock.advance(seconds)
        for _ in range(3):
            await settle_loop()
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 2.0
        while (
            self.daemon is not None
            and self.d.executor.effects_in_flight
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.001)
        await settle_loop()
        if check:
            self.check_invariants()

    async def request(self, req: p.Request) -> p.Reply:
        self.obs.requests += 1
        task = asyncio.ensure_future(call(self.world.socket_path, req))
        for _ in range(200):
            done, _ = await asyncio.wait({task}, timeout=0.05)
            if done:
                break
            await self.tick(1.0)
        return await task

    async def add(self, n: int) -> p.Reply:
        reply = await self.request(add_request(n))
        if reply.ok:
            self.check_address(n, reply.result["ipv4"])
            self.live[n] = reply.result["ipv4"]
        return reply

    async def delete(self, n: int) -> p.Reply:
        reply = await self.request(del_request(n))
        if reply.ok:
            self.live.pop(n, None)
        return reply

    # ------------------------------------------------------------------ checks
    def cloud_addresses(self) -> dict[str, str]:
        """address -> ENI id, for managed ENIs attached to the instance (ground truth)."""
        out = {}
        for eni in self.world.cloud.enis_of(self.world.instance_id):
            if eni.tag_map.get(NO_MANAGE_TAG, "").lower() == "true":
                continue
            for address in eni.ipv4_addresses:
                out[address] = eni.eni_id
        return out

    def check_address(self, n: int, ip: str) -> None:
        """An ADD's answer is right: the instance holds it, on a managed ENI, and no other
        pod has it."""
        if ip not in self.cloud_addresses():
            self.obs.wrong_addresses.append(f"pod {n}: {ip} is not on the instance's ENIs")
        for other, other_ip in self.live.items():
            if other != n and other_ip == ip:
                self.obs.wrong_addresses.append(f"pod {n}: {ip} already belongs to pod {other}")

    def check_invariants(self) -> None:
        if self.daemon is None or not self.daemon.executor.ready:
            return
        agent = self.d.executor
        cloud = self.cloud_addresses()
        violations = self.obs.violations
        for n, ip in self.running.items():
            allocation = agent.core.get(key_of(n))
            if allocation is None or allocation.ipv4 != ip:
                violations.append(f"running pod {n} lost its allocation {ip}")
                continue
            if ip not in cloud:
                violations.append(f"running pod {n}: {ip} was released on the cloud")
            net = pod_network(agent, allocation, add_request(n).netns)
            missing = self.world.datapath.check_pod(net)
            if missing:
                violations.append(f"running pod {n}: datapath disturbed: {missing}")
        for allocation in agent.core.allocations():
            if allocation.ipv4 not in cloud:
                violations.append(f"allocation {allocation.key} on {allocation.ipv4}: not held")
        removed = agent.metrics.force_removed_ips._value.get()
        if removed:
            violations.append(f"{removed:g} allocations force-removed")

    def target(self) -> FaultTarget:
        """An idle secondary ENI (no allocation) and an idle address, from the daemon's view."""
        now = self.world.clock.now()
        idle_eni = None
        idle_address = None
        for view in self.d.executor.core.eni_views(now):
            states = [a.state for b in view.blocks for a in b.addresses]
            if view.is_primary or view.excluded:
                continue
            if "assigned" not in states and idle_eni is None:
                idle_eni = view.eni_id
        for view in self.d.executor.core.eni_views(now):
            if view.eni_id == idle_eni:
                continue
            for block in view.blocks:
                for a in block.addresses:
                    if a.state == "free" and idle_address is None:
                        idle_address = (view.eni_id, a.address)
        return FaultTarget(self.world.instance_id, idle_eni, idle_address)

    def recovered(self) -> list[str]:
        """Why the daemon has not recovered yet (empty: it has)."""
        agent = self.d.executor
        notes = []
        stats = agent.stats()
        if stats.available < WARM_AVAILABLE[self.mode]:
            notes.append(f"available {stats.available} < {WARM_AVAILABLE[self.mode]}")
        if agent.effects_in_flight:
            notes.append(f"{agent.effects_in_flight} effects in flight")
        pool = {
            a.address
            for view in agent.core.eni_views(self.world.clock.now())
            if not view.excluded
            for b in view.blocks
            for a in b.addresses
        }
        primaries = {e.primary_ip for e in self.world.cloud.enis_of(self.world.instance_id)}
        cloud = set(self.cloud_addresses()) - primaries
        if pool != cloud:
            notes.append(
                f"pool and cloud differ: only in pool {sorted(pool - cloud)[:3]}, "
                f"only on cloud {sorted(cloud - pool)[:3]}"
            )
        return notes

    # ------------------------------------------------------------------ the run
    async def run(self, recovery_limit_s: float = 600.0) -> Observations:
        try:
            await self._run(recovery_limit_s)
        finally:
            if self.daemon is not None and not self.daemon.executor.stopping:
                await self.daemon.stop()
            self.world.cleanup()
        return self.obs

    async def _run(self, recovery_limit_s: float) -> None:
        obs = self.obs
        await self.start_daemon()
        for _ in range(RUNNING):
            n = next(self.numbers)
            reply = await self.add(n)
            assert reply.ok, reply
            self.running[n] = reply.result["ipv4"]
        for _ in range(CHURN):
            assert (await self.add(next(self.numbers))).ok
        for _ in range(20):
            await self.tick(STEP_S)

        active = self.fault.start(self.world.cloud, self.target())
        await self.tick(1.0)
        if self.fault.restart:
            await self.d.stop()
            if not await self.start_daemon():
                await self._while_not_ready(active)
                return
            self.check_invariants()
        if not self.fault.restart:
            for _ in range(14):  # past a reconciliation: the pool reflects the fault
                await self.tick(STEP_S)
        # A restarted daemon serves at once, before any reconciliation corrects its view.

        obs.warm_available = self.d.executor.stats().available
        for _ in range(obs.warm_available):
            n = next(self.numbers)
            reply = await self.add(n)
            if reply.ok:
                obs.warm_served += 1
            else:
                obs.warm_failures.append(f"{reply.error_code}: {reply.error_message}")

        beyond = [next(self.numbers) for _ in range(BEYOND)]
        replies = await asyncio.gather(*(self.add(n) for n in beyond))
        for reply in replies:
            obs.beyond_codes.append("ok" if reply.ok else reply.error_code)
            if not reply.ok:
                obs.beyond_cni_codes.append(Plugin._daemon_error(reply, "add").code)
        # Every pod but the running ones goes: the highest ENIs empty and the pool shrinks.
        for n in sorted(set(self.live) - set(self.running)):
            reply = await self.delete(n)
            if not reply.ok:
                obs.violations.append(f"DEL of pod {n} failed: {reply.error_code}")
        steps = int(self.fault_minutes * 60 / STEP_S)
        for _ in range(steps):
            await self.tick(STEP_S)

        await self._recover(active, recovery_limit_s)

    async def _while_not_ready(self, active: ActiveFault) -> None:
        """The daemon waits for EC2 to start: ADDs cannot connect, which the plugin answers
        with code 11; the running pods' datapath is left alone; it starts when EC2 returns."""
        obs = self.obs
        for _ in range(BEYOND):
            try:
                reply = await call(self.world.socket_path, add_request(next(self.numbers)), 2)
            except p.ProtocolError as exc:
                obs.beyond_codes.append(exc.code)
                retry = exc.code in (p.ERR_UNAVAILABLE, p.ERR_TIMEOUT)  # as Plugin.cmd_add
                obs.beyond_cni_codes.append(E_TRY_AGAIN if retry else -1)
            else:
                obs.beyond_codes.append("ok" if reply.ok else reply.error_code)
        for _ in range(int(self.fault_minutes * 60 / STEP_S)):
            await self.tick(STEP_S, check=False)
        await self._recover(active, 600.0)

    async def _recover(self, active: ActiveFault, recovery_limit_s: float) -> None:
        obs = self.obs
        active.stop()
        obs.hits = active.hits
        await self.finish_start()
        began = self.world.clock.now()
        while self.world.clock.now() - began < recovery_limit_s:
            await self.tick(STEP_S)
            if not self.recovered():
                obs.recovered = True
                obs.recovery_s = self.world.clock.now() - began
                break
        obs.recovery_notes = self.recovered()
        reply = await self.add(next(self.numbers))
        obs.after_recovery_ok = reply.ok
        self.check_invariants()


def summary(obs: Observations) -> dict[str, Any]:
    return attrs.asdict(obs)


__all__ = ["E_TRY_AGAIN", "FaultRun", "Observations", "summary"]
