"""Network cards in the core: per-card ENI limits and device indexes, route tables, the warm
address kept on each card above 0 for multi-NIC pods, and max pods left at upstream's figure."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamcore import cards
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind, PoolExhausted, UsageError
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
)
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import AllocationKey, ObservedEni, ObservedNode, PodRef

T0 = 1_700_000_000.0
TWO_CARDS = InstanceLimits(
    instance_type="x.multi", max_enis=3, ipv4_per_eni=4, network_cards=((0, 3), (1, 2))
)


def primary() -> ObservedEni:
    return ObservedEni(
        eni_id="eni-p", mac="02:00:00:00:00:01", device_index=0, subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/16", primary_ip="10.0.0.5", is_primary=True,
        ipv4_addresses=("10.0.0.10", "10.0.0.11", "10.0.0.12"), security_groups=("sg-1",),
    )  # fmt: skip


def on_card(card: int, device: int, n: int, addresses: tuple[str, ...] = ()) -> ObservedEni:
    return ObservedEni(
        eni_id=f"eni-c{card}d{device}", mac=f"02:00:00:00:{card:02x}:{device:02x}",
        device_index=device, network_card=card, subnet_id="subnet-1", subnet_cidr="10.0.0.0/16",
        primary_ip=f"10.0.{card}.{100 + n}", ipv4_addresses=addresses,
    )  # fmt: skip


def ipam(multi_nic: bool = True, limits: InstanceLimits = TWO_CARDS) -> Ipam:
    core = Ipam(PoolConfig(warm_eni_target=0, multi_nic=multi_nic), limits)
    core.load([primary()], T0)
    return core


def answer(core: Ipam, effect: Effect, now: float, serial: list[int]) -> None:
    """Play a cloud that always succeeds, numbering addresses with ``serial``."""
    if isinstance(effect, CreateEni):
        serial[0] += 1
        n = serial[0]
        addresses = tuple(f"10.{effect.network_card + 1}.{n}.{k}" for k in range(effect.ipv4_count))
        eni = attrs.evolve(
            on_card(effect.network_card, effect.device_index, n, addresses), eni_id=f"eni-{n}"
        )
        core.apply(EniCreated(effect.effect_id, eni), now)
    elif isinstance(effect, AssignAddresses):
        serial[0] += 1
        n = serial[0]
        addresses = tuple(f"10.200.{n}.{k}" for k in range(effect.ipv4_count))
        core.apply(AddressesAssigned(effect.effect_id, effect.eni_id, addresses), now)


# ------------------------------------------------------------------- pure functions
@pytest.mark.parametrize(
    ("card", "device", "max_enis", "table"),
    [
        (0, 0, 15, None),  # the primary ENI: main table
        (0, 1, 15, 2),  # card 0 keeps device N -> table N+1
        (0, 14, 15, 15),
        (1, 0, 15, 16),  # upstream: card * max ENIs + device + 1
        (1, 1, 15, 17),
        (3, 14, 15, 60),
        (31, 1, 2, 64),  # p5.48xlarge's last card
        (1, 15, 15, None),  # outside card 1's tables: would be card 2's device 0
        (0, 15, 15, None),
    ],
)
def test_route_table_numbering_is_upstreams(
    card: int, device: int, max_enis: int, table: int | None
) -> None:
    assert cards.route_table(card, device, max_enis) == table


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("m5.large", {0: 3}),
        ("c6in.32xlarge", {0: 8, 1: 8}),
        ("p4d.24xlarge", {0: 15, 1: 15, 2: 15, 3: 15}),
        ("trn1.32xlarge", dict.fromkeys(range(8), 5)),
    ],
)
def test_card_limits_from_the_table(instance_type: str, expected: dict[int, int]) -> None:
    assert cards.card_limits(limits_for(instance_type)) == expected


@pytest.mark.parametrize(
    ("instance_type", "max_pods"),
    [("p4d.24xlarge", 737), ("p5.48xlarge", 100), ("trn1.32xlarge", 247), ("m5.large", 29)],
)
def test_max_pods_stays_upstreams_figure_with_multi_nic(instance_type: str, max_pods: int) -> None:
    limits = limits_for(instance_type)
    core = Ipam(PoolConfig(multi_nic=True), limits)
    assert core.max_pods == max_pods == limits.max_pods
    assert core.max_enis == limits.max_enis  # card 0's limit, not the sum over cards


def test_a_row_without_cards_reads_as_one_card() -> None:
    bare = InstanceLimits(instance_type="x.old", max_enis=4, ipv4_per_eni=6)
    assert cards.card_limits(bare) == {0: 4}


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        (AllocationKey("n", "c", "eth0"), False),
        (AllocationKey("n", "c", "mNicIf1"), True),
        (AllocationKey("n", "c", "mNicIf12"), True),
        (AllocationKey("n", "c", "mNicIf0"), False),
        (AllocationKey("n", "c", "mNicIfx"), False),
    ],
)
def test_extra_attachment_keys(key: AllocationKey, extra: bool) -> None:
    assert cards.is_extra_attachment(key) is extra


def test_attachment_names_follow_upstream() -> None:
    base = AllocationKey("aws-cni", "c1", "eth0")
    assert [cards.attachment_key(base, i).if_name for i in range(3)] == [
        "eth0", "mNicIf1", "mNicIf2",
    ]  # fmt: skip


# ------------------------------------------------------------------- the Ipam
def test_without_multi_nic_cards_above_0_are_left_alone() -> None:
    core = Ipam(PoolConfig(warm_eni_target=0), TWO_CARDS)
    core.load([primary(), on_card(1, 1, 1, ("10.1.0.7",))], T0)
    assert core.multi_nic_cards == (0,)
    assert [e for e in core.plan(T0) if isinstance(e, CreateEni) and e.network_card] == []
    view = {v.eni_id: v for v in core.eni_views(T0)}
    assert view["eni-c1d1"].excluded and view["eni-c1d1"].network_card == 1
    with pytest.raises(UsageError):
        core.assign_on_card(AllocationKey("n", "c", "mNicIf1"), PodRef(), 1, T0)
    # A card-1 ENI does not take one of card 0's ENI slots.
    assert core.stats(T0).enis == 1


def test_multi_nic_creates_an_eni_on_each_card_with_one_warm_address() -> None:
    core = ipam()
    effects = core.plan(T0)
    created = [e for e in effects if isinstance(e, CreateEni) and e.network_card == 1]
    assert len(created) == 1
    # device 0 first on a card above 0, as upstream's awsGetFreeDeviceNumber
    assert (created[0].device_index, created[0].ipv4_count) == (0, cards.CARD_WARM_IP_TARGET)
    assert created[0].subnet_id == "subnet-1" and created[0].security_groups == ("sg-1",)
    # In flight: not asked again.
    assert not [e for e in core.plan(T0 + 1) if isinstance(e, CreateEni) and e.network_card == 1]


def test_a_multi_nic_pod_gets_one_address_per_card_and_releases_them() -> None:
    core, serial = ipam(), [0]
    for effect in core.plan(T0):
        answer(core, effect, T0, serial)
    assert core.multi_nic_cards == (0, 1)
    base = AllocationKey("aws-cni", "c1", "eth0")
    pod = PodRef("default", "p")
    first = core.assign_on_card(base, pod, 0, T0)
    second = core.assign_on_card(cards.attachment_key(base, 1), pod, 1, T0)
    assert core.network_card_of(first) == 0 and core.network_card_of(second) == 1
    assert second.ipv4 is not None and second.ipv4.startswith("10.2.")
    info = core.eni(second.eni_id)
    assert info is not None and core.route_table_of(info) == 1 * 3 + 0 + 1
    # Both are in the checkpoint and found by key and by pod.
    assert {a.key for a in core.checkpoint().allocations} == {base, second.key}
    assert core.get(second.key) == second and len(core.find_by_pod("default", "p")) == 2
    # The card's one address is taken: the next multi-NIC pod waits, and the card grows.
    with pytest.raises(PoolExhausted):
        core.assign_on_card(AllocationKey("aws-cni", "c2", "mNicIf1"), pod, 1, T0)
    grow = [e for e in core.plan(T0 + 1, card_waiting={1: 1}) if isinstance(e, AssignAddresses)]
    assert grow and grow[0].eni_id == second.eni_id and grow[0].ipv4_count == 2
    assert core.release(second.key, T0 + 2) == second
    assert core.get(second.key) is None


def test_restore_binds_card_addresses_again() -> None:
    core, serial = ipam(), [0]
    for effect in core.plan(T0):
        answer(core, effect, T0, serial)
    base = AllocationKey("aws-cni", "c1", "eth0")
    core.assign_on_card(base, PodRef(), 0, T0)
    extra = core.assign_on_card(cards.attachment_key(base, 1), PodRef(), 1, T0)
    saved = core.checkpoint()
    enis = [v for v in core.eni_views(T0)]
    again = ipam()
    card_eni = core.eni(extra.eni_id)
    assert card_eni is not None
    again.reconcile(ObservedNode((primary(), card_eni)), T0 + 100)
    report = again.restore(saved, T0 + 100)
    assert not report.dropped and len(enis) == 2
    assert again.get(extra.key) is not None and again.network_card_of(again.get(extra.key)) == 1  # type: ignore[arg-type]


def test_a_card_never_exceeds_its_eni_limit() -> None:
    core, serial = ipam(), [0]
    pod = PodRef()
    for n in range(20):
        for effect in core.plan(T0 + n):
            answer(core, effect, T0 + n, serial)
        try:
            core.assign_on_card(AllocationKey("n", f"c{n}", "mNicIf1"), pod, 1, T0 + n)
        except PoolExhausted:
            pass
    on_card_1 = [v for v in core.eni_views(T0) if v.network_card == 1]
    assert len(on_card_1) == 2  # TWO_CARDS allows 2 ENIs on card 1
    assert sorted(v.device_index for v in on_card_1) == [0, 1]


def test_a_card_shrinks_back_to_its_warm_address_and_keeps_it() -> None:
    """After a burst of multi-NIC pods on card 1 is gone (and the cooldown and the shrink
    interval have passed), the card gives back its surplus addresses, keeps one (upstream's
    targets for cards above 0), and card 0 is not touched."""
    core, serial = ipam(), [0]
    now = T0
    held = []
    for n in range(4):
        for effect in core.plan(now):
            answer(core, effect, now, serial)
        try:
            held.append(
                core.assign_on_card(AllocationKey("n", f"c{n}", "mNicIf1"), PodRef(), 1, now)
            )
        except PoolExhausted:
            pass
        now += 1
    for effect in core.plan(now):
        answer(core, effect, now, serial)
    assert len(held) >= 2
    for allocation in held:
        core.release(allocation.key, now)
    later = now + core.config.cooldown_s + core.config.shrink_interval_s + 1
    shrink = [e for e in core.plan(later) if isinstance(e, UnassignAddresses)]
    assert shrink and all(core._card_of_eni(e.eni_id) == 1 for e in shrink)
    total = sum(v.total for v in core.eni_views(later) if v.network_card == 1)
    assert sum(len(e.ipv4_addresses) for e in shrink) == total - cards.CARD_WARM_IP_TARGET
    for effect in shrink:
        core.apply(AddressesUnassigned(effect.effect_id), later)
    assert sum(v.total for v in core.eni_views(later) if v.network_card == 1) == 1
    # An ENI of the card left empty is freed once the interval passes; the last address stays.
    again = later + core.config.shrink_interval_s + 1
    freed = [e for e in core.plan(again) if isinstance(e, FreeEni)]
    assert len(freed) == 1 and core._card_of_eni(freed[0].eni_id) == 1
    for effect in freed:
        core.apply(EniFreed(effect.effect_id), again)
    assert sum(v.total for v in core.eni_views(again) if v.network_card == 1) == 1
    last = again + 10 * core.config.shrink_interval_s
    assert not [e for e in core.plan(last) if isinstance(e, UnassignAddresses | FreeEni)]
    assert core.stats(last).enis == 1  # card 0 untouched: the primary alone


THREE_CARDS = InstanceLimits(
    instance_type="x.efa", max_enis=3, ipv4_per_eni=4, network_cards=((0, 3), (1, 2), (2, 2))
)


def efa_only(card: int, device: int = 0) -> ObservedEni:
    """An EFA-only interface: no IP address at all (as EC2 and IMDS show one)."""
    return ObservedEni(
        eni_id=f"eni-efa{card}d{device}", mac=f"02:00:00:00:e{card:01x}:{device:02x}",
        device_index=device, network_card=card, subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/16", primary_ip="", is_efa=True, is_efa_only=True,
    )  # fmt: skip


def test_a_card_with_only_an_efa_only_interface_is_skipped() -> None:
    """Upstream v1.20's markUnmanagedNetworkCards: card 2 holds an EFA-only interface and no
    other ENI, so it is left alone: no ENI is planned there, multi-NIC pods get no interface
    on it, and max pods stays card 0's figure."""
    core = Ipam(PoolConfig(warm_eni_target=0, multi_nic=True), THREE_CARDS)
    core.load([primary(), efa_only(2)], T0)
    assert core.efa_only_cards == frozenset({2}) and core.multi_nic_cards == (0, 1)
    created = {e.network_card for e in core.plan(T0) if isinstance(e, CreateEni)}
    assert created == {1}
    assert core.max_pods == THREE_CARDS.max_pods == 3 * 3 + 2
    with pytest.raises(PoolExhausted):  # nothing there, and nothing will be
        core.assign_on_card(AllocationKey("n", "c", "mNicIf2"), PodRef(), 2, T0)
    assert not [
        e for e in core.plan(T0 + 100, card_waiting={2: 5}) if getattr(e, "network_card", 0) == 2
    ]


def test_a_card_with_an_efa_only_and_an_ena_interface_is_managed() -> None:
    """The EFA-only interface is excluded, the card is not: its ENA interface carries pod
    addresses and grows."""
    core = Ipam(PoolConfig(warm_eni_target=0, multi_nic=True), THREE_CARDS)
    ena = on_card(2, 1, 9)
    core.load([primary(), efa_only(2), ena], T0)
    assert core.efa_only_cards == frozenset() and core.multi_nic_cards == (0, 1, 2)
    grow = [e for e in core.plan(T0) if isinstance(e, AssignAddresses)]
    assert [e.eni_id for e in grow] == [ena.eni_id]  # never the EFA-only one
    views = {v.eni_id: v for v in core.eni_views(T0)}
    assert views[efa_only(2).eni_id].excluded and not views[ena.eni_id].excluded


def test_an_unmanaged_ena_does_not_make_an_efa_only_card_managed() -> None:
    core = Ipam(PoolConfig(warm_eni_target=0, multi_nic=True), THREE_CARDS)
    theirs = attrs.evolve(on_card(2, 1, 9), tags=(("node.k8s.amazonaws.com/no_manage", "true"),))
    core.load([primary(), efa_only(2), theirs], T0)
    assert core.efa_only_cards == frozenset({2}) and core.multi_nic_cards == (0, 1)


# ------------------------------------------------------------------- property
@settings(max_examples=60, deadline=None)
@given(
    limits=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    max_eni=st.sampled_from([None, 1, 2, 3]),
    steps=st.lists(
        st.tuples(st.sampled_from(["add", "del", "plan", "answer"]), st.integers(0, 30)),
        max_size=60,
    ),
)
def test_no_card_exceeds_its_limit_and_device_indexes_are_unique_per_card(
    limits: list[int], max_eni: int | None, steps: list[tuple[str, int]]
) -> None:
    """Whatever the card limits and MAX_ENI: no card over its limit (nor over MAX_ENI above
    card 0, as upstream), device indexes unique per card, and every ENI's route table its
    own (upstream's card * max_enis + device + 1 with MAX_ENI honoured never collides)."""
    table = InstanceLimits(
        instance_type="x.prop", max_enis=limits[0], ipv4_per_eni=3,
        network_cards=tuple(enumerate(limits)),
    )  # fmt: skip
    core = Ipam(PoolConfig(warm_eni_target=1, multi_nic=True, max_eni=max_eni), table)
    core.load([primary()], T0)
    now, serial, pending = T0, [0], []
    held: list[AllocationKey] = []
    for action, n in steps:
        now += 1
        if action == "plan":
            pending += core.plan(now)
        elif action == "answer" and pending:
            answer(core, pending.pop(0), now, serial)
        elif action == "add":
            card = core.multi_nic_cards[n % len(core.multi_nic_cards)]
            key = AllocationKey("n", f"c{n}", "eth0" if card == 0 else f"mNicIf{card}")
            try:
                core.assign_on_card(key, PodRef(), card, now)
                held.append(key)
            except PoolExhausted:
                pass
        elif action == "del" and held:
            core.release(held.pop(n % len(held)), now)
        by_card: dict[int, list[int]] = {}
        for view in core.eni_views(now):
            by_card.setdefault(view.network_card, []).append(view.device_index)
        for effect in core.in_flight.values():
            if isinstance(effect, CreateEni):
                by_card.setdefault(effect.network_card, []).append(effect.device_index)
        stride = min(limits[0], max_eni or limits[0])
        for card, devices in by_card.items():
            assert len(devices) <= dict(enumerate(limits))[card], (card, devices)
            assert card == 0 or len(devices) <= stride, (card, devices, stride)
            assert len(set(devices)) == len(devices), (card, devices)
        tables = [
            cards.route_table(card, device, stride)
            for card, devices in by_card.items() for device in devices
            if (card, device) != (0, 0)
        ]  # fmt: skip
        assert None not in tables and len(set(tables)) == len(tables), (by_card, stride)
        assert core.table_stride == stride


def test_route_tables_honour_max_eni_and_never_collide_across_cards() -> None:
    """p4d.24xlarge (4 cards of 15) with MAX_ENI=4: upstream numbers tables with c.maxENI (4),
    so card 1's are 5..8 and card 2's 9..12; a card above 0 holds at most 4 ENIs from device
    0, and an ENI found at device 4 or above (another card's table) carries no pods and gets
    no table."""
    core = Ipam(
        PoolConfig(warm_eni_target=0, multi_nic=True, max_eni=4), limits_for("p4d.24xlarge")
    )
    stray = on_card(1, 7, 1, ("10.0.1.50",))  # attached out of band at device 7
    core.load([primary(), stray], T0)
    assert core.table_stride == 4 and core.card_eni_cap(1) == 4
    assert core.route_table_of(on_card(1, 0, 2)) == 5 and core.route_table_of(on_card(2, 0, 3)) == 9
    assert core.route_table_of(stray) is None  # 1 * 4 + 7 + 1 = 12 is card 2's
    assert {v.eni_id: v.excluded for v in core.eni_views(T0)}[stray.eni_id]
    created = [e for e in core.plan(T0) if isinstance(e, CreateEni) and e.network_card == 1]
    assert [e.device_index for e in created] == [0]
    without = Ipam(PoolConfig(warm_eni_target=0, multi_nic=True), limits_for("p4d.24xlarge"))
    assert without.table_stride == 15 and without.route_table_of(on_card(1, 0, 2)) == 16


@pytest.mark.parametrize("policy", ["upstream", "adaptive"])
def test_a_throttled_card_growth_call_waits_before_it_is_tried_again(policy: str) -> None:
    """A card's growth goes around the policy, so its throttles pause the card itself: the
    adaptive policy once retried a throttled card call on every pass (a retry storm of
    1,150 throttled calls in the simulator's multi-NIC burst); now no card call goes out
    again before ``throttle_pause_s``, and the card still grows after it."""
    config = PoolConfig(warm_eni_target=0, multi_nic=True, policy=PolicyName(policy))
    core, serial = Ipam(config, TWO_CARDS), [0]
    core.load([primary()], T0)
    for effect in core.plan(T0):
        answer(core, effect, T0, serial)
    pod = PodRef("default", "p")
    base = AllocationKey("aws-cni", "c1", "eth0")
    core.assign_on_card(cards.attachment_key(base, 1), pod, 1, T0)

    def card_1_growth(now: float) -> list[Effect]:
        return [
            e for e in core.plan(now, card_waiting={1: 1})
            if isinstance(e, AssignAddresses) and core.eni(e.eni_id) is not None
            and core.eni(e.eni_id).network_card == 1  # type: ignore[union-attr]
        ]  # fmt: skip

    (call,) = card_1_growth(T0 + 1)
    core.apply(EffectFailed(call.effect_id, FailureKind.THROTTLED, "RequestLimitExceeded"), T0 + 1)
    pause = config.throttle_pause_s
    assert core.next_wake_at(T0 + 1) <= T0 + 1 + pause
    for now in (T0 + 1, T0 + 2, T0 + 1 + pause / 2, T0 + 1 + pause - 0.01):
        assert card_1_growth(now) == [], now
    (again,) = card_1_growth(T0 + 1 + pause)
    answer(core, again, T0 + 1 + pause, serial)
    assert core.assign_on_card(AllocationKey("aws-cni", "c2", "mNicIf1"), pod, 1, T0 + 7)
