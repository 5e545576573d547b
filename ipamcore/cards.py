"""Network cards: per-card ENI limits, device indexes and route tables, and the small warm
pool kept on each card above 0 for multi-NIC pods (``ENABLE_MULTI_NIC``).

Instances such as p4d, p5 or trn1 have several network cards. Each card has its own ENI
limit and its own device indexes (device 0 exists on every card; on card 0 it is the
primary ENI). Upstream v1.20+ keeps one datastore per card: card 0 is the ordinary pool
(warm targets, max pods), every other card is kept at ``WARM_IP_TARGET=1`` and
``MINIMUM_IP_TARGET=1`` and serves only pods annotated
``k8s.amazonaws.com/nicConfig: multi-nic-attachment``, which get one interface per card.

Route tables follow upstream v1.20: ``card * max_enis + device + 1``, the primary ENI
(card 0, device 0) using the main table, where ``max_enis`` is upstream's ``c.maxENI``: the
type's ENI limit, lowered by ``MAX_ENI`` when set. Each card's tables are then the range
``card * max_enis + 1 .. (card + 1) * max_enis``, so they never collide as long as every
device index is below ``max_enis``: as upstream, a card above 0 attaches from device 0 and
holds at most ``max_enis`` ENIs (``min(card limit, max_enis)``), and an ENI whose device index
falls outside its card's range gets no table (:func:`route_table` is None) and no pods.
Pure functions; :class:`ipamcore.ipam.Ipam` holds one address pool per card.
"""

from __future__ import annotations

from collections.abc import Iterable

from ipamcore.effects import AssignAddresses, CreateEni, Effect
from ipamcore.inventory import EniState
from ipamcore.limits import InstanceLimits
from ipamcore.model import IPS_PER_PREFIX, AllocationKey

MULTI_NIC_ANNOTATION = "k8s.amazonaws.com/nicConfig"
MULTI_NIC_ATTACHMENT = "multi-nic-attachment"
MULTI_NIC_IF_PREFIX = "mNicIf"  # upstream's container interface for attachment index > 0
CARD_WARM_IP_TARGET = 1  # upstream's DefaultWarmIPTarget for cards > 0
CARD_MINIMUM_IP_TARGET = 1  # upstream's DefaultMinimumIPTarget for cards > 0


def card_limits(limits: InstanceLimits) -> dict[int, int]:
    """Network card index -> its ENI limit. A table row without cards (or with a 0 limit,
    as the default row has) reads as one card 0 holding ``max_enis``."""
    cards = {index: most for index, most in limits.network_cards if most > 0}
    if not cards:
        return {limits.default_network_card_index: limits.max_enis}
    return dict(sorted(cards.items()))


def route_table(network_card: int, device_index: int, max_enis: int) -> int | None:
    """Upstream's table of an ENI: ``card * max_enis + device + 1``; None for the primary
    ENI (card 0 device 0: the main table) and for a device index at or above ``max_enis``
    (its table would be another card's). Card 0 keeps the device N -> table N+1 rule."""
    if (network_card == 0 and device_index == 0) or not 0 <= device_index < max_enis:
        return None
    return network_card * max_enis + device_index + 1


def attachment_if_name(if_name: str, index: int) -> str:
    """The container interface of a pod's attachment ``index``: the runtime's ``if_name``
    for the first, upstream's ``mNicIf<index>`` for the others."""
    return if_name if index == 0 else f"{MULTI_NIC_IF_PREFIX}{index}"


def attachment_key(key: AllocationKey, index: int) -> AllocationKey:
    """The allocation key of attachment ``index`` of the pod attachment ``key``."""
    if index == 0:
        return key
    return AllocationKey(key.network_name, key.container_id, attachment_if_name(key.if_name, index))


def is_extra_attachment(key: AllocationKey) -> bool:
    """Whether ``key`` is a multi-NIC pod's interface on a card above 0."""
    suffix = key.if_name[len(MULTI_NIC_IF_PREFIX) :]
    return key.if_name.startswith(MULTI_NIC_IF_PREFIX) and suffix.isdigit() and suffix != "0"


def attachment_index(key: AllocationKey) -> int:
    """The place of ``key``'s interface in its multi-NIC pod (0 for an ordinary one)."""
    return int(key.if_name[len(MULTI_NIC_IF_PREFIX) :]) if is_extra_attachment(key) else 0


def free_device_index(taken: Iterable[int], start: int = 1) -> int:
    """The lowest device index from ``start`` not in ``taken``: from 1 on card 0 (device 0
    is the primary ENI), from 0 on other cards (upstream's awsGetFreeDeviceNumber), so a
    card holding fewer than ``max_enis`` ENIs always has a free index inside its tables."""
    used = set(taken)
    index = start
    while index in used:
        index += 1
    return index


def plan_card(
    network_card: int,
    enis: Iterable[EniState],
    ready: int,
    wanted: int,
    max_enis: int,
    per_eni: int,
    prefix_mode: bool,
    placement: tuple[str, tuple[str, ...]],
    blocked: frozenset[str] = frozenset(),
) -> list[Effect]:
    """The growth of one card above 0: keep ``wanted`` addresses ready (upstream's
    WARM_IP_TARGET=1 plus the multi-NIC pods that found none), topping up the lowest ENI of
    the card with room, else creating an ENI on the card while it is under its limit.

    ``ready`` counts the card's free addresses out of cooldown; ``blocked`` lists ENIs with
    an effect in flight or refused for room. The caller plans a card only when no growth of
    it is in flight, so effects never pile up."""
    need = wanted - ready
    subnet_id, groups = placement
    if need <= 0 or not subnet_id:
        return []
    units = -(-need // IPS_PER_PREFIX) if prefix_mode else need
    states = sorted(enis, key=lambda e: e.rank)
    for eni in states:
        if eni.excluded or eni.leaving or eni.eni_id in blocked:
            continue
        room = per_eni - eni.ipv4_count() - eni.prefix_count()
        if room > 0:
            n = min(units, room)
            if prefix_mode:
                return [AssignAddresses(effect_id=0, eni_id=eni.eni_id, prefix_count=n)]
            return [AssignAddresses(effect_id=0, eni_id=eni.eni_id, ipv4_count=n)]
    if len(states) >= max_enis:
        return []
    n = min(units, per_eni)
    return [
        CreateEni(
            effect_id=0,
            subnet_id=subnet_id,
            security_groups=groups,
            ipv4_count=0 if prefix_mode else n,
            prefix_count=n if prefix_mode else 0,
            network_card=network_card,
        )
    ]


def plan_v6_card(
    network_card: int,
    enis: Iterable[EniState],
    has_prefix: frozenset[str],
    max_enis: int,
    placement: tuple[str, tuple[str, ...]],
    skip: frozenset[str] = frozenset(),
) -> list[Effect]:
    """IPv6 mode (upstream v1.20's createSecondaryIPv6ENIs): a card above 0 carries one ENI
    with an IPv6 /80 its multi-NIC pods take addresses from. Nothing while one of the card's
    ENIs (``has_prefix``) holds a prefix; else a /80 for the lowest ENI the CNI may use, else
    (no such ENI, room on the card) one ENI created with its /80 in the same call
    (``CreateNetworkInterface`` with ``Ipv6PrefixCount=1``; upstream creates, then
    assigns). No IPv4 address is asked for beyond the ENI's primary one, which EC2 gives.
    ``skip``: ENIs of the card that may carry no pod (outside the card's route tables)."""
    states = sorted(enis, key=lambda e: e.rank)
    usable = [
        s for s in states
        if not (s.info.is_efa or s.info.is_trunk or s.info.unmanaged or s.leaving)
        and s.eni_id not in skip
    ]  # fmt: skip
    if any(s.eni_id in has_prefix for s in usable):
        return []
    if usable:
        return [AssignAddresses(effect_id=0, eni_id=usable[0].eni_id, ipv6_prefix_count=1)]
    subnet_id, groups = placement
    if not subnet_id or len(states) >= max_enis:
        return []
    return [
        CreateEni(
            effect_id=0, subnet_id=subnet_id, security_groups=groups, ipv6_prefix=True,
            network_card=network_card,
        )
    ]  # fmt: skip
