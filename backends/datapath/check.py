"""check_pod for the Linux datapath: every piece setup_pod builds, by name (errors.*)."""

from __future__ import annotations

import errno
from typing import Any

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

from backends.datapath import errors as E
from ipamcore.netspec import (
    POD_RULE_FROM_PRIORITY,
    POD_RULE_TO_PRIORITY,
    PodNetwork,
    pod_families,
)

MAIN_TABLE = 254
NUD_PERMANENT = 0x80
IFF_UP = 0x1
AF_INET6 = 10


_GONE = (errno.ENOENT, errno.ENODEV)


def _lookup(ipr: IPRoute, name: str) -> Any | None:
    """The link named ``name``, in one request: a lookup of the index followed by a get raced
    with the kernel, which destroys a deleted namespace's veths asynchronously (ENODEV)."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code in _GONE:
            return None
        raise


def _route_table(route: Any) -> int:
    return int(route.get_attr("RTA_TABLE") or route["table"])


def _has_route(
    ipr: IPRoute,
    dst: str | None,
    dst_len: int,
    oif: int,
    gateway: str | None,
    table: int = MAIN_TABLE,
) -> bool:
    v6 = ":" in (dst or gateway or "")
    for r in ipr.get_routes(family=AF_INET6 if v6 else 2, table=table):
        if (
            _route_table(r) == table
            and r["dst_len"] == dst_len
            and r.get_attr("RTA_DST") == dst
            and r.get_attr("RTA_OIF") == oif
            and r.get_attr("RTA_GATEWAY") == gateway
        ):
            return True
    return False


def _rule_present(rules: list[Any], priority: int, ip: str, side: str, table: int) -> bool:
    attr = "FRA_DST" if side == "dst" else "FRA_SRC"
    for r in rules:
        rule_table = int(r.get_attr("FRA_TABLE") or r["table"])
        if (
            r.get_attr("FRA_PRIORITY") == priority
            and r.get_attr(attr) == ip
            and r[f"{side}_len"] == (128 if ":" in ip else 32)
            and rule_table == table
        ):
            return True
    return False


def _host_pieces(pod: PodNetwork, host: IPRoute) -> tuple[list[str], str | None]:
    missing: list[str] = []
    link = _lookup(host, pod.host_veth)
    mac = None
    if link is None:
        missing += [E.HOST_VETH, E.HOST_ROUTE]
    else:
        mac = link.get_attr("IFLA_ADDRESS")
        if not link["flags"] & IFF_UP:
            missing.append(E.HOST_VETH_UP)
        if link.get_attr("IFLA_MTU") != pod.mtu:
            missing.append(E.HOST_VETH_MTU)
        if not all(
            _has_route(host, address, plen, link["index"], None)
            for address, plen, _gw, _default in pod_families(pod)
        ):
            missing.append(E.HOST_ROUTE)
    rules = list(host.get_rules(family=2))
    if pod.ipv6 and not _rule_present(
        list(host.get_rules(family=AF_INET6)), POD_RULE_TO_PRIORITY, pod.ipv6, "dst", MAIN_TABLE
    ):
        missing.append(E.RULE_TO)
    if pod.ipv4 and not _rule_present(rules, POD_RULE_TO_PRIORITY, pod.ipv4, "dst", MAIN_TABLE):
        missing.append(E.RULE_TO)
    if (
        pod.ipv4
        and pod.route_table is not None
        and not _rule_present(rules, POD_RULE_FROM_PRIORITY, pod.ipv4, "src", pod.route_table)
    ):
        missing.append(E.RULE_FROM)
    # IPv6 mode: a multi-NIC pod's interface on a card above 0 leaves by its card's table
    if pod.ipv6 and not pod.ipv4 and pod.route_table is not None:
        rules6 = list(host.get_rules(family=AF_INET6))
        if not _rule_present(rules6, POD_RULE_FROM_PRIORITY, pod.ipv6, "src", pod.route_table):
            missing.append(E.RULE_FROM)
    return missing, mac


def _pod_pieces(pod: PodNetwork, ns: IPRoute, host_mac: str | None) -> list[str]:
    missing: list[str] = []
    lo = _lookup(ns, "lo")
    if lo is None or not lo["flags"] & IFF_UP:
        missing.append(E.POD_LO_UP)
    link = _lookup(ns, pod.if_name)
    if link is None:
        return [
            *missing,
            E.POD_IF,
            E.POD_ADDRESS,
            E.POD_GATEWAY_ROUTE,
            E.POD_DEFAULT_ROUTE,
            E.POD_GATEWAY_NEIGH,
        ]
    idx = link["index"]
    if not link["flags"] & IFF_UP:
        missing.append(E.POD_IF_UP)
    if link.get_attr("IFLA_MTU") != pod.mtu:
        missing.append(E.POD_IF_MTU)
    addresses = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ns.get_addr(index=idx)}
    neighbours = [
        n
        for family in (2, AF_INET6)
        for n in ns.get_neighbours(family=family, ifindex=idx)
        if n["state"] & NUD_PERMANENT
    ]
    gateway, table = pod.gateway, pod.attachment_index or MAIN_TABLE
    for address, plen, gw, _default in pod_families(pod):
        # the first interface's families in main; interface N's (either family) in table N
        in_table = table if gw == gateway or pod.attachment_index else MAIN_TABLE
        if (address, plen) not in addresses and E.POD_ADDRESS not in missing:
            missing.append(E.POD_ADDRESS)
        gateway_route = _has_route(ns, gw, plen, idx, None, in_table)
        if not gateway_route and E.POD_GATEWAY_ROUTE not in missing:
            missing.append(E.POD_GATEWAY_ROUTE)
        default_route = _has_route(ns, None, 0, idx, gw, in_table)
        if not default_route and E.POD_DEFAULT_ROUTE not in missing:
            missing.append(E.POD_DEFAULT_ROUTE)
        if (
            not any(
                n.get_attr("NDA_DST") == gw
                and (host_mac is None or n.get_attr("NDA_LLADDR") == host_mac)
                for n in neighbours
            )
            and E.POD_GATEWAY_NEIGH not in missing
        ):
            missing.append(E.POD_GATEWAY_NEIGH)
    source, _plen, family = pod.source
    if pod.attachment_index and not _rule_present(
        list(ns.get_rules(family=family)), POD_RULE_FROM_PRIORITY, source, "src", table
    ):
        missing.append(E.POD_FROM_RULE)
    return missing


def check_pod_pieces(pod: PodNetwork, host: IPRoute, ns: IPRoute | None) -> list[str]:
    """Names of missing or wrong pieces (empty when the pod is fully wired)."""
    missing, mac = _host_pieces(pod, host)
    if ns is None:
        return [E.NETNS, *missing]
    return _pod_pieces(pod, ns, mac) + missing
