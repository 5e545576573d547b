"""The node's ``Persist`` carries the change since the previous one: applied to what was
stored, it must give exactly ``Node.checkpoint()`` (else a journal that writes changes would
lose an ADD, keep a DEL, or forget a cooldown). Random workloads, every Persist checked."""

from __future__ import annotations

import random

import pytest

from ipamcore.checkpoint import (
    ChangeTracker,
    Checkpoint,
    CheckpointChange,
    encode,
)
from ipamcore.config import PoolConfig
from ipamcore.errors import FailureKind
from ipamcore.events import EffectFailed
from ipamcore.model import AllocationKey, PodRef
from ipamcore.node import NodeConfig
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from tests.core.test_node import PRIMARY, Drive, eni, key


def _bytes(cp: Checkpoint) -> bytes:
    ordered = Checkpoint(
        allocations=tuple(sorted(cp.allocations, key=lambda a: str(a.key))),
        released_at=tuple(sorted(cp.released_at)),
        netns=cp.netns,
    )
    return encode(ordered)


class Stored(Drive):
    """A Drive whose checkpoint store applies each Persist's change, checked against the
    node's checkpoint at the moment the Persist was made (the change's cut)."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.stored: Checkpoint | None = None
        self.changes = 0
        self.wholes = 0
        self.must_be_whole = False
        start = self.node._start_persist

        def start_persist() -> None:
            start()
            command = self.node._out[-1]
            assert isinstance(command, c.Persist)
            self._persisted(command)

        self.node._start_persist = start_persist  # type: ignore[method-assign]

    def _persisted(self, command: c.Persist) -> None:
        now = self.node.checkpoint()
        if command.change is None or self.stored is None:
            assert command.change is None, "the first write must be whole"
            self.wholes += 1
            self.stored = now
        else:
            assert not self.must_be_whole, "a write after a failed one must be whole"
            self.changes += 1
            self.stored = command.change.apply_to(self.stored)
        self.must_be_whole = False
        assert _bytes(self.stored) == _bytes(now)

    def fail_persist(self) -> None:
        command = self.take(c.Persist)
        self.must_be_whole = True  # what reached the store is unknown
        self.stored = None
        self.feed(i.Failed(self.now, command.cid, "disk full"))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("cooldown", [0.0, 30.0])
def test_every_persisted_change_gives_the_node_checkpoint(seed: int, cooldown: float) -> None:
    rnd = random.Random(seed)
    enis = (PRIMARY, eni(1, tuple(f"10.0.1.{k}" for k in range(10, 19))))
    d = Stored(NodeConfig(pool=PoolConfig(warm_eni_target=0, cooldown_s=cooldown)))
    d.boot(enis=enis)
    live: set[int] = set()
    serial = 0
    for _ in range(400):
        op = rnd.random()
        if op < 0.35:
            serial += 1
            d.add(serial)
            live.add(serial)
        elif op < 0.6 and live:
            n = rnd.choice(sorted(live))
            d.delete(n)
            live.discard(n)
        elif op < 0.65 and live:  # GC: a few live pods are no longer valid
            keep = {n for n in live if rnd.random() < 0.7}
            d._rid += 1
            valid = frozenset((key(n).container_id, "eth0") for n in keep)
            d.feed(i.Gc(d.now, d._rid, "aws-cni", valid))
            live = keep
        elif op < 0.75:
            d.now += rnd.choice([0.5, 5.0, 40.0])
            d.tick()
        elif op < 0.8 and d.has(c.SetUpPod):
            d.feed(i.Failed(d.now, d.take(c.SetUpPod).cid, "no veth"))
        elif op < 0.84 and d.has(c.Persist):
            d.fail_persist()
        for _ in range(rnd.randint(0, 3)):
            pending = [x for x in d.open if isinstance(x, c.SetUpPod | c.TearDownPod | c.Persist)]
            if not pending:
                break
            command = rnd.choice(pending)
            d.open.remove(command)
            d.feed(i.Done(d.now, command.cid))
        while d.has(c.PerformEffect):
            effect = d.take(c.PerformEffect)
            outcome = EffectFailed(effect.effect.effect_id, FailureKind.OTHER, "no")
            d.feed(i.EffectDone(d.now, effect.cid, outcome))
    d.settle()
    assert d.changes > 50  # the hot path wrote changes, not the whole checkpoint


def test_a_tracker_reads_current_values_so_a_change_applies_idempotently() -> None:
    from ipamcore.ipam import Ipam
    from ipamcore.limits import InstanceLimits

    ipam = Ipam(PoolConfig(cooldown_s=10.0), InstanceLimits("t.node", max_enis=1, ipv4_per_eni=5))
    ipam.load([PRIMARY], 0.0)
    tracker = ChangeTracker()
    assert tracker.cut(ipam, {}) is None  # nothing written yet: the whole checkpoint
    k = AllocationKey("aws-cni", "c1", "eth0")
    allocation = ipam.assign(k, PodRef("ns", "p"), 1.0)
    assert allocation.ipv4 is not None
    tracker.touch(k, allocation)
    change = tracker.cut(ipam, {k: "/var/run/netns/x"})
    assert change == CheckpointChange(put=((allocation, "/var/run/netns/x"),), unreleased=(
        allocation.ipv4,))  # fmt: skip
    tracker.touch(k, ipam.release(k, 2.0))
    change = tracker.cut(ipam, {})
    assert change is not None and change.removed == (k,)
    assert change.released == ((allocation.ipv4, 2.0),)
    stored = Checkpoint()
    assert _bytes(change.apply_to(change.apply_to(stored))) == _bytes(change.apply_to(stored))
    assert tracker.cut(ipam, {}) == CheckpointChange()  # nothing touched since
    tracker.touch_all()
    assert tracker.cut(ipam, {}) is None
