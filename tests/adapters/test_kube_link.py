"""KubeLink's reading of the node's inputs for Events (EC2 throttled, unauthorized, subnet
full, pods waiting), with stand-ins for the watcher and the executor: no I/O."""

from __future__ import annotations

from typing import Any

import structlog

from adapters.ipamd.clock import VirtualClock
from adapters.ipamd.kube import KubeLink
from backends.kubernetes.settings import KubeSettings
from ipamcore.effects import CreateEni
from ipamcore.errors import FailureKind
from ipamcore.events import AddressesAssigned, EffectFailed
from ipamcore.model import Allocation, AllocationKey, PodRef
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node import replies


class Watcher:
    settings = KubeSettings(node_name="n1")

    def synced(self) -> bool:
        return True

    def eniconfig_for_node(self) -> None:
        return None


class Node:
    waiting = (0, None)

    def waiting_adds(self) -> tuple[int, float | None]:
        return self.waiting  # type: ignore[return-value]


class Executor:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.node = Node()


def link() -> tuple[KubeLink, VirtualClock, Any]:
    clock = VirtualClock()
    ex = Executor(clock)
    return KubeLink(Watcher(), ex, clock, structlog.get_logger()), clock, ex  # type: ignore[arg-type]


def failed(cid: int, kind: FailureKind, message: str = "") -> i.EffectDone:
    return i.EffectDone(0.0, cid, EffectFailed(cid, kind, message))


def test_throttled_for_a_while_then_a_success_ends_it() -> None:
    k, clock, _ = link()
    k._on_input(failed(1, FailureKind.THROTTLED), [])
    first = k.observations().throttled_since
    assert first == clock.now()
    k._on_input(failed(2, FailureKind.THROTTLED), [])
    assert k.observations().throttled_since == first  # the start of the run
    k._on_input(i.EffectDone(0.0, 3, AddressesAssigned(3, "eni-1", ("10.0.0.5",))), [])
    assert k.observations().throttled_since is None


def test_unauthorized_and_subnet_full_name_what_failed() -> None:
    k, _, _ = link()
    create = c.PerformEffect(7, CreateEni(effect_id=1, subnet_id="subnet-pods", security_groups=()))
    k._on_input(i.Tick(0.0), [create])
    k._on_input(failed(7, FailureKind.SUBNET_FULL, "InsufficientFreeAddressesInSubnet"), [])
    k._on_input(failed(8, FailureKind.OTHER, "UnauthorizedOperation: not allowed"), [])
    obs = k.observations()
    assert obs.subnet_full == "subnet-pods"
    assert obs.ec2_unauthorized == "UnauthorizedOperation"


def test_pods_waiting_in_wall_time() -> None:
    k, clock, ex = link()
    ex.node.waiting = (3, clock.monotonic() - 40)
    obs = k.observations()
    assert obs.pods_waiting == 3
    assert obs.waiting_since == clock.now() - 40


def add(clock: VirtualClock, pod: str, rid: int) -> i.Add:
    key = AllocationKey("aws-cni", f"c-{pod}-{rid}", "eth0")
    return i.Add(clock.monotonic(), rid, key, PodRef("demo", pod))


def test_pods_turned_away_and_retried_wait_across_adds() -> None:
    """An ADD waits 5 s (IPAMD_ADD_WAIT_SECONDS) and kubelet retries: the pod waits from its
    first ADD turned away until one succeeds, not only while one ADD is open."""
    k, clock, _ = link()
    began = clock.now()
    k._on_reply(add(clock, "web-0", 1), c.Reply(1, replies.POOL_EMPTY))
    clock._now += 20
    k._on_reply(add(clock, "web-1", 2), c.Reply(2, replies.POOL_EMPTY))
    clock._now += 20
    k._on_reply(add(clock, "web-0", 3), c.Reply(3, replies.POOL_EMPTY))
    obs = k.observations()
    assert obs.pods_waiting == 2
    assert obs.waiting_since == began  # web-0's first ADD, 40 s ago
    allocation = Allocation(AllocationKey("aws-cni", "c-web-0-4", "eth0"), PodRef("demo", "web-0"),
                            "10.0.0.5", None, 0.0)  # fmt: skip
    k._on_reply(add(clock, "web-0", 4), c.Reply(4, allocation=allocation))
    obs = k.observations()
    assert obs.pods_waiting == 1 and obs.waiting_since == began + 20  # web-1 still waits
    clock._now += 301  # no retry for 5 min: kubelet gave web-1 up
    assert k.observations().pods_waiting == 0
