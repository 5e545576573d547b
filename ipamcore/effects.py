"""Effects: what the core asks the shell to do in the cloud.

Each effect carries an ``effect_id`` unique within one :class:`ipamcore.ipam.Ipam`. The shell
performs it and must report back exactly one outcome for that id (see :mod:`ipamcore.events`),
a failure included. While an effect is in flight the core never issues an equivalent one
again; one left unanswered for ``PoolConfig.effect_timeout_s`` is given up as failed (and its
late outcome ignored), so a lost answer cannot block the pool forever. What each failure
does is :mod:`ipamcore.reactions`. ``Effect`` and the classes here can also be imported from
:mod:`ipamcore.ipam`, where ``plan`` and ``apply`` are.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class CreateEni:
    """Create an ENI in ``subnet_id`` with ``security_groups``, request ``ipv4_count``
    secondary IPs or ``prefix_count`` /28 prefixes (or an IPv6 prefix) in the same call,
    attach it at ``device_index`` and set DeleteOnTermination (unless the cloud backend was
    built with it off: a per-node choice of the shell that no decision here depends on).

    :class:`ipamcore.ipam.Ipam` reserves ``device_index`` (the lowest one neither attached nor
    reserved by another CreateEni in flight), so ENIs created in parallel never race for an
    index. -1 (the default) means "the backend picks the lowest free one" (device 0 is a
    real index on a card above 0, where upstream attaches first). ``network_card`` is the
    card the ENI is attached on (``NetworkCardIndex``); device indexes count per card."""

    effect_id: int
    subnet_id: str
    security_groups: tuple[str, ...]
    ipv4_count: int = 0
    prefix_count: int = 0
    ipv6_prefix: bool = False
    device_index: int = -1
    network_card: int = 0


@attrs.frozen
class AssignAddresses:
    """Assign ``ipv4_count`` more secondary IPs or ``prefix_count`` more /28 prefixes to an
    ENI, or ``ipv6_prefix_count`` IPv6 /80 prefixes (``AssignIpv6Addresses`` with
    ``Ipv6PrefixCount``, upstream's IPv6 mode)."""

    effect_id: int
    eni_id: str
    ipv4_count: int = 0
    prefix_count: int = 0
    ipv6_prefix_count: int = 0


@attrs.frozen
class UnassignAddresses:
    """Give back secondary IPs or /28 prefixes of an ENI (none of them is in use or cooling)."""

    effect_id: int
    eni_id: str
    ipv4_addresses: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


@attrs.frozen
class FreeEni:
    """Detach and delete an ENI that carries no assigned or cooling address."""

    effect_id: int
    eni_id: str


Effect = CreateEni | AssignAddresses | UnassignAddresses | FreeEni
