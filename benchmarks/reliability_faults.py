"""Randomized cloud-fault run: vpc-ipamd in-process on a fake cloud, in virtual time, under a
random schedule of the named faults (``backends.fakecloud.named_faults``) overlapping with pod
churn, with the invariants checked at every step.

Each round: pick a fault (and a pool mode), start it, run pods in and out for a few virtual
minutes (sometimes restarting the daemon), stop it, and let the daemon recover by itself.
Invariants, every step: running pods keep their allocation, datapath and cloud address; no
allocation is force-removed; every allocation is on an address the instance holds; no ADD
answer is an address the instance does not hold or another pod has; every failed ADD is
"pool empty" or "unavailable" (CNI code 11); after the fault the pool matches the cloud.

One exception is counted apart, not hidden: an idle address (or idle ENI) removed out of band
by someone else's API call can be handed to a pod until the daemon's next reconciliation
(``IPAMD_RECONCILE_INTERVAL_SECONDS``, 60 s) shows it gone; reconciliation then force-removes
that allocation (``awscni_force_removed_ips``), as upstream does. No daemon can see such a
removal sooner without asking EC2 on every ADD. These are ``oob_window_handouts``; the same
address handed out after that window, any other address not held, or more force-removals
than such handouts, are violations. Each violation is counted once, not once per step.

``faults_injected`` counts calls refused plus out-of-band changes. The last line of output is
one JSON object (``faults_injected``, ``invariant_violations`` for benchmarks/reliability.py).

    python benchmarks/reliability_faults.py [--rounds 44] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

from adapters import protocol as p
from adapters.ipamd.clock import VirtualClock, settle_loop
from adapters.ipamd.daemon import Daemon, fan_out
from adapters.ipamd.executor import Ports
from adapters.ipamd.handlers import pod_network
from adapters.ipamd.logs import make_logger
from adapters.ipamd.settings import load_settings, state_env
from adapters.ipamd.wiring import AutoFakeDatapath, LockedCloud, LockedMetadata
from adapters.metrics import Metrics
from backends.checkpoint import JsonFileCheckpointStore
from backends.fakecloud import FakeCloud
from backends.fakecloud.named_faults import NAMED_FAULTS, FaultTarget, NamedFault
from backends.observe import CallCounter
from ipamcore.model import NO_MANAGE_TAG, AllocationKey

MODES = {
    "warm-eni": {"WARM_ENI_TARGET": "1"},
    "warm-ip": {"WARM_IP_TARGET": "4", "WARM_ENI_TARGET": "0"},
}
STEP_S = 5.0
TRY_AGAIN = {p.ERR_POOL_EMPTY, p.ERR_UNAVAILABLE, p.ERR_TIMEOUT}


class Node:
    """One fake instance and its daemon (restartable), in virtual time."""

    def __init__(self, mode: str) -> None:
        self.clock = VirtualClock()
        self.cloud = FakeCloud(throttling=False, clock=self.clock.now)
        subnet = self.cloud.add_subnet("10.0.0.0/20")
        self.instance = self.cloud.launch_instance("m5.xlarge", subnet)
        self.datapath = AutoFakeDatapath()
        self.state = tempfile.mkdtemp(prefix="ipamd-faults-", dir="/tmp")
        self.env = {
            **state_env(self.state),
            "DISABLE_INTROSPECTION": "true", "DISABLE_METRICS": "true",
            "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_ADD_WAIT_SECONDS": "5",
            "AWS_VPC_K8S_CNI_LOGLEVEL": "ERROR", **MODES[mode],
        }  # fmt: skip
        self.daemon: Daemon | None = None
        self.starting: asyncio.Future[None] | None = None
        self.removed_out_of_band: dict[str, float] = {}  # address -> virtual time removed
        self.window_handouts = 0

    def in_detection_window(self, address: str) -> bool:
        """Removed out of band so recently that no reconciliation can have seen it yet."""
        removed = self.removed_out_of_band.get(address)
        if removed is None or self.daemon is None:
            return False
        window = self.daemon.executor.settings.reconcile_interval_s + STEP_S
        return self.clock.now() <= removed + window

    def new_daemon(self) -> Daemon:
        settings = load_settings(self.env)
        metrics, calls = Metrics(), CallCounter()
        cloud = LockedCloud(self.cloud.port(self.instance, fan_out(calls, metrics)))
        metadata = LockedMetadata(self.cloud.metadata(self.instance), cloud._lock)
        store = JsonFileCheckpointStore(settings.checkpoint_path, clock=self.clock.now)
        ports = Ports(cloud=cloud, metadata=metadata, datapath=self.datapath, store=store)
        log = make_logger("ERROR", json=True, stream=open(os.devnull, "w"))  # noqa: SIM115
        return Daemon(settings, ports, self.clock, log, metrics=metrics, calls=calls,
                      rng=random.Random(7))  # fmt: skip

    @property
    def sock(self) -> str:
        return self.env["IPAMD_SOCKET"]


class Run:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.injected = 0
        self.violations: list[str] = []
        self.seen: set[str] = set()
        self.window_handouts = 0
        self.requests = 0
        self.faults_run: dict[str, int] = {}

    def violation(self, what: str) -> None:
        if what in self.seen:
            return  # the same fault seen again at a later step: one violation
        self.seen.add(what)
        self.violations.append(what)
        print(f"VIOLATION: {what}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------- plumbing
    async def tick(self, node: Node, seconds: float) -> None:
        await node.clock.advance(seconds)
        for _ in range(3):
            await settle_loop()
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 2.0
        while (
            node.daemon and node.daemon.executor.effects_in_flight and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.001)

    async def call(self, node: Node, req: p.Request) -> p.Reply | p.ProtocolError:
        self.requests += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            try:
                result: Any = p.request(node.sock, req, 10)
            except p.ProtocolError as exc:
                result = exc
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

        threading.Thread(target=work, daemon=True).start()
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.05)
            if done:
                return future.result()  # type: ignore[no-any-return]
            await self.tick(node, 1.0)

    async def start(self, node: Node, limit_s: float) -> bool:
        node.daemon = node.new_daemon()
        node.starting = asyncio.ensure_future(node.daemon.start())
        for _ in range(int(limit_s)):
            if node.starting.done():
                break
            await self.tick(node, 1.0)
        if node.starting.done():
            await node.starting
            return True
        return False

    async def finish_start(self, node: Node) -> None:
        assert node.starting is not None
        while not node.starting.done():
            await self.tick(node, 1.0)
        await node.starting

    # --------------------------------------------------------------- checks
    def held(self, node: Node) -> set[str]:
        return {
            a
            for e in node.cloud.enis_of(node.instance)
            if e.tag_map.get(NO_MANAGE_TAG, "").lower() != "true"
            for a in e.ipv4_addresses
        }

    def check(self, node: Node, running: dict[int, str], label: str) -> None:
        d = node.daemon
        if d is None or not d.executor.ready:
            return
        held = self.held(node)
        for n, ip in running.items():
            allocation = d.executor.core.get(key(n))
            if allocation is None or allocation.ipv4 != ip:
                self.violation(f"{label}: running pod {n} lost {ip}")
                continue
            if ip not in held:
                self.violation(f"{label}: running pod {n}: {ip} released on the cloud")
            missing = node.datapath.check_pod(pod_network(d.executor, allocation, netns(n)))
            if missing:
                self.violation(f"{label}: running pod {n}: datapath {missing}")
        for allocation in d.executor.core.allocations():
            ipv4 = allocation.ipv4 or ""
            if ipv4 in held or node.in_detection_window(ipv4):
                continue
            if ipv4 in d.executor.core.orphaned and ipv4 in node.removed_out_of_band:
                continue  # its pod still holds it; the daemon keeps it on record, unlent
            self.violation(f"{label}: allocation on {ipv4} not held")
        forced = int(d.executor.metrics.force_removed_ips._value.get())
        if forced > node.window_handouts:
            self.violation(f"{label}: {forced - node.window_handouts} allocations force-removed "
                           "beyond out-of-band removals")  # fmt: skip

    def check_add(self, node: Node, n: int, reply: Any, live: dict[int, str], label: str) -> None:
        if isinstance(reply, p.ProtocolError):
            if reply.code not in TRY_AGAIN:
                self.violation(f"{label}: ADD {n}: {reply.code}")
            return
        if not reply.ok:
            if reply.error_code not in TRY_AGAIN:
                self.violation(f"{label}: ADD {n}: {reply.error_code} {reply.error_message}")
            return
        ip = reply.result["ipv4"]
        if ip not in self.held(node):
            if node.in_detection_window(ip):
                node.window_handouts += 1
                self.window_handouts += 1
                print(f"{label}: ADD {n}: {ip} was removed out of band "
                      "before a reconciliation could see it", file=sys.stderr)  # fmt: skip
            else:
                self.violation(f"{label}: ADD {n}: {ip} is not held by the instance")
        if ip in live.values() and live.get(n) != ip:
            self.violation(f"{label}: ADD {n}: {ip} already given to another pod")
        live[n] = ip

    def target(self, node: Node) -> FaultTarget:
        assert node.daemon is not None
        views = node.daemon.executor.core.eni_views(node.clock.now())
        idle_eni = next(
            (v.eni_id for v in views if not v.is_primary and not v.excluded
             and all(a.state != "assigned" for b in v.blocks for a in b.addresses)),
            None,
        )  # fmt: skip
        idle_address = next(
            ((v.eni_id, a.address) for v in views if v.eni_id != idle_eni
             for b in v.blocks for a in b.addresses if a.state == "free"),
            None,
        )  # fmt: skip
        return FaultTarget(node.instance, idle_eni, idle_address)

    # --------------------------------------------------------------- one round
    async def round(self, number: int, fault: NamedFault, mode: str) -> None:
        node = Node(mode)
        label = f"round {number} {fault.name}:{mode}"
        rng = self.rng
        try:
            await self.start(node, 600)
            live: dict[int, str] = {}
            running: dict[int, str] = {}
            serial = iter(range(1, 10_000))
            for _ in range(rng.randint(4, 20)):
                n = next(serial)
                reply = await self.call(node, add(n))
                self.check_add(node, n, reply, live, label)
            running = dict(list(live.items())[: rng.randint(1, len(live))])
            for _ in range(12):
                await self.tick(node, STEP_S)
            target = self.target(node)
            if fault.needs_idle_eni and target.idle_eni_id is None:
                return  # nothing idle to remove in this pool: not a round
            if fault.name == "address-vanishes" and target.idle_address is None:
                return
            held_before = self.held(node)
            active = fault.start(node.cloud, target)
            for address in held_before - self.held(node):
                node.removed_out_of_band[address] = node.clock.now()
            self.faults_run[fault.name] = self.faults_run.get(fault.name, 0) + 1
            restarted_ready = True
            for _ in range(rng.randint(12, 48)):  # 1 to 4 virtual minutes
                d = node.daemon
                if fault.restart and d and d.executor.ready and rng.random() < 0.1:
                    await d.stop()
                    restarted_ready = await self.start(node, 30)
                if not restarted_ready and node.starting and node.starting.done():
                    await node.starting
                    restarted_ready = True
                action = rng.random()
                n = next(serial)
                if action < 0.5:
                    reply = await self.call(node, add(n))
                    self.check_add(node, n, reply, live, label)
                elif action < 0.8 and set(live) - set(running):
                    victim = rng.choice(sorted(set(live) - set(running)))
                    reply = await self.call(node, delete(victim))
                    if isinstance(reply, p.Reply) and reply.ok:
                        live.pop(victim, None)
                await self.tick(node, STEP_S)
                self.check(node, running, label)
            active.stop()
            self.injected += active.hits
            await self.finish_start(node)
            for _ in range(120):
                await self.tick(node, STEP_S)
                if self.consistent(node):
                    break
            else:
                self.violation(f"{label}: no recovery within 10 minutes")
            self.check(node, running, label)
            n = next(serial)
            reply = await self.call(node, add(n))
            if not (isinstance(reply, p.Reply) and reply.ok):
                self.violation(f"{label}: ADD after recovery failed: {reply}")
        finally:
            if node.daemon is not None:
                if node.starting is not None and not node.starting.done():
                    node.starting.cancel()
                elif not node.daemon.executor.stopping:
                    await d.stop()
            shutil.rmtree(node.state, ignore_errors=True)

    def consistent(self, node: Node) -> bool:
        d = node.daemon
        assert d is not None
        if d.executor.effects_in_flight:
            return False
        pool = {
            a.address
            for v in d.executor.core.eni_views(node.clock.now())
            if not v.excluded
            for b in v.blocks
            for a in b.addresses
        }
        primaries = {e.primary_ip for e in node.cloud.enis_of(node.instance)}
        return pool == self.held(node) - primaries and d.executor.stats().available > 0


def key(n: int) -> AllocationKey:
    return AllocationKey("aws-cni", f"c{n:04d}", "eth0")


def netns(n: int) -> str:
    return f"/var/run/netns/cni-{n}"


def add(n: int) -> p.Request:
    return p.Request(p.OP_ADD, network_name="aws-cni", container_id=f"c{n:04d}",
                     if_name="eth0", netns=netns(n), pod_namespace="default",
                     pod_name=f"pod-{n}")  # fmt: skip


def delete(n: int) -> p.Request:
    return p.Request(p.OP_DEL, network_name="aws-cni", container_id=f"c{n:04d}",
                     if_name="eth0", netns=netns(n))  # fmt: skip


async def run_all(rounds: int, seed: int) -> Run:
    rng = random.Random(seed)
    run = Run(rng)
    for number in range(rounds):
        fault = NAMED_FAULTS[number % len(NAMED_FAULTS)] if number < len(NAMED_FAULTS) else (
            rng.choice(NAMED_FAULTS)
        )  # fmt: skip
        mode = rng.choice(sorted(MODES))
        began = time.perf_counter()
        await run.round(number, fault, mode)
        print(f"round {number:3d} {fault.name:40s} {mode:8s} injected so far {run.injected:5d} "
              f"violations {len(run.violations)} ({time.perf_counter() - began:.1f}s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2 * len(NAMED_FAULTS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one round per named fault")
    args = parser.parse_args()
    if args.quick:
        args.rounds = len(NAMED_FAULTS)
    began = time.perf_counter()
    run = asyncio.run(run_all(args.rounds, args.seed))
    print(json.dumps({
        "benchmark": "reliability_faults",
        "rounds": args.rounds,
        "seed": args.seed,
        "faults_injected": run.injected,
        "invariant_violations": len(run.violations),
        "oob_window_handouts": run.window_handouts,
        "violation_samples": run.violations[:5],
        "requests": run.requests,
        "faults_run": run.faults_run,
        "seconds": round(time.perf_counter() - began, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
