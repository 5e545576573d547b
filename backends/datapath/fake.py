"""An in-memory datapath with the same contract as ``LinuxDatapath`` (tests, simulator).

It models just enough of Linux: namespaces by path (created only by ``add_netns``), host
links by name and MAC, veth pairs (deleting either end, or the pod's namespace, deletes the
pair and the routes through it), routes, rules, sysctls and the SNAT chain. ``fail_next``
makes the next call of an operation fail, optionally at one setup step, after which the
partial work is undone exactly as the real backend does. Thread-safe (one lock).
"""

from __future__ import annotations

import collections
import copy
import ipaddress
import threading
from typing import Any

import attrs

from backends.datapath import errors as E
from backends.datapath.faults import FaultInjection
from backends.datapath.snat import chain_rules, jump_rule
from backends.datapath.sysctls import node_sysctls
from ipamcore.netspec import (
    ATTACHMENT_TAG_PREFIX,
    ENI_RULE_PRIORITY,
    POD_RULE_FROM_PRIORITY,
    POD_RULE_TO_PRIORITY,
    EniNetwork,
    LiveNetwork,
    NodeNetwork,
    PodNetwork,
)

MAIN = 254
Route = tuple[int, str, str, str | None]  # table, dst, dev, gateway
Rule = tuple[int, str, int]  # priority, selector ("to 10.0.0.5/32"), table


CALL_HISTORY = 1000  # calls remembered for tests


@attrs.define
class Link:
    mac: str
    mtu: int = 1500
    up: bool = False
    peer: tuple[str, str] | None = None  # (netns, if_name) of a veth's other end
    alias: str = ""  # ifalias: an attachment's tag on its host veth
    addresses: set[str] = attrs.field(factory=set)  # "ip/len"


@attrs.define
class Netns:
    lo_up: bool = False
    links: dict[str, Link] = attrs.field(factory=dict)
    routes: set[tuple[str, str, str | None]] = attrs.field(factory=set)  # dst, dev, gateway
    neigh: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # ip -> (dev, mac)


class FakeDatapath(FaultInjection):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._init_faults()
        self._macs = 0
        self.namespaces: dict[str, Netns] = {}
        self.links: dict[str, Link] = {}
        self.routes: set[Route] = set()
        self.rules: set[Rule] = set()
        # Indexes that make a pod's setup and teardown O(1), not O(pods on the node): the
        # routes through each host device and the tables of each (priority, selector) rule.
        # ``routes`` and ``rules`` stay the truth; an index entry whose route or rule a test
        # removed directly is only discarded again.
        self._dev_routes: dict[str, set[Route]] = {}
        self._rule_tables: dict[tuple[int, str], set[int]] = {}
        self.sysctls: dict[str, str] = {}
        self.nat: dict[str, list[str]] = {"POSTROUTING": []}
        # The latest calls, for tests; bounded, so a long-running daemon on the fake datapath
        # (benchmarks, the soak) does not grow with every pod.
        self.calls: collections.deque[str] = collections.deque(maxlen=CALL_HISTORY)

    # ----------------------------------------------------------------- test hooks

    def _mac(self) -> str:
        self._macs += 1
        return "0a:58:" + ":".join(f"{b:02x}" for b in self._macs.to_bytes(4, "big"))

    def add_netns(self, path: str) -> None:
        with self._lock:
            self.namespaces.setdefault(path, Netns())

    def remove_netns(self, path: str) -> None:
        """Like deleting a namespace: its veth ends die, and with them their host peers."""
        with self._lock:
            ns = self.namespaces.pop(path, None)
            for link in ns.links.values() if ns else ():
                if link.peer is not None:
                    self._del_host_link(link.peer[1])

    def add_link(self, name: str, mac: str, addresses: tuple[str, ...] = ()) -> None:
        """A host link such as an attached ENI (found by MAC by setup_eni)."""
        with self._lock:
            self.links[name] = Link(mac=mac.lower(), up=True, addresses=set(addresses))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(
                {"links": self.links, "routes": self.routes, "rules": self.rules, "nat": self.nat}
            )

    def _add_route(self, route: Route) -> None:
        self.routes.add(route)
        self._dev_routes.setdefault(route[2], set()).add(route)

    def _add_rule(self, rule: Rule) -> None:
        self.rules.add(rule)
        self._rule_tables.setdefault((rule[0], rule[1]), set()).add(rule[2])

    def _del_host_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        for route in self._dev_routes.pop(name, ()):
            self.routes.discard(route)
        if link is not None and link.peer is not None:
            ns = self.namespaces.get(link.peer[0])
            if ns is not None:
                ns.links.pop(link.peer[1], None)
                ns.routes = {r for r in ns.routes if r[1] != link.peer[1]}
                ns.neigh = {k: v for k, v in ns.neigh.items() if v[0] != link.peer[1]}

    # ----------------------------------------------------------------- node, ENI

    def setup_node(self, node: NodeNetwork) -> None:
        with self._lock:
            self.calls.append("setup_node")
            self._step("setup_node", "sysctls")
            primary = next(
                (
                    n
                    for n, link in self.links.items()
                    if any(a.split("/")[0] == node.primary_ip for a in link.addresses)
                ),
                None,
            )
            self.sysctls.update(node_sysctls(primary))
            self._step("setup_node", "snat")
            jump = jump_rule(node.snat_chain)
            if node.external_snat:
                self.nat.pop(node.snat_chain, None)
                self.nat["POSTROUTING"] = [r for r in self.nat["POSTROUTING"] if r != jump]
                return
            self.nat[node.snat_chain] = chain_rules(
                node.snat_chain, node.primary_ip, node.vpc_cidrs
            )
            if jump not in self.nat["POSTROUTING"]:
                self.nat["POSTROUTING"].append(jump)

    def setup_eni(self, eni: EniNetwork) -> None:
        with self._lock:
            self.calls.append("setup_eni")
            self._step("setup_eni", "link")
            name = next((n for n, lk in self.links.items() if lk.mac == eni.mac.lower()), None)
            if name is None:
                raise E.DatapathError(f"no link with MAC {eni.mac}")
            link = self.links[name]
            link.mtu, link.up = eni.mtu, True
            prefix = ipaddress.ip_network(eni.subnet_cidr, strict=False).prefixlen
            link.addresses.add(f"{eni.primary_ip}/{prefix}")
            self._add_route((eni.route_table, f"{eni.gateway}/32", name, None))
            self._add_route((eni.route_table, "0.0.0.0/0", name, eni.gateway))
            self._add_rule((ENI_RULE_PRIORITY, f"from {eni.primary_ip}/32", eni.route_table))

    def teardown_eni(self, eni: EniNetwork) -> None:
        with self._lock:
            self.calls.append("teardown_eni")
            self._del_rules(ENI_RULE_PRIORITY, f"from {eni.primary_ip}/32")
            name = next((n for n, lk in self.links.items() if lk.mac == eni.mac.lower()), None)
            if name is None:
                return
            for route in list(self._dev_routes.get(name, ())):
                if route[0] == eni.route_table:
                    self.routes.discard(route)
                    self._dev_routes[name].discard(route)
            prefix = ipaddress.ip_network(eni.subnet_cidr, strict=False).prefixlen
            self.links[name].addresses.discard(f"{eni.primary_ip}/{prefix}")

    def remove_stale(self, live: LiveNetwork) -> list[str]:
        with self._lock:
            self.calls.append("remove_stale")
            ips = {p.ipv4 for p in live.pods}
            tags = {p.tag for p in live.pods if p.tag}
            removed: list[str] = []
            for prio, selector, table in sorted(self.rules):
                side, _, cidr = selector.partition(" ")
                ip = cidr.removesuffix("/32")
                if (prio == POD_RULE_TO_PRIORITY and side == "to") or (
                    prio == POD_RULE_FROM_PRIORITY and side == "from"
                ):
                    keep = ip in ips
                elif prio == ENI_RULE_PRIORITY and side == "from":
                    keep = ip in live.eni_ips
                else:
                    continue
                if not keep:
                    self.rules.discard((prio, selector, table))
                    self._rule_tables.get((prio, selector), set()).discard(table)
                    removed.append(f"rule {prio}: {side} {ip} lookup {table}")
            for name, link in sorted(self.links.items()):
                if link.alias.startswith(ATTACHMENT_TAG_PREFIX) and link.alias not in tags:
                    self._del_host_link(name)
                    removed.append(f"veth {name} ({link.alias})")
            return removed

    def _owns(self, name: str, pod: PodNetwork) -> bool:
        """Linux's rule: the veth carries the attachment's tag, or no tag of ours and the
        route to the attachment's address."""
        link = self.links.get(name)
        if link is None or link.peer is None:
            return False
        if link.alias.startswith(ATTACHMENT_TAG_PREFIX):
            return bool(pod.tag) and link.alias == pod.tag
        return (MAIN, f"{pod.ipv4}/32", name, None) in self.routes

    def _owned_veths(self, pod: PodNetwork) -> list[str]:
        routing = [r[2] for r in self.routes if r[0] == MAIN and r[1] == f"{pod.ipv4}/32"]
        return [n for n in dict.fromkeys([pod.host_veth, *sorted(routing)]) if self._owns(n, pod)]

    # ----------------------------------------------------------------- pods

    def setup_pod(self, pod: PodNetwork) -> None:
        with self._lock:
            self.calls.append("setup_pod")
            ns = self.namespaces.get(pod.netns_path)
            if ns is None:
                raise E.NetnsNotFound(pod.netns_path)
            # What a failed setup restores: the host entries building may replace (the host
            # veth's link and routes, the pod address's two rules; building changes no
            # existing Link) and, deep, the two namespaces it may change: the pod's and the
            # one holding the peer of a host veth of the same name. Not copies of every link,
            # route and rule: that made each setup cost O(pods on the node).
            old = self.links.get(pod.host_veth)
            touched = {pod.netns_path} | ({old.peer[0]} if old and old.peer else set())
            saved_ns = {
                path: copy.deepcopy(self.namespaces[path])
                for path in touched
                if path in self.namespaces
            }
            rule_keys = _pod_rule_keys(pod)
            saved_routes = set(self._dev_routes.get(pod.host_veth, ()))
            saved_rules = {k: set(self._rule_tables.get(k, ())) for k in rule_keys}
            try:
                self._build_pod(pod, ns)
            except Exception:
                self._del_host_link(pod.host_veth)
                if old is not None:
                    self.links[pod.host_veth] = old
                for route in saved_routes:
                    self._add_route(route)
                for key, tables in saved_rules.items():
                    self._del_rules(*key)
                    for table in tables:
                        self._add_rule((*key, table))
                self.namespaces.update(saved_ns)
                raise

    def _build_pod(self, pod: PodNetwork, ns: Netns) -> None:
        self._step("setup_pod", "veth")
        if pod.host_veth in self.links:
            if not self._owns(pod.host_veth, pod):
                raise E.VethTaken(pod.host_veth)
            self._del_host_link(pod.host_veth)
        other = next(
            (dev for dst, dev, _ in sorted(ns.routes)
             if dst == f"{pod.gateway}/32" and dev != pod.if_name),
            None,
        )  # fmt: skip
        if other is not None:
            raise E.SecondAttachment(pod.netns_path, other)
        if pod.if_name in ns.links:
            raise E.DatapathError(f"{pod.if_name} exists in {pod.netns_path}")
        mac = self._mac()
        self.links[pod.host_veth] = Link(
            mac=mac, mtu=pod.mtu, peer=(pod.netns_path, pod.if_name), alias=pod.tag
        )
        ns.links[pod.if_name] = Link(
            mac=self._mac(), mtu=pod.mtu, peer=(pod.netns_path, pod.host_veth)
        )
        self._step("setup_pod", "pod_link")
        ns.lo_up = True
        ns.links[pod.if_name].up = True
        self._step("setup_pod", "pod_address")
        ns.links[pod.if_name].addresses.add(f"{pod.ipv4}/32")
        self._step("setup_pod", "pod_routes")
        ns.routes |= {
            (f"{pod.gateway}/32", pod.if_name, None),
            (_default_route(pod), pod.if_name, pod.gateway),
        }
        ns.neigh[pod.gateway] = (pod.if_name, mac)
        self._step("setup_pod", "host_route")
        self.links[pod.host_veth].up = True
        self._add_route((MAIN, f"{pod.ipv4}/32", pod.host_veth, None))
        self._step("setup_pod", "rules")
        self._add_rule((POD_RULE_TO_PRIORITY, f"to {pod.ipv4}/32", MAIN))
        if pod.route_table is not None:
            self._del_rules(POD_RULE_FROM_PRIORITY, f"from {pod.ipv4}/32")
            self._add_rule((POD_RULE_FROM_PRIORITY, f"from {pod.ipv4}/32", pod.route_table))

    def _del_rules(self, priority: int, selector: str) -> None:
        for table in self._rule_tables.pop((priority, selector), ()):
            self.rules.discard((priority, selector, table))

    def teardown_pod(self, pod: PodNetwork) -> None:
        with self._lock:
            self.calls.append("teardown_pod")
            self._step("teardown_pod", "rules")
            self._del_rules(POD_RULE_TO_PRIORITY, f"to {pod.ipv4}/32")
            self._del_rules(POD_RULE_FROM_PRIORITY, f"from {pod.ipv4}/32")
            owned = self._owned_veths(pod)
            for name in owned:
                self._del_host_link(name)
            ns = self.namespaces.get(pod.netns_path)
            pod_end = ns.links.get(pod.if_name) if ns is not None else None
            if (
                not owned
                and ns is not None
                and pod_end is not None
                and pod_end.peer
                and f"{pod.ipv4}/32" in pod_end.addresses
            ):
                del ns.links[pod.if_name]
                ns.routes = {r for r in ns.routes if r[1] != pod.if_name}

    def pod_present(self, netns_path: str, host_veth: str, ipv4: str | None = None) -> bool:
        with self._lock:
            if netns_path not in self.namespaces:
                return False
            if host_veth in self.links:
                return True
            return ipv4 is not None and any(
                r[0] == MAIN and r[1] == f"{ipv4}/32" and self.links.get(r[2], Link("")).peer
                for r in self.routes
            )

    def check_pod(self, pod: PodNetwork) -> list[str]:
        with self._lock:
            missing = self._check_host(pod)
            ns = self.namespaces.get(pod.netns_path)
            if ns is None:
                return [E.NETNS, *missing]
            return self._check_ns(pod, ns) + missing

    def _check_host(self, pod: PodNetwork) -> list[str]:
        missing: list[str] = []
        link = self.links.get(pod.host_veth)
        if link is None:
            missing += [E.HOST_VETH, E.HOST_ROUTE]
        else:
            if not link.up:
                missing.append(E.HOST_VETH_UP)
            if link.mtu != pod.mtu:
                missing.append(E.HOST_VETH_MTU)
            if (MAIN, f"{pod.ipv4}/32", pod.host_veth, None) not in self.routes:
                missing.append(E.HOST_ROUTE)
        if (POD_RULE_TO_PRIORITY, f"to {pod.ipv4}/32", MAIN) not in self.rules:
            missing.append(E.RULE_TO)
        from_rule = (POD_RULE_FROM_PRIORITY, f"from {pod.ipv4}/32", pod.route_table)
        if pod.route_table is not None and from_rule not in self.rules:
            missing.append(E.RULE_FROM)
        return missing

    def _check_ns(self, pod: PodNetwork, ns: Netns) -> list[str]:
        missing = [] if ns.lo_up else [E.POD_LO_UP]
        link = ns.links.get(pod.if_name)
        if link is None:
            return [
                *missing,
                E.POD_IF,
                E.POD_ADDRESS,
                E.POD_GATEWAY_ROUTE,
                E.POD_DEFAULT_ROUTE,
                E.POD_GATEWAY_NEIGH,
            ]
        if not link.up:
            missing.append(E.POD_IF_UP)
        if link.mtu != pod.mtu:
            missing.append(E.POD_IF_MTU)
        if f"{pod.ipv4}/32" not in link.addresses:
            missing.append(E.POD_ADDRESS)
        if (f"{pod.gateway}/32", pod.if_name, None) not in ns.routes:
            missing.append(E.POD_GATEWAY_ROUTE)
        if (_default_route(pod), pod.if_name, pod.gateway) not in ns.routes:
            missing.append(E.POD_DEFAULT_ROUTE)
        host = self.links.get(pod.host_veth)
        neigh = ns.neigh.get(pod.gateway)
        if neigh is None or neigh[0] != pod.if_name or (host and neigh[1] != host.mac):
            missing.append(E.POD_GATEWAY_NEIGH)
        return missing


def _pod_rule_keys(pod: PodNetwork) -> tuple[tuple[int, str], tuple[int, str]]:
    """The (priority, selector) of a pod address's two rules."""
    return (
        (POD_RULE_TO_PRIORITY, f"to {pod.ipv4}/32"),
        (POD_RULE_FROM_PRIORITY, f"from {pod.ipv4}/32"),
    )


def _default_route(pod: PodNetwork) -> str:
    """The pod's default route as the fake records it: in the main table for the first
    interface, in the pod's table N for interface N of a multi-NIC pod."""
    return "0.0.0.0/0" if not pod.attachment_index else f"0.0.0.0/0 table {pod.attachment_index}"
