"""An IPv6 node end to end: vpc-ipamd as a process with ENABLE_IPv6=true ENABLE_IPv4=false
ENABLE_PREFIX_DELEGATION=true against its fake cloud (whose VPC and subnet have IPv6 CIDRs:
no other setting), the pyroute2 datapath in a "node" network namespace, and pods made by a
real libcni client (``tests/cni/runner``) with the conflist the entrypoint renders for an
IPv6 cluster (vpc-cni chained with portmap). Beyond the node's eth0 an "outside" namespace
holds an IPv4-only address (10.0.0.1) and an IPv6 one. Needs root, go,
golang-github-appc-cni-dev and /usr/lib/cni/portmap (skipped otherwise).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import protocol as p
from adapters.entrypoints.main import render_conflist
from adapters.ipamd.settings import state_env
from backends.checkpoint import read_checkpoint_file
from tests.backends.test_datapath_linux import sh
from tests.rigs.cni_runtime import SHIPPED_CONFLIST, SYSTEM_CNI_DIR, Libcni
from tests.rigs.localnode import free_port, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]

V6_ENV = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}
# What the daemon's fake cloud (adapters.ipamd.wiring.fake_cloud_ports) gives an m5.large:
# the primary ENI's address, and the node's IPv6 address in the subnet's /64.
PRIMARY_IP = "10.0.0.4"
NODE_V6 = "2600:1f14:a0c:ce01::a"
OUTSIDE_V4 = "10.0.0.1"
OUTSIDE_V6 = "2600:1f14:a0c:ce01::1"


class V6Node:
    def __init__(
        self, runner: Path, instance_type: str = "m5.large", extra_env: dict[str, str] | None = None
    ) -> None:
        self.workdir = tempfile.mkdtemp(prefix="ipc6-", dir="/tmp")
        tag = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.node, self.outside = f"ipc6-node-{tag}", f"ipc6-out-{tag}"
        self.netns: list[str] = [self.node, self.outside]
        for ns in self.netns:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        n, o = ("ip", "-n", self.node), ("ip", "-n", self.outside)
        sh(*n, "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0")
        sh(*n, "link", "set", "uplink0", "netns", self.outside)
        sh(*n, "addr", "add", f"{PRIMARY_IP}/17", "dev", "eth0")
        sh(*n, "addr", "add", f"{NODE_V6}/64", "dev", "eth0", "nodad")
        sh(*o, "addr", "add", f"{OUTSIDE_V4}/17", "dev", "uplink0")
        sh(*o, "addr", "add", f"{OUTSIDE_V6}/64", "dev", "uplink0", "nodad")
        sh(*n, "link", "set", "eth0", "up")
        sh(*o, "link", "set", "uplink0", "up")
        deadline = time.monotonic() + 10  # the kernel's link-locals finish DAD first
        while "tentative" in sh(*n, "-6", "addr") + sh(*o, "-6", "addr"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        self.env = {
            **os.environ,
            "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "linux",
            "IPAMD_FAKE_INSTANCE_TYPE": instance_type,
            "IPAMD_HOST_NETNS": f"/var/run/netns/{self.node}",
            **state_env(self.workdir), **V6_ENV,
            "INTROSPECTION_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
            "METRICS_BIND_ADDRESS": f"127.0.0.1:{free_port()}",
            "IPAMD_LOG_FORMAT": "json", **(extra_env or {}),
        }  # fmt: skip
        self.log = open(os.path.join(self.workdir, "ipamd.log"), "ab")  # noqa: SIM115
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "adapters.ipamd.main"], env=self.env,
            stdout=self.log, stderr=self.log,
        )  # fmt: skip
        self.wait_ready()
        # The conflist as the entrypoint writes it for this cluster.
        rendered = Path(self.workdir, "10-aws.conflist")
        rendered.write_text(json.dumps(render_conflist(SHIPPED_CONFLIST.read_text(), self.env)))
        self.cni = Libcni(
            str(runner), self.workdir, self.env["IPAMD_SOCKET"],
            self.env["IPAMD_PENDING_DEL_DIR"], self.node, conflist=rendered,
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.daemon.poll() is None, self.logs()
            try:
                req = p.Request(p.OP_STATUS, network_name="aws-cni")
                reply = p.request(self.env["IPAMD_SOCKET"], req, 2)
                if reply.ok and (reply.result or {}).get("ready"):
                    return
            except p.ProtocolError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready: {self.logs()}")

    def logs(self) -> str:
        with open(os.path.join(self.workdir, "ipamd.log"), encoding="utf-8") as f:
            return f.read()[-3000:]

    def pod_netns(self, name: str) -> str:
        ns = f"{self.node}-{name}"
        sh("ip", "netns", "add", ns)
        self.netns.append(ns)
        return f"/var/run/netns/{ns}"

    def ping(self, netns: str, dst: str) -> bool:
        argv = ["nsenter", f"--net={netns}", "ping", "-c", "1", "-W", "2", "-q", dst]
        return subprocess.run(argv, capture_output=True).returncode == 0

    def state(self) -> dict[str, Any]:
        """The node namespace: links, addresses, rules, routes, neighbours (state aside)
        and the nat tables of both families."""
        n = ("ip", "-n", self.node)

        def nat(tool: str) -> list[str]:
            saved = sh("ip", "netns", "exec", self.node, f"{tool}-save", "-t", "nat")
            return sorted(ln for ln in saved.splitlines() if ln.startswith(("-A", ":")))

        return {
            "links": [" ".join(ln.split()[1:2]) for ln in sh(*n, "-o", "link").splitlines()],
            "addr": sh(*n, "addr"),
            "rules": sh(*n, "rule") + sh(*n, "-6", "rule"),
            "routes": sh(*n, "route", "show", "table", "all")
            + sh(*n, "-6", "route", "show", "table", "all"),
            # neighbours (state aside) but those of the uplink, which the outside's own
            # traffic (its neighbour discovery towards the pods' /80) adds to
            "neigh": sorted(
                " ".join(ln.split()[:3])
                for family in ("-4", "-6")
                for ln in sh(*n, family, "neigh").splitlines()
                if " dev eth0 " not in f"{ln} "
            ),
            "nat": nat("iptables") + nat("ip6tables"),
        }

    def close(self) -> None:
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        self.log.close()
        for ns in reversed(self.netns):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def v6node(libcni_runner: Path) -> Iterator[V6Node]:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR} (apt-get install containernetworking-plugins)")
    node = V6Node(libcni_runner)
    try:
        yield node
    finally:
        node.close()


def test_ipv6_pods_through_libcni_reach_each_other_the_node_and_ipv4(v6node: V6Node) -> None:
    node = v6node
    # warm the node's own neighbour entries towards the outside, so they are in "before"
    assert node.ping(f"/var/run/netns/{node.node}", OUTSIDE_V4)
    assert node.ping(f"/var/run/netns/{node.node}", OUTSIDE_V6)
    before = node.state()
    pods = {}
    for name in ("a", "b", "c"):
        netns = node.pod_netns(name)
        result = node.cni("ADD", name, netns, f"ctr-{name}")
        pods[name] = (netns, result)
    for _netns, result in pods.values():
        (ip,) = result["ips"]
        assert ip["address"].endswith("/128") and ":" in ip["address"]
        assert ip["gateway"] == "fe80::1"
        assert {"dst": "::/0", "gw": "fe80::1"} in result["routes"]
    addresses = {name: r["ips"][0]["address"].split("/")[0] for name, (_, r) in pods.items()}
    assert len(set(addresses.values())) == 3
    (netns_a, _), (netns_b, _) = pods["a"], pods["b"]
    assert node.ping(netns_a, addresses["b"]) and node.ping(netns_b, addresses["c"])
    assert node.ping(netns_a, NODE_V6)  # the node over IPv6
    assert node.ping(f"/var/run/netns/{node.node}", addresses["a"])
    assert node.ping(netns_a, OUTSIDE_V4)  # IPv4 through the egress SNAT to 10.0.0.4
    for name, (netns, _) in pods.items():
        assert node.cni("CHECK", name, netns, f"ctr-{name}") == {}
    for name, (netns, _) in pods.items():
        node.cni("DEL", name, netns, f"ctr-{name}")
        node.cni("DEL", name, netns, f"ctr-{name}")  # a second DEL is a success too
    after = node.state()
    for key in before:  # the node's egress chain was made at start, before "before"
        assert after[key] == before[key], key
    neighbours = sh("ip", "-n", node.node, "neigh") + sh("ip", "-n", node.node, "-6", "neigh")
    assert not [a for a in addresses.values() if a in neighbours]  # none of a pod, anywhere
    node.daemon.send_signal(signal.SIGTERM)
    assert node.daemon.wait(timeout=30) == 0
    checkpoint = read_checkpoint_file(node.env["AWS_VPC_K8S_CNI_BACKING_STORE"])
    assert checkpoint is not None and checkpoint.allocations == ()


# ---------------------------------------------------------------- multi-NIC in IPv6 mode
MULTI_NIC = {"k8s.amazonaws.com/nicConfig": "multi-nic-attachment"}
CARD1_TABLE = 1 * 8 + 0 + 1  # c6in.32xlarge: card * max ENIs (8) + device 0 + 1


@pytest.fixture
def v6_multi_nic(libcni_runner: Path) -> Iterator[V6Node]:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR} (apt-get install containernetworking-plugins)")
    # reconciliation every second: the card's ENI setup is retried soon after its link comes
    extra = {"ENABLE_MULTI_NIC": "true", "IPAMD_RECONCILE_INTERVAL_SECONDS": "1"}
    node = V6Node(libcni_runner, instance_type="c6in.32xlarge", extra_env=extra)
    try:
        yield node
    finally:
        node.close()


def introspect(node: V6Node, path: str) -> dict[str, Any]:
    url = f"http://{node.env['INTROSPECTION_BIND_ADDRESS']}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)
    return doc


def plug_card_eni(node: V6Node, timeout: float = 60.0) -> tuple[dict[str, Any], str]:
    """Play the hypervisor for the ENI the daemon creates on card 1 at start (with its /80):
    a link with the ENI's MAC in the node namespace (the MAC as the daemon's datapath asks
    for it in its log), then wait for the daemon to set the ENI up: card 1's table routes
    IPv6 through the VPC router. Returns the ENI (``/v1/enis``) and its link's name."""
    deadline = time.monotonic() + timeout
    link = "card1"
    plugged = False
    while time.monotonic() < deadline:
        assert node.daemon.poll() is None, node.logs()
        on_card = [e for e in introspect(node, "/v1/enis")["ENIs"].values()
                   if e.get("NetworkCard") == 1]  # fmt: skip
        if on_card and not plugged:
            found = re.search(r"no link with MAC ([0-9a-f:]{17})", node.logs())
            if found:
                sh("ip", "-n", node.node, "link", "add", link, "address", found.group(1),
                   "type", "veth", "peer", "name", f"{link}p")  # fmt: skip
                sh("ip", "-n", node.node, "link", "set", f"{link}p", "up")
                plugged = True
        routes = sh("ip", "-n", node.node, "-6", "route", "show", "table", str(CARD1_TABLE),
                    check=False)  # fmt: skip
        if on_card and "default via fe80:ec2::1" in routes:
            return on_card[0], link
        time.sleep(0.2)
    raise AssertionError(f"card 1's ENI not set up within {timeout:.0f} s: {node.logs()}")


def ping6_from(netns: str, source: str, dst: str) -> bool:
    argv = ["nsenter", f"--net={netns}", "ping", "-6", "-c", "1", "-W", "2", "-q", "-I", source,
            dst]  # fmt: skip
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_an_ipv6_multi_nic_pod_gets_an_interface_per_card_routed_by_its_table(
    v6_multi_nic: V6Node,
) -> None:
    """Upstream v1.20+'s multi-NIC in IPv6 mode through the daemon and libcni: card 1 gets
    an ENI with its own /80 at start; an annotated pod gets eth0 from card 0's /80 and
    mNicIf1 from card 1's, ping6 works on each, interface 1 leaves by card 1's table, and
    DEL leaves the node's links, addresses, rules, routes, neighbours and nat as before."""
    node = v6_multi_nic
    card_eni, link = plug_card_eni(node)
    assert card_eni["DeviceNumber"] == 0 and len(card_eni["IPv6Cidrs"]) == 1
    card_prefix = ipaddress.IPv6Network(next(iter(card_eni["IPv6Cidrs"])))
    assert node.ping(f"/var/run/netns/{node.node}", OUTSIDE_V6)
    before = node.state()

    single_ns = node.pod_netns("web")
    single = node.cni("ADD", "web", single_ns, "ctr-web")
    multi_ns = node.pod_netns("trainer")
    multi = node.cni("ADD", "trainer", multi_ns, "ctr-trainer", annotations=MULTI_NIC)
    names = [i["name"] for i in multi["interfaces"] if i.get("sandbox")]
    assert names == ["eth0", "mNicIf1"]
    addresses = [ip["address"].split("/")[0] for ip in multi["ips"]]
    assert all(":" in a for a in addresses) and len(set(addresses)) == 2
    assert ipaddress.IPv6Address(addresses[1]) in card_prefix
    assert ipaddress.IPv6Address(addresses[0]) not in card_prefix
    assert [ip["gateway"] for ip in multi["ips"]] == ["fe80::1", "fe80::1"]

    single_ip = single["ips"][0]["address"].split("/")[0]
    for address in addresses:  # ping6 on each interface: the node, and the other pod
        assert ping6_from(multi_ns, address, NODE_V6), address
        assert node.ping(f"/var/run/netns/{node.node}", address), address
        assert ping6_from(single_ns, single_ip, address), address
    rules = sh("ip", "-n", node.node, "-6", "rule")
    assert f"from {addresses[1]} lookup {CARD1_TABLE}" in rules
    way = sh("ip", "-n", node.node, "-6", "route", "get", "2600:1f14:ffff::7", "from",
             addresses[1], "iif", multi["interfaces"][2]["name"])  # fmt: skip
    assert f"dev {link} table {CARD1_TABLE}" in way, way
    pods = introspect(node, "/v1/pods")
    assert any(p["IfName"] == "mNicIf1" and p["NetworkCard"] == 1 for p in pods.values()), pods

    assert node.cni("CHECK", "trainer", multi_ns, "ctr-trainer", annotations=MULTI_NIC) == {}
    node.cni("DEL", "trainer", multi_ns, "ctr-trainer", annotations=MULTI_NIC)
    node.cni("DEL", "web", single_ns, "ctr-web")
    after = node.state()
    for key in before:
        assert after[key] == before[key], key
    neighbours = sh("ip", "-n", node.node, "neigh") + sh("ip", "-n", node.node, "-6", "neigh")
    assert not [a for a in addresses if a in neighbours]
    assert introspect(node, "/v1/pods") == {} or not any(
        p.get("IfName") == "mNicIf1" for p in introspect(node, "/v1/pods").values()
    )
