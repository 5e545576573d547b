"""A stateful property test of the core: pods come and go, time passes, the policy's effects
succeed or fail, the cloud drifts, and the node restarts through its checkpoint.

A naive model (a dict of allocations and a dict of release times) is compared with the real
Ipam after every step, and the invariants are checked continuously.
"""

from __future__ import annotations

from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from ipamcore.checkpoint import decode, encode
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind, PoolExhausted
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.inventory import SlotState
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, ObservedEni, ObservedNode, PodRef
from tests.core.builders import SUBNET, SUBNET_CIDR

LIMITS = InstanceLimits("test.small", max_enis=3, ipv4_per_eni=6)  # 5 IPs or 5 /28s per ENI
COOLDOWN = 30.0


class MiniCloud:
    """Just enough of a cloud to answer effects with real, unique addresses."""

    def __init__(self, prefix_mode: bool) -> None:
        self.prefix_mode = prefix_mode
        self.enis: dict[str, ObservedEni] = {}
        self.next_eni = 1
        self.next_ip = 10
        self.next_prefix = 0

    def primary(self) -> ObservedEni:
        e = ObservedEni(
            eni_id="eni-0", mac="02:00:00:00:00:00", device_index=0, subnet_id=SUBNET,
            subnet_cidr=SUBNET_CIDR, primary_ip="10.0.0.5", is_primary=True,
            security_groups=("sg-1",),
            ipv4_addresses=() if self.prefix_mode else self._ips(2),
            ipv4_prefixes=self._prefixes(1) if self.prefix_mode else (),
        )
        self.enis[e.eni_id] = e
        return e

    def _ips(self, n: int) -> tuple[str, ...]:
        out = []
        for _ in range(n):
            out.append(f"10.0.{self.next_ip // 250}.{self.next_ip % 250 + 5}")
            self.next_ip += 1
        return tuple(out)

    def _prefixes(self, n: int) -> tuple[str, ...]:
        out = []
        for _ in range(n):
            out.append(f"10.1.{self.next_prefix // 16}.{(self.next_prefix % 16) * 16}/28")
            self.next_prefix += 1
        return tuple(out)

    def perform(self, effect: Effect) -> Outcome:
        if isinstance(effect, CreateEni):
            index = len(self.enis)
            used = {e.device_index for e in self.enis.values()}
            index = min(i for i in range(10) if i not in used)
            e = ObservedEni(
                eni_id=f"eni-{self.next_eni}", mac=f"02:00:00:00:01:{self.next_eni:02x}",
                device_index=index, subnet_id=effect.subnet_id, subnet_cidr=SUBNET_CIDR,
                primary_ip=self._ips(1)[0], ipv4_addresses=self._ips(effect.ipv4_count),
                ipv4_prefixes=self._prefixes(effect.prefix_count),
            )
            self.next_eni += 1
            self.enis[e.eni_id] = e
            return EniCreated(effect.effect_id, e)
        if isinstance(effect, AssignAddresses):
            e = self.enis.get(effect.eni_id)
            if e is None:
                return EffectFailed(effect.effect_id, FailureKind.NOT_FOUND)
            ips, prefixes = self._ips(effect.ipv4_count), self._prefixes(effect.prefix_count)
            self.enis[e.eni_id] = ObservedEni(
                **{**_fields(e), "ipv4_addresses": e.ipv4_addresses + ips,
                   "ipv4_prefixes": e.ipv4_prefixes + prefixes}
            )
            return AddressesAssigned(effect.effect_id, e.eni_id, ips, prefixes)
        if isinstance(effect, UnassignAddresses):
            e = self.enis.get(effect.eni_id)
            if e is None:
                return EffectFailed(effect.effect_id, FailureKind.NOT_FOUND)
            self.enis[e.eni_id] = ObservedEni(
                **{**_fields(e),
                   "ipv4_addresses": tuple(
                       a for a in e.ipv4_addresses if a not in effect.ipv4_addresses),
                   "ipv4_prefixes": tuple(
                       p for p in e.ipv4_prefixes if p not in effect.prefixes)}
            )
            return AddressesUnassigned(effect.effect_id)
        assert isinstance(effect, FreeEni)
        if self.enis.pop(effect.eni_id, None) is None:
            return EffectFailed(effect.effect_id, FailureKind.NOT_FOUND)
        return EniFreed(effect.effect_id)

    def vanish(self, effect: Effect) -> FailureKind:
        """Make a NotFound answer true: what ``effect`` names is gone from the cloud (EC2
        answers NotFound only for what does not exist). The primary ENI cannot vanish; an
        effect on it fails with OTHER instead."""
        if isinstance(effect, CreateEni) or (effect.eni_id == "eni-0" and not isinstance(
            effect, UnassignAddresses
        )):
            return FailureKind.OTHER
        e = self.enis.get(effect.eni_id)
        if e is not None and isinstance(effect, UnassignAddresses):
            self.enis[e.eni_id] = ObservedEni(
                **{**_fields(e),
                   "ipv4_addresses": tuple(
                       a for a in e.ipv4_addresses if a not in effect.ipv4_addresses),
                   "ipv4_prefixes": tuple(
                       p for p in e.ipv4_prefixes if p not in effect.prefixes)}
            )  # fmt: skip
        elif e is not None:
            del self.enis[e.eni_id]
        return FailureKind.NOT_FOUND

    def snapshot(self) -> ObservedNode:
        return ObservedNode(enis=tuple(self.enis.values()))


def _fields(e: ObservedEni) -> dict[str, object]:
    import attrs

    return attrs.asdict(e, recurse=False)


class IpamMachine(RuleBasedStateMachine):
    keys = Bundle("keys")

    @initialize(prefix_mode=st.booleans(), warm=st.sampled_from(["eni", "ip", "min"]))
    def start(self, prefix_mode: bool, warm: str) -> None:
        knobs = {"eni": {}, "ip": {"warm_ip_target": 3}, "min": {"minimum_ip_target": 8,
                                                                    "warm_ip_target": 2}}[warm]
        self.config = PoolConfig(
            prefix_delegation=prefix_mode, cooldown_s=COOLDOWN, eni_min_age_s=10,
            shrink_interval_s=5, **knobs,  # type: ignore[arg-type]
        )
        self.cloud = MiniCloud(prefix_mode)
        self.now = 1_000.0
        self.ipam = Ipam(self.config, LIMITS)
        self.ipam.load([self.cloud.primary()], self.now)
        self.pending: list[Effect] = []
        self.issued_at: dict[int, float] = {}  # effect id -> when plan issued it
        self.model: dict[AllocationKey, str] = {}
        self.released: dict[str, float] = {}  # address -> release time (model)
        self.counter = 0
        note(f"config {self.config}")

    # ------------------------------------------------------------- pods
    @rule(target=keys)
    def add(self) -> AllocationKey:
        self.counter += 1
        key = AllocationKey("aws-cni", f"c{self.counter}", "eth0")
        try:
            allocation = self.ipam.assign(key, PodRef("ns", f"p{self.counter}"), self.now)
        except PoolExhausted:
            note(f"ADD {key.container_id}: pool exhausted")
            event("add: pool exhausted")
            return key
        event("add: assigned")
        address = allocation.address
        note(f"ADD {key.container_id} -> {address}")
        assert address not in self.model.values(), f"{address} handed out twice"
        released = self.released.get(address)
        assert released is None or self.now - released >= COOLDOWN, (
            f"{address} reused {self.now - released:.1f}s after release"
        )
        self.model[key] = address
        return key

    @rule(key=keys)
    def add_again(self, key: AllocationKey) -> None:
        if key in self.model:
            assert self.ipam.assign(key, PodRef(), self.now).address == self.model[key]

    @rule(key=consumes(keys))
    def delete(self, key: AllocationKey) -> None:
        released = self.ipam.release(key, self.now)
        expected = self.model.pop(key, None)
        assert (released.address if released else None) == expected
        if expected is not None:
            self.released[expected] = self.now
        assert self.ipam.release(key, self.now) is None  # DEL again is a no-op

    # ------------------------------------------------------------- time, policy
    @rule(seconds=st.sampled_from([0.5, 3.0, 11.0, 31.0, 61.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(waiting=st.integers(0, 3))
    def plan(self, waiting: int) -> None:
        effects = self.ipam.plan(self.now, waiting)
        in_flight_ids = {e.effect_id for e in self.pending}
        for effect in effects:
            assert effect.effect_id not in in_flight_ids
        # An effect unanswered for effect_timeout_s is given up by the core (its late answer
        # is ignored), so its ENI may be the subject of a new effect; the rest are busy.
        deadline = self.now - self.ipam.config.effect_timeout_s
        live = [e for e in self.pending if self.issued_at[e.effect_id] > deadline]
        busy = {getattr(e, "eni_id", None) for e in live} - {None}
        for effect in effects:
            if not isinstance(effect, CreateEni):
                assert effect.eni_id not in busy, f"second effect on busy ENI: {effect}"
        note(f"plan -> {effects}")
        self.pending.extend(effects)
        self.issued_at.update((e.effect_id, self.now) for e in effects)

    @rule(waiting=st.integers(0, 3))
    def plan_and_succeed(self, waiting: int) -> None:
        """The common path: the policy asks, the cloud answers, at once."""
        for effect in self.ipam.plan(self.now, waiting):
            outcome = self.cloud.perform(effect)
            event(f"outcome: {type(outcome).__name__}")
            for allocation in self.ipam.apply(outcome, self.now):
                note(f"force-removed {allocation}: kept on record until its DEL")

    @precondition(lambda self: bool(self.pending))
    @rule(index=st.integers(0, 10), fail=st.sampled_from([None, *FailureKind]))
    def complete(self, index: int, fail: FailureKind | None) -> None:
        effect = self.pending.pop(index % len(self.pending))
        if fail is FailureKind.NOT_FOUND:
            fail = self.cloud.vanish(effect)
        if fail is not None:
            outcome: Outcome = EffectFailed(effect.effect_id, fail)
        else:
            outcome = self.cloud.perform(effect)
        note(f"outcome {outcome}")
        event(f"outcome: {type(outcome).__name__}")
        removed = self.ipam.apply(outcome, self.now)
        for allocation in removed:
            note(f"force-removed {allocation}: kept on record until its DEL")

    # ------------------------------------------------------------- cloud drift
    @precondition(lambda self: len(self.cloud.enis) > 1)
    @rule(data=st.data())
    def drift_remove_free_address(self, data: st.DataObject) -> None:
        """An address nobody uses vanishes out of band; reconciliation must notice."""
        candidates = [
            (e, a) for e in self.cloud.enis.values() for a in e.ipv4_addresses
            if a not in self.model.values()
        ]
        if not candidates:
            return
        eni, address = data.draw(st.sampled_from(candidates))
        self.cloud.enis[eni.eni_id] = ObservedEni(
            **{**_fields(eni), "ipv4_addresses": tuple(
                a for a in eni.ipv4_addresses if a != address)}
        )

    @rule()
    def reconcile(self) -> None:
        report = self.ipam.reconcile(self.cloud.snapshot(), self.now)
        for allocation in report.force_removed:
            note(f"force-removed {allocation}: kept on record until its DEL")

    # ------------------------------------------------------------- restart
    @rule()
    def restart(self) -> None:
        """The daemon restarts: a new Ipam from the cloud's view and the checkpoint."""
        data = encode(self.ipam.checkpoint())
        checkpoint = decode(data)
        assert checkpoint == self.ipam.checkpoint()
        self.pending.clear()  # in-flight work is lost with the process
        fresh = Ipam(self.config, LIMITS)
        fresh.load(self.cloud.snapshot().enis, self.now)
        report = fresh.restore(checkpoint, self.now)
        event(f"restart with {len(report.restored)} allocations")
        for allocation, reason in report.dropped:
            note(f"dropped at restart: {allocation.key} ({reason})")
            self.model.pop(allocation.key, None)
        self.ipam = fresh

    # ------------------------------------------------------------- invariants
    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "ipam"):
            return
        actual = {a.key: a.address for a in self.ipam.allocations()}
        assert actual == self.model

    @invariant()
    def no_address_twice_and_on_attached_eni(self) -> None:
        if not hasattr(self, "ipam"):
            return
        addresses = [a.address for a in self.ipam.allocations()]
        assert len(addresses) == len(set(addresses))
        orphaned = self.ipam.orphaned
        for allocation in self.ipam.allocations():
            if allocation.address in orphaned:
                assert orphaned[allocation.address] == allocation
                assert allocation.address not in self.ipam.pool.slots
                continue
            slot = self.ipam.pool.slots[allocation.address]
            assert slot.state is SlotState.ASSIGNED
            assert slot.eni_id in self.ipam.pool.enis

    @invariant()
    def within_instance_limits(self) -> None:
        if not hasattr(self, "ipam"):
            return
        assert len(self.ipam.pool.enis) <= LIMITS.max_enis
        for eni in self.ipam.pool.enis.values():
            assert eni.ipv4_count() <= LIMITS.ips_per_eni
            assert eni.prefix_count() <= LIMITS.prefixes_per_eni

    @invariant()
    def counters_agree_with_slots(self) -> None:
        if not hasattr(self, "ipam"):
            return
        pool = self.ipam.pool
        asked = self.ipam.stats(self.now)  # a query: answers for now without moving the pool
        assert self.ipam.next_wake_at(self.now) > self.now
        pool.advance(self.now)
        assert self.ipam.stats(self.now) == asked
        assigned = sum(s.state is SlotState.ASSIGNED for s in pool.slots.values())
        cooling = sum(pool.is_cooling(s) for s in pool.slots.values())
        assert (pool.total, pool.assigned, pool.cooling) == (len(pool.slots), assigned, cooling)
        for slot in pool.slots.values():
            if pool.is_cooling(slot):
                assert slot.ready_at > self.now

    @invariant()
    def checkpoint_round_trip(self) -> None:
        if not hasattr(self, "ipam"):
            return
        checkpoint = self.ipam.checkpoint()
        assert decode(encode(checkpoint)) == checkpoint


IpamMachine.TestCase.settings = settings(
    settings.default, stateful_step_count=60
)
TestIpamMachine = IpamMachine.TestCase
