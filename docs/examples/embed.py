"""Embedding ipamcore: a toy cloud of its own, the plan/perform/apply loop, a pod that waits
for an address, a checkpoint and a restore. Run it: ``python docs/examples/embed.py``.

Nothing here is part of the library: the cloud is a dictionary, time is a number the program
moves forward. A real shell performs the same effects against EC2 (``backends/perform.py``
in this repository) and takes ``now`` from a clock.
"""

from __future__ import annotations

import ipaddress
import itertools

import ipamcore
from ipamcore import (
    AddressesAssigned,
    AddressesUnassigned,
    AllocationKey,
    AssignAddresses,
    CreateEni,
    Effect,
    EffectFailed,
    EniCreated,
    EniFreed,
    FailureKind,
    FreeEni,
    Ipam,
    ObservedEni,
    Outcome,
    PodRef,
    PoolConfig,
    PoolExhausted,
    UnassignAddresses,
)

SUBNET = "10.0.0.0/24"


class ToyCloud:
    """A pretend EC2 for one instance: ENIs with addresses from one subnet."""

    def __init__(self) -> None:
        hosts = ipaddress.ip_network(SUBNET).hosts()
        self._free = (str(a) for a in itertools.islice(hosts, 9, None))
        self._ids = itertools.count(1)
        self.enis: dict[str, ObservedEni] = {}
        primary = self._new_eni(device_index=0, addresses=0, is_primary=True)
        self.enis[primary.eni_id] = primary

    def _new_eni(self, device_index: int, addresses: int, is_primary: bool = False) -> ObservedEni:
        n = next(self._ids)
        return ObservedEni(
            eni_id=f"eni-{n:04d}",
            mac=f"02:00:00:00:00:{n:02x}",
            device_index=device_index,
            subnet_id="subnet-toy",
            subnet_cidr=SUBNET,
            primary_ip=next(self._free),
            ipv4_addresses=tuple(next(self._free) for _ in range(addresses)),
            is_primary=is_primary,
        )

    def perform(self, effect: Effect) -> Outcome:
        """Do what the effect asks; every effect gets exactly one outcome, failures too."""
        if isinstance(effect, CreateEni):
            if len(self.enis) >= 3:
                return EffectFailed(effect.effect_id, FailureKind.ENI_LIMIT, "no room")
            eni = self._new_eni(effect.device_index, effect.ipv4_count)
            self.enis[eni.eni_id] = eni
            return EniCreated(effect.effect_id, eni)
        if isinstance(effect, AssignAddresses):
            eni = self.enis[effect.eni_id]
            added = tuple(next(self._free) for _ in range(effect.ipv4_count))
            self.enis[eni.eni_id] = _with_addresses(eni, eni.ipv4_addresses + added)
            return AddressesAssigned(effect.effect_id, eni.eni_id, ipv4_addresses=added)
        if isinstance(effect, UnassignAddresses):
            eni = self.enis[effect.eni_id]
            kept = tuple(a for a in eni.ipv4_addresses if a not in effect.ipv4_addresses)
            self.enis[eni.eni_id] = _with_addresses(eni, kept)
            return AddressesUnassigned(effect.effect_id)
        if isinstance(effect, FreeEni):
            del self.enis[effect.eni_id]
            return EniFreed(effect.effect_id)
        raise AssertionError(f"unknown effect {effect!r}")


def _with_addresses(eni: ObservedEni, addresses: tuple[str, ...]) -> ObservedEni:
    return ObservedEni(
        eni_id=eni.eni_id, mac=eni.mac, device_index=eni.device_index,
        subnet_id=eni.subnet_id, subnet_cidr=eni.subnet_cidr, primary_ip=eni.primary_ip,
        ipv4_addresses=addresses, is_primary=eni.is_primary,
    )  # fmt: skip


def run_effects(ipam: Ipam, cloud: ToyCloud, now: float, waiting: int = 0) -> int:
    """One round of the loop: plan, perform each effect, apply its outcome. Effects done."""
    effects = ipam.plan(now, waiting=waiting)
    for effect in effects:
        ipam.apply(cloud.perform(effect), now)
    for notice in ipam.notices:
        print("notice:", notice)
    ipam.notices.clear()
    return len(effects)


def main() -> None:
    cloud = ToyCloud()
    limits = ipamcore.limits_for("m5.large")  # 3 ENIs x 10 addresses
    ipam = Ipam(PoolConfig(warm_ip_target=4), limits)
    now = 1_000.0
    ipam.load(cloud.enis.values(), now)  # what the cloud shows at start

    # Warm up: the policy asks for addresses on the primary ENI.
    run_effects(ipam, cloud, now)
    print("warm pool:", ipam.stats(now))

    # A burst of twelve ADDs at once: the warm pool serves four, the others wait while the
    # core asks for what they need (more addresses, a second ENI) in one round.
    keys = [AllocationKey("toy-net", f"container-{i}", "eth0") for i in range(12)]
    waiting = list(enumerate(keys))
    while waiting:
        still = []
        for i, key in waiting:
            try:
                allocation = ipam.assign(key, PodRef("default", f"pod-{i}"), now)
                print(f"{now:7.1f}  pod-{i} -> {allocation.address}")
            except PoolExhausted:
                still.append((i, key))
        if still:
            print(f"{now:7.1f}  {len(still)} pods wait for an address")
        waiting = still
        run_effects(ipam, cloud, now, waiting=len(waiting))
        now += 0.5

    # Persist (the shell writes these bytes atomically before acknowledging the ADD).
    data = ipamcore.encode(ipam.checkpoint())

    # A restart: a new core, the cloud as it is, then the checkpoint.
    now += 5.0
    restarted = Ipam(PoolConfig(warm_ip_target=4), limits)
    restarted.load(cloud.enis.values(), now)
    report = restarted.restore(ipamcore.decode(data), now)
    print(f"restored {len(report.restored)} allocations, dropped {len(report.dropped)}")
    assert sorted(a.address for a in restarted.allocations()) == sorted(
        a.address for a in ipam.allocations()
    )

    # Pods go; addresses cool down, then the policy gives the surplus back.
    for key in keys:
        restarted.release(key, now)
    while (wake := restarted.next_wake_at(now)) != float("inf") and now < 2_000.0:
        now = wake
        run_effects(restarted, cloud, now)
    stats = restarted.stats(now)
    print("after the pods left:", stats)
    assert stats.assigned == 0 and len(cloud.enis) == stats.enis


if __name__ == "__main__":
    main()
