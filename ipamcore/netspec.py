"""What the datapath must build, as data: the core decides it, a datapath backend does it."""

from __future__ import annotations

import hashlib
import ipaddress

import attrs

POD_GATEWAY = "169.254.1.1"
ENI_GATEWAY_V6 = "fe80:ec2::1"  # upstream's GetIPv6Gateway: the VPC router on every ENI
POD_GATEWAY_V6 = "fe80::1"  # upstream's driver: the pod's IPv6 next hop (host veth's neighbour)
# Upstream's egress-cni ranges: node-local IPv4 for IPv6 pods (SNAT to the node's IPv4), and
# node-local IPv6 for IPv4 pods (ENABLE_V6_EGRESS, SNAT to the node's IPv6).
EGRESS_V4_RANGE = "169.254.172.0/22"
EGRESS_V6_RANGE = "fd00::ac00:0:0/96"
DEFAULT_VETH_PREFIX = "eni"
POD_RULE_TO_PRIORITY = 512  # to <pod ip> lookup main
POD_RULE_FROM_PRIORITY = 1536  # from <pod ip> lookup <eni table>
ENI_RULE_PRIORITY = 32765  # from <eni primary ip> lookup <eni table>


ATTACHMENT_TAG_PREFIX = "vpc-cni:"  # the host veth's ifalias: whose veth it is
VETH_HASH_DIGITS = 11  # a prefix has at most 4 characters: 4 + 11 = IFNAMSIZ - 1


def attachment_digest(network_name: str, container_id: str, if_name: str) -> str:
    """sha256 of one attachment (network, container, interface): the CNI spec's identity of an
    attachment, so two sandboxes of one pod, or two interfaces of one sandbox, never share it."""
    raw = f"{network_name}\0{container_id}\0{if_name}".encode()
    return hashlib.sha256(raw).hexdigest()


def attachment_tag(network_name: str, container_id: str, if_name: str) -> str:
    """The ifalias set on an attachment's host veth: teardown deletes a veth only when it
    carries this tag (or routes the attachment's own address), setup never replaces a veth
    that carries another."""
    return attachment_names(network_name, container_id, if_name)[1]


def attachment_names(
    network_name: str, container_id: str, if_name: str, prefix: str = DEFAULT_VETH_PREFIX
) -> tuple[str, str]:
    """``(host_veth_name(...), attachment_tag(...))`` of one attachment, from one digest (the
    node makes both for every ADD and DEL)."""
    digest = attachment_digest(network_name, container_id, if_name)
    return f"{prefix}{digest[:VETH_HASH_DIGITS]}", ATTACHMENT_TAG_PREFIX + digest[:32]


def host_veth_name(
    network_name: str, container_id: str, if_name: str, prefix: str = DEFAULT_VETH_PREFIX
) -> str:
    """The host veth of one attachment: ``prefix`` + 11 hex digits of its digest.

    Upstream derives the name from the pod's namespace and name only, so a recreated sandbox
    of the same pod, or a second interface of one pod, got the same name and the setup of one
    deleted the other's veth. The container id and interface name make it unique per
    attachment; the prefix (``AWS_VPC_K8S_CNI_VETHPREFIX``) and the length (at most 15
    characters) are upstream's."""
    return attachment_names(network_name, container_id, if_name, prefix)[0]


def legacy_veth_suffix(namespace: str, pod_name: str) -> str:
    """Upstream's veth name without its prefix: the first 11 hex digits of sha1("<ns>.<pod>")."""
    return hashlib.sha1(f"{namespace}.{pod_name}".encode()).hexdigest()[:VETH_HASH_DIGITS]


def legacy_host_veth_name(namespace: str, pod_name: str, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """Upstream's host veth name (pods set up by upstream, or by an earlier version of this
    daemon, carry it): the prefix and :func:`legacy_veth_suffix`."""
    return prefix + legacy_veth_suffix(namespace, pod_name)


def route_table_for_device(device_index: int) -> int | None:
    """Device N > 0 routes through table N+1; the primary ENI (device 0) uses the main table."""
    return None if device_index == 0 else device_index + 1


@attrs.frozen
class PodNetwork:
    """Everything needed to wire (or unwire, or check) one pod interface.

    ``route_table`` is None for a pod on the primary ENI (no ``from`` rule is added).
    ``tag`` (:func:`attachment_tag`) is set as the host veth's ifalias; a host veth is this
    attachment's when it carries the tag or routes ``ipv4`` (a veth set up before tags,
    by upstream or an earlier version). Empty: ownership by the route only.

    ``ipv4`` is empty for an IPv6-only pod; ``ipv6`` is set for IPv6 and dual-stack pods
    (a /128, default route through :data:`POD_GATEWAY_V6`). ``egress_v4`` / ``egress_v6``:
    the pod's node-local address of the other family (upstream's egress-cni), routed like
    the pod's own and SNATed by the node's chains.

    ``attachment_index`` is the interface's place in a multi-NIC pod (0: the only or first
    one): as upstream, interface N > 0 reaches its gateway 169.254.1.(N+1) through the
    pod's own table N, chosen by a ``from <its address>`` rule inside the pod.
    """

    netns_path: str
    if_name: str
    host_veth: str
    ipv4: str
    mtu: int = 9001
    route_table: int | None = None
    tag: str = ""
    ipv6: str = ""
    egress_v4: str = ""
    egress_v6: str = ""
    attachment_index: int = 0

    @property
    def gateway(self) -> str:
        """The pod's next hop on this interface: 169.254.1.1, .2 for the second..."""
        return (
            POD_GATEWAY if not self.attachment_index else f"169.254.1.{self.attachment_index + 1}"
        )

    @property
    def v4(self) -> str:
        """The IPv4 address the pod gets: its VPC one, else its egress one ("" if none)."""
        return self.ipv4 or self.egress_v4

    @property
    def v6(self) -> str:
        """The IPv6 address the pod gets: its VPC one, else its egress one ("" if none)."""
        return self.ipv6 or self.egress_v6

    @property
    def source(self) -> tuple[str, int, int]:
        """(address, prefix length, family) of the "from" rules that route the pod's traffic
        through ``route_table``: its IPv4 address, else (IPv6 mode) its IPv6 one."""
        return (self.ipv4, 32, 2) if self.ipv4 else (self.ipv6, 128, 10)

    @property
    def address(self) -> str:
        """The address that identifies the attachment's host route: IPv4, else IPv6."""
        return self.ipv4 or self.ipv6


def pod_families(pod: PodNetwork) -> list[tuple[str, int, str, str]]:
    """(address, prefix length, gateway, default destination) of each family the pod has:
    IPv4 through 169.254.1.1, IPv6 through fe80::1 (upstream's driver), its VPC address or
    its node-local egress one."""
    found = []
    if pod.v4:
        found.append((pod.v4, 32, pod.gateway, "0.0.0.0/0"))
    if pod.v6:
        found.append((pod.v6, 128, POD_GATEWAY_V6, "::/0"))
    return found


@attrs.frozen
class EniNetwork:
    """A secondary ENI's host setup: link by MAC, its primary address, MTU and route table."""

    mac: str
    primary_ip: str
    subnet_cidr: str
    gateway: str
    route_table: int
    mtu: int = 9001
    # IPv6 mode (multi-NIC): the table also routes IPv6 out of the ENI, through the VPC
    # router at ENI_GATEWAY_V6 (upstream's setupENINetwork for an IPv6 ENI)
    ipv6: bool = False


@attrs.frozen
class LiveNetwork:
    """What the node's live allocations need, for :meth:`DatapathPort.remove_stale`: every
    live pod attachment and the primary address of every ENI attached to the instance."""

    pods: tuple[PodNetwork, ...] = ()
    eni_ips: tuple[str, ...] = ()


@attrs.frozen
class NodeNetwork:
    """Node-wide settings: SNAT for traffic leaving the VPC unless external SNAT is on."""

    primary_ip: str
    vpc_cidrs: tuple[str, ...]
    external_snat: bool = False
    snat_chain: str = "AWS-SNAT-CHAIN-0"
    # IPv6 on the node (upstream's sysctls: disable_ipv6=0, forwarding=1, accept_ra=2 on
    # the primary interface); the SNAT of the egress ranges (empty: none).
    ipv6: bool = False
    ipv4: bool = True  # IPv4 pods: the VPC SNAT chain (none in IPv6 single stack)
    egress_v4_snat_to: str = ""
    egress_v6_snat_to: str = ""


EGRESS_V4_SLOTS = 1021  # 169.254.172.2 .. 169.254.175.254 (.1 is upstream's host side)


def egress_v4_slot(ipv6: str) -> int:
    """The slot of the node-local IPv4 address an IPv6 pod gets: a function of its IPv6
    address, so DEL, CHECK and a restarted daemon find the same one. The core skips an IPv6
    address whose slot a live pod holds, so two live pods never share one."""
    return int(ipaddress.IPv6Address(ipv6)) % EGRESS_V4_SLOTS


def egress_v4_for(ipv6: str) -> str:
    """The node-local IPv4 address (in :data:`EGRESS_V4_RANGE`) of the IPv6 pod ``ipv6``."""
    base = ipaddress.IPv4Network(EGRESS_V4_RANGE).network_address
    return str(base + 2 + egress_v4_slot(ipv6))


def egress_v6_for(ipv4: str) -> str:
    """The node-local IPv6 address (in :data:`EGRESS_V6_RANGE`) of the IPv4 pod ``ipv4``:
    the IPv4 address in the low 32 bits, unique by construction."""
    base = ipaddress.IPv6Network(EGRESS_V6_RANGE).network_address
    return str(base + int(ipaddress.IPv4Address(ipv4)))
