"""The Linux datapath through pyroute2 (netlink), laid out as the upstream VPC CNI does.

Threading: every public method is synchronous and blocking. Call it from a worker thread
(``asyncio.to_thread``), never from a thread running an event loop (pyroute2's sync API
drives a private loop; a guard raises RuntimeError instead of deadlocking). Each call opens
its own netlink sockets (nothing is shared between threads) and a per-instance lock
serialises mutating calls, so one ``LinuxDatapath`` may be used from many threads.

``host_netns``: the path of the namespace that plays "the host" (None: the caller's own
namespace). Namespaces are opened by path and never created.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

from backends.datapath import errors as E
from backends.datapath.check import check_pod_pieces
from backends.datapath.faults import FaultInjection
from backends.datapath.netns import iproute, open_netns, run_in_netns
from backends.datapath.snat import EGRESS_V4_CHAIN, EGRESS_V6_CHAIN, IptablesRunner, SnatManager
from backends.datapath.sysctls import ProcSysctlWriter, SysctlWriter, node_sysctls
from ipamcore.netspec import (
    ATTACHMENT_TAG_PREFIX,
    EGRESS_V4_RANGE,
    EGRESS_V6_RANGE,
    ENI_GATEWAY_V6,
    ENI_RULE_PRIORITY,
    POD_GATEWAY,
    POD_GATEWAY_V6,
    POD_RULE_FROM_PRIORITY,
    POD_RULE_TO_PRIORITY,
    EniNetwork,
    LiveNetwork,
    NodeNetwork,
    PodNetwork,
    pod_families,
)

MAIN_TABLE = 254
SCOPE_LINK = 253
NUD_PERMANENT = 0x80
IFF_UP = 0x1
IFA_F_NODAD = 0x02
AF_INET6 = 10
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)
_TO_MAIN = {"priority": POD_RULE_TO_PRIORITY, "table": MAIN_TABLE}


def _ignore(codes: tuple[int, ...], fn: Callable[[], Any]) -> bool:
    """Run ``fn``; False when it failed with one of ``codes`` (already there / already gone)."""
    try:
        fn()
    except NetlinkError as exc:
        if exc.code in codes:
            return False
        raise
    return True


def _link(ipr: IPRoute, name: str) -> Any | None:
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code in _GONE:
            return None
        raise


def _link_at(ipr: IPRoute, index: int) -> Any | None:
    """The link at ``index``; None once it is gone (it may vanish between two requests)."""
    try:
        return ipr.link("get", index=index)[0]
    except NetlinkError as exc:
        if exc.code in _GONE:
            return None
        raise


def _must_link(ipr: IPRoute, name: str) -> Any:
    link = _link(ipr, name)
    if link is None:
        raise E.DatapathError(f"link {name} vanished")
    return link


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _del_rules(ipr: IPRoute, priority: int, selector: dict[str, Any]) -> None:
    """Delete every rule at ``priority`` with this selector, whatever its table (no dump:
    a delete without table or action matches any; ENOENT ends the loop)."""
    for _ in range(64):
        if not _ignore(_GONE, lambda: ipr.rule("del", priority=priority, **selector)):
            return


def _rules(ipr: IPRoute, priority: int, ip: str, side: str) -> list[Any]:
    """Rules at ``priority`` whose ``side`` ("dst"/"src") selector is exactly ``ip``/32."""
    attr = "FRA_DST" if side == "dst" else "FRA_SRC"
    return [
        r
        for r in ipr.get_rules(family=2)
        if r.get_attr("FRA_PRIORITY") == priority
        and r.get_attr(attr) == ip
        and r[f"{side}_len"] == 32
    ]


def _from_selector(pod: PodNetwork) -> dict[str, Any]:
    """The "from" rule selector of a pod attachment routed by its table (see
    :attr:`PodNetwork.source`)."""
    address, plen, family = pod.source
    return {"src": address, "src_len": plen, **({"family": AF_INET6} if family == 10 else {})}


def _rule_table(rule: Any) -> int:
    return int(rule.get_attr("FRA_TABLE") or rule["table"])


class LinuxDatapath(FaultInjection):
    """DatapathPort on Linux. See the module docstring for threading."""

    def __init__(
        self,
        host_netns: str | None = None,
        sysctl_writer: SysctlWriter | None = None,
        apply_sysctls: bool = True,
        iptables: IptablesRunner | None = None,
        ip6tables: IptablesRunner | None = None,
    ) -> None:
        self.host_netns = host_netns
        self.sysctl_writer = sysctl_writer or ProcSysctlWriter(host_netns)
        self.apply_sysctls = apply_sysctls
        self.snat = SnatManager(iptables or IptablesRunner(host_netns))
        self.snat6 = SnatManager(ip6tables or IptablesRunner(host_netns, ipv6=True))
        self._lock = threading.Lock()
        self._init_faults()

    # ----------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _host(self) -> Iterator[IPRoute]:
        _not_on_event_loop()
        fd = None if self.host_netns is None else open_netns(self.host_netns)
        try:
            with iproute(fd) as ipr:
                yield ipr
        finally:
            if fd is not None:
                os.close(fd)

    @contextlib.contextmanager
    def _netns(self, path: str) -> Iterator[tuple[int, IPRoute]]:
        _not_on_event_loop()
        fd = open_netns(path)
        try:
            with iproute(fd) as ipr:
                yield fd, ipr
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- node, ENI

    def setup_node(self, node: NodeNetwork) -> None:
        with self._lock:
            if self.apply_sysctls:
                with self._host() as host:
                    primary = self._interface_with(host, node.primary_ip)
                for key, value in node_sysctls(primary, node.ipv6):
                    self.sysctl_writer(key, value)
            if node.ipv4:  # no SNAT for IPv6 pods: their addresses are the VPC's, routable
                self.snat.apply(
                    node.snat_chain, node.primary_ip, node.vpc_cidrs, node.external_snat
                )
            if node.egress_v4_snat_to:
                self.snat.apply_egress(
                    EGRESS_V4_CHAIN, EGRESS_V4_RANGE, node.egress_v4_snat_to, "224.0.0.0/4"
                )
            if node.egress_v6_snat_to:
                self.snat6.apply_egress(
                    EGRESS_V6_CHAIN, EGRESS_V6_RANGE, node.egress_v6_snat_to, "ff00::/8"
                )

    @staticmethod
    def _interface_with(ipr: IPRoute, ip: str) -> str | None:
        for addr in ipr.get_addr(family=2):
            if addr.get_attr("IFA_ADDRESS") == ip:
                link = ipr.get_links(addr["index"])[0]
                return str(link.get_attr("IFLA_IFNAME"))
        return None

    def setup_eni(self, eni: EniNetwork) -> None:
        subnet = ipaddress.ip_network(eni.subnet_cidr, strict=False)
        mac = eni.mac.lower()
        with self._lock, self._host() as host:
            idx = None
            for link in host.get_links():
                if str(link.get_attr("IFLA_ADDRESS") or "").lower() == mac:
                    idx = link["index"]
            if idx is None:
                raise E.DatapathError(f"no link with MAC {eni.mac}")
            try:
                host.link("set", index=idx, mtu=eni.mtu, state="up")
                _ignore(
                    (errno.EEXIST,),
                    lambda: host.addr(
                        "add", index=idx, address=eni.primary_ip, prefixlen=subnet.prefixlen
                    ),
                )
                # Upstream: the subnet route the kernel adds to main must not take traffic.
                _ignore(
                    _GONE,
                    lambda: host.route(
                        "del",
                        dst=str(subnet),
                        oif=idx,
                        table=MAIN_TABLE,
                        scope=SCOPE_LINK,
                        prefsrc=eni.primary_ip,
                    ),
                )
                table = eni.route_table
                host.route(
                    "replace", dst=f"{eni.gateway}/32", oif=idx, scope=SCOPE_LINK, table=table
                )
                host.route("replace", dst="0.0.0.0/0", gateway=eni.gateway, oif=idx, table=table)
                if eni.ipv6:  # upstream's IPv6 ENI: default through the VPC router
                    host.route(
                        "replace", dst="::/0", gateway=ENI_GATEWAY_V6, oif=idx, table=table,
                        family=AF_INET6,
                    )  # fmt: skip
                if not [
                    r
                    for r in _rules(host, ENI_RULE_PRIORITY, eni.primary_ip, "src")
                    if _rule_table(r) == table
                ]:
                    host.rule(
                        "add",
                        priority=ENI_RULE_PRIORITY,
                        src=eni.primary_ip,
                        src_len=32,
                        table=table,
                    )
            except NetlinkError as exc:
                raise E.DatapathError(f"setup_eni {eni.mac}: {exc}") from exc

    def teardown_eni(self, eni: EniNetwork) -> None:
        mac = eni.mac.lower()
        with self._lock, self._host() as host:
            try:
                for rule in _rules(host, ENI_RULE_PRIORITY, eni.primary_ip, "src"):
                    table = _rule_table(rule)
                    _ignore(
                        _GONE,
                        lambda t=table: host.rule(
                            "del", priority=ENI_RULE_PRIORITY, src=eni.primary_ip, src_len=32,
                            table=t,
                        ),
                    )  # fmt: skip
                link = next(
                    (lk for lk in host.get_links()
                     if str(lk.get_attr("IFLA_ADDRESS") or "").lower() == mac),
                    None,
                )  # fmt: skip
                if link is None:
                    return  # detached: its routes went with the link
                idx = link["index"]
                for family in (2, AF_INET6):
                    for route in host.get_routes(family=family, table=eni.route_table):
                        if (
                            route.get_attr("RTA_OIF") == idx
                            and _route_table(route) == eni.route_table
                        ):
                            _ignore(_GONE, lambda r=route: host.route("del", **_route_key(r)))
                prefix = ipaddress.ip_network(eni.subnet_cidr, strict=False).prefixlen
                _ignore(
                    _GONE,
                    lambda: host.addr("del", index=idx, address=eni.primary_ip, prefixlen=prefix),
                )
            except NetlinkError as exc:
                raise E.DatapathError(f"teardown_eni {eni.mac}: {exc}") from exc

    # ----------------------------------------------------------------- pods

    def setup_pod(self, pod: PodNetwork) -> None:
        undo: list[Callable[[], Any]] = []
        # The pod's namespace is a path from outside: it is opened (no links followed, never
        # blocking, checked to be a network namespace) before the node-wide lock is taken.
        with self._netns(pod.netns_path) as (fd, ns), self._lock, self._host() as host:
            try:
                self._build_pod(pod, host, fd, ns, undo)
            except BaseException as exc:
                for action in reversed(undo):
                    with contextlib.suppress(Exception):
                        action()
                if isinstance(exc, E.DatapathError):
                    raise
                if isinstance(exc, (NetlinkError, OSError)):
                    raise E.DatapathError(f"setup_pod {pod.host_veth}: {exc}") from exc
                raise

    def _build_pod(
        self, pod: PodNetwork, host: IPRoute, fd: int, ns: IPRoute, undo: list[Callable[[], Any]]
    ) -> None:
        self._step("setup_pod", "veth")
        existing = _link(host, pod.host_veth)
        if existing is not None:
            if not _owns(host, existing, pod):
                raise E.VethTaken(pod.host_veth)
            # This attachment's own veth (a repeated ADD repairing it) is rebuilt.
            _ignore(_GONE, lambda: host.link("del", index=existing["index"]))
        # A multi-NIC pod's interfaces above 0 join its first one (their own gateway and table).
        other = None if pod.attachment_index else _other_attachment(ns, pod.if_name)
        if other is not None:
            raise E.SecondAttachment(pod.netns_path, other)
        host.link(
            "add",
            ifname=pod.host_veth,
            kind="veth",
            mtu=pod.mtu,
            peer={"ifname": pod.if_name, "net_ns_fd": fd, "mtu": pod.mtu},
        )
        undo.append(lambda: host.link("del", ifname=pod.host_veth))
        host_link = _must_link(host, pod.host_veth)
        host_mac = host_link.get_attr("IFLA_ADDRESS")
        host_idx = host_link["index"]
        if pod.tag:
            host.link("set", index=host_idx, ifalias=pod.tag)

        self._step("setup_pod", "pod_link")
        pod_idx = _must_link(ns, pod.if_name)["index"]
        ns.link("set", index=1, state="up")  # lo is always index 1 in a namespace
        ns.link("set", index=pod_idx, state="up")

        if pod.v6:  # upstream: IPv6 on in the pod (its interface and lo)
            run_in_netns(fd, _enable_pod_ipv6(pod.if_name))

        self._step("setup_pod", "pod_address")
        for address, plen, _gw, _default in pod_families(pod):
            # No duplicate address detection: the address is this pod's alone (the core
            # hands each out once), and DAD would hold it "tentative" for a second or more.
            ns.addr("add", index=pod_idx, address=address, prefixlen=plen, flags=IFA_F_NODAD)

        self._step("setup_pod", "pod_routes")
        # Interface N > 0 of a multi-NIC pod: its own gateway, in the pod's table N, chosen by
        # a rule for its address (upstream's layout); the first interface uses the main table.
        # IPv6 (and the egress family) through fe80::1, in the main table.
        gateway, table = pod.gateway, pod.attachment_index or MAIN_TABLE
        for _address, plen, gw, default in pod_families(pod):
            in_table = table if gw == gateway or pod.attachment_index else MAIN_TABLE
            ns.route("replace", dst=f"{gw}/{plen}", oif=pod_idx, scope=SCOPE_LINK, table=in_table)
            ns.route("replace", dst=default, gateway=gw, oif=pod_idx, table=in_table)
            ns.neigh("replace", dst=gw, lladdr=host_mac, ifindex=pod_idx, state=NUD_PERMANENT)
        if pod.attachment_index:
            from_pod = _from_selector(pod)
            _del_rules(ns, POD_RULE_FROM_PRIORITY, from_pod)
            ns.rule("add", priority=POD_RULE_FROM_PRIORITY, table=table, **from_pod)

        self._step("setup_pod", "host_route")
        if pod.v6:
            # The host end answers as the pod's gateway, fe80::1, with no duplicate address
            # detection: neighbour discovery towards the pod needs a usable link-local
            # source on the veth, and the kernel's own stays "tentative" for a second or more.
            host.addr(
                "add", index=host_idx, address=POD_GATEWAY_V6, prefixlen=64, flags=IFA_F_NODAD
            )
        host.link("set", index=host_idx, state="up")
        for address, plen, _gw, _default in pod_families(pod):
            host.route("replace", dst=f"{address}/{plen}", oif=host_idx, scope=SCOPE_LINK)
            undo.append(
                lambda a=address, n=plen: host.route(
                    "del", dst=f"{a}/{n}", oif=host_idx, table=MAIN_TABLE
                )
            )

        self._step("setup_pod", "rules")
        if pod.ipv6:  # upstream: "to <pod> lookup main" for an IPv6 pod too
            to6 = {"dst": pod.ipv6, "dst_len": 128, "family": AF_INET6}
            if _ignore((errno.EEXIST,), lambda: host.rule("add", **to6, **_TO_MAIN)):
                undo.append(lambda: _del_rules(host, POD_RULE_TO_PRIORITY, to6))
        if not pod.ipv4:
            if pod.ipv6 and pod.route_table is not None:  # IPv6 mode: a card's interface
                from6 = _from_selector(pod)
                _del_rules(host, POD_RULE_FROM_PRIORITY, from6)
                host.rule("add", priority=POD_RULE_FROM_PRIORITY, table=pod.route_table, **from6)
                undo.append(lambda: _del_rules(host, POD_RULE_FROM_PRIORITY, from6))
            return
        to_rule = {"dst": pod.ipv4, "dst_len": 32}
        if _ignore((errno.EEXIST,), lambda: host.rule("add", **to_rule, **_TO_MAIN)):
            undo.append(lambda: _del_rules(host, POD_RULE_TO_PRIORITY, to_rule))
        if pod.route_table is not None:
            # Replaces a stale "from" rule of this address (it may point at another table).
            from_rule = {"src": pod.ipv4, "src_len": 32}
            _del_rules(host, POD_RULE_FROM_PRIORITY, from_rule)
            host.rule("add", priority=POD_RULE_FROM_PRIORITY, table=pod.route_table, **from_rule)
            undo.append(lambda: _del_rules(host, POD_RULE_FROM_PRIORITY, from_rule))

    def teardown_pod(self, pod: PodNetwork) -> None:
        with self._lock, self._host() as host:
            try:
                if pod.ipv4:
                    _del_rules(host, POD_RULE_TO_PRIORITY, {"dst": pod.ipv4, "dst_len": 32})
                    _del_rules(host, POD_RULE_FROM_PRIORITY, {"src": pod.ipv4, "src_len": 32})
                if pod.ipv6:
                    to6 = {"dst": pod.ipv6, "dst_len": 128, "family": AF_INET6}
                    _del_rules(host, POD_RULE_TO_PRIORITY, to6)
                    if not pod.ipv4:
                        _del_rules(host, POD_RULE_FROM_PRIORITY, _from_selector(pod))
                # Only this attachment's veth: deleting the host end deletes the pod end and
                # every route through it. A veth of the same name that is not this
                # attachment's (a newer sandbox of the same pod, set up the upstream way) stays.
                owned = _owned_veths(host, pod)
                for idx in owned:
                    _ignore(_GONE, lambda i=idx: host.link("del", index=i))
            except NetlinkError as exc:
                raise E.DatapathError(f"teardown_pod {pod.host_veth}: {exc}") from exc
        if not owned and pod.netns_path:
            self._teardown_pod_side(pod)  # outside the lock: the path is from outside
        if pod.attachment_index and pod.netns_path:
            self._drop_pod_rule(pod)

    def _drop_pod_rule(self, pod: PodNetwork) -> None:
        """A multi-NIC interface's ``from`` rule inside the pod (its routes went with the
        veth); a namespace already gone has nothing left."""
        try:
            with self._netns(pod.netns_path) as (_, ns):
                _del_rules(ns, POD_RULE_FROM_PRIORITY, _from_selector(pod))
        except (E.DatapathError, NetlinkError):
            return

    def _teardown_pod_side(self, pod: PodNetwork) -> None:
        """A pod end left behind without its host end: deleted only when it holds this
        attachment's address."""
        try:
            with self._netns(pod.netns_path) as (_, ns):
                link = _link(ns, pod.if_name)
                if link is None or _kind(link) != "veth":
                    return
                if any(
                    a.get_attr("IFA_ADDRESS") == pod.address
                    for a in ns.get_addr(index=link["index"])
                ):
                    _ignore(_GONE, lambda: ns.link("del", index=link["index"]))
        except E.DatapathError:
            return  # gone, or not a namespace: nothing of ours to remove there
        except NetlinkError:
            return

    def remove_stale(self, live: LiveNetwork) -> list[str]:
        ips = {p.ipv4 for p in live.pods if p.ipv4} | {p.ipv6 for p in live.pods if p.ipv6}
        tags = {p.tag for p in live.pods if p.tag}
        eni_ips = set(live.eni_ips)
        removed: list[str] = []
        with self._lock, self._host() as host:
            try:
                for rule in (*host.get_rules(family=2), *host.get_rules(family=AF_INET6)):
                    prio = rule.get_attr("FRA_PRIORITY")
                    table = _rule_table(rule)
                    full = 32 if rule["family"] == 2 else 128
                    if rule["family"] == AF_INET6:
                        # "to <pod>", and (IPv6 multi-NIC) "from <pod> lookup <card table>"
                        if prio == POD_RULE_TO_PRIORITY and rule["dst_len"] == full:
                            side = "dst"
                        elif prio == POD_RULE_FROM_PRIORITY and rule["src_len"] == full:
                            side = "src"
                        else:
                            continue
                        ip = rule.get_attr("FRA_DST" if side == "dst" else "FRA_SRC")
                        if ip in ips:
                            continue
                        sel6 = {side: ip, f"{side}_len": full, "family": AF_INET6}
                        if _ignore(_GONE, lambda p=prio, s=sel6, t=table: host.rule(
                            "del", priority=p, table=t, **s
                        )):  # fmt: skip
                            way = "to" if side == "dst" else "from"
                            removed.append(f"rule {prio}: {way} {ip} lookup {table}")
                        continue
                    if prio == POD_RULE_TO_PRIORITY and rule["dst_len"] == 32:
                        ip, sel = rule.get_attr("FRA_DST"), {"dst": rule.get_attr("FRA_DST")}
                        keep = ip in ips
                    elif (
                        prio in (POD_RULE_FROM_PRIORITY, ENI_RULE_PRIORITY)
                        and rule["src_len"] == 32
                    ):
                        ip, sel = rule.get_attr("FRA_SRC"), {"src": rule.get_attr("FRA_SRC")}
                        keep = ip in (ips if prio == POD_RULE_FROM_PRIORITY else eni_ips)
                    else:
                        continue
                    if keep:
                        continue
                    length = {f"{next(iter(sel))}_len": 32}
                    if _ignore(
                        _GONE,
                        lambda p=prio, s=sel, n=length, t=table: host.rule(
                            "del", priority=p, table=t, **s, **n
                        ),
                    ):
                        side = "to" if "dst" in sel else "from"
                        removed.append(f"rule {prio}: {side} {ip} lookup {table}")
                for link in host.get_links():
                    alias = link.get_attr("IFLA_IFALIAS") or ""
                    if (
                        _kind(link) == "veth"
                        and alias.startswith(ATTACHMENT_TAG_PREFIX)
                        and alias not in tags
                    ):
                        name = link.get_attr("IFLA_IFNAME")
                        if _ignore(_GONE, lambda i=link["index"]: host.link("del", index=i)):
                            removed.append(f"veth {name} ({alias})")
            except NetlinkError as exc:
                raise E.DatapathError(f"remove_stale: {exc}") from exc
        return removed

    def pod_present(self, netns_path: str, host_veth: str, ipv4: str | None = None) -> bool:
        if not os.path.exists(netns_path):
            return False
        with self._host() as host:
            if host.link_lookup(ifname=host_veth):
                return True
            return bool(ipv4) and bool(_veths_routing(host, ipv4 or ""))

    def check_pod(self, pod: PodNetwork) -> list[str]:
        try:
            with self._netns(pod.netns_path) as (_, ns), self._host() as host:
                return check_pod_pieces(pod, host, ns)
        except E.NetnsNotFound:
            pass
        with self._host() as host:
            return check_pod_pieces(pod, host, None)


def _enable_pod_ipv6(if_name: str) -> Callable[[], None]:
    """Upstream's pod sysctls for IPv6 (disable_ipv6=0 on the interface and lo), run in the
    pod's namespace: written only when not already 0 (the daemon's container may have a
    read-only /proc/sys; a new namespace normally has IPv6 on); a missing key (IPv6 compiled
    out) is left alone, as upstream does."""

    def write() -> None:
        for name in (if_name, "lo"):
            path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
            try:
                with open(path) as f:
                    if f.read().strip() == "0":
                        continue
                with open(path, "w") as f:
                    f.write("0")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise E.DatapathError(
                    f"IPv6 is off in the pod namespace ({name}) and cannot be turned on: {exc}; "
                    "set net.ipv6.conf.default.disable_ipv6=0 on the node"
                ) from exc

    return write


def _not_on_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("LinuxDatapath is blocking: call it via asyncio.to_thread")


def _route_key(route: Any) -> dict[str, Any]:
    """What identifies ``route`` for a delete."""
    key: dict[str, Any] = {"table": _route_table(route), "dst_len": route["dst_len"]}
    for attr, name in (("RTA_DST", "dst"), ("RTA_OIF", "oif"), ("RTA_GATEWAY", "gateway")):
        value = route.get_attr(attr)
        if value is not None:
            key[name] = value
    return key


def _route_table(route: Any) -> int:
    return int(route.get_attr("RTA_TABLE") or route["table"])


def _veths_routing(host: IPRoute, ipv4: str) -> list[int]:
    """Indexes of the veths the main table routes ``ipv4``/32 (or an IPv6 address /128)
    through."""
    found = []
    v6 = ":" in ipv4
    for route in host.get_routes(family=AF_INET6 if v6 else 2, table=MAIN_TABLE):
        if (
            route["dst_len"] == (128 if v6 else 32)
            and route.get_attr("RTA_DST") == ipv4
            and _route_table(route) == MAIN_TABLE
            and route.get_attr("RTA_OIF") is not None
        ):
            link = _link_at(host, route.get_attr("RTA_OIF"))
            if link is not None and _kind(link) == "veth":
                found.append(int(link["index"]))
    return found


def _owns(host: IPRoute, link: Any, pod: PodNetwork) -> bool:
    """Whether the host link ``link`` is ``pod``'s veth: it carries the attachment's tag, or
    it carries no tag of ours and routes the attachment's address (a veth set up before tags;
    an address belongs to one attachment at a time)."""
    if _kind(link) != "veth":
        return False
    alias = link.get_attr("IFLA_IFALIAS") or ""
    if alias.startswith(ATTACHMENT_TAG_PREFIX):
        return bool(pod.tag) and alias == pod.tag
    return int(link["index"]) in _veths_routing(host, pod.address)


def _owned_veths(host: IPRoute, pod: PodNetwork) -> list[int]:
    """The host veths that are ``pod``'s: the one of its name if it is, and any veth that
    routes its address (named the upstream way) unless tagged for another attachment."""
    owned: list[int] = []
    link = _link(host, pod.host_veth)
    if link is not None and _owns(host, link, pod):
        owned.append(int(link["index"]))
    for idx in _veths_routing(host, pod.address):
        if idx in owned:
            continue
        link = _link_at(host, idx)
        if link is not None and _owns(host, link, pod):
            owned.append(idx)
    return owned


def _other_attachment(ns: IPRoute, if_name: str) -> str | None:
    """The interface of another attachment of this plugin in the pod's namespace (it routes
    169.254.1.1 or fe80::1 in the main table; a multi-NIC pod's interfaces above 0 route
    their gateway in their own tables), if any."""
    routes = (
        *ns.get_routes(family=2, table=MAIN_TABLE),
        *ns.get_routes(family=AF_INET6, table=MAIN_TABLE),
    )
    for route in routes:
        if route.get_attr("RTA_DST") in (POD_GATEWAY, POD_GATEWAY_V6) and route["dst_len"] in (
            32,
            128,
        ):
            link = _link_at(ns, route.get_attr("RTA_OIF"))
            name = None if link is None else link.get_attr("IFLA_IFNAME")
            if name is not None and name != if_name:
                return str(name)
    return None
