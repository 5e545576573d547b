"""Issue 16, items 1-3, on the whole node: the real daemon, the pyroute2 datapath in network
namespaces and libcni with the shipped conflist. Teardown touches only what belongs to the
attachment being deleted; setup never takes over another attachment's veth; a second
attachment in one pod is refused; pods that vanished while the daemon was down leave nothing
behind after its restart. Needs root, go and the CNI packages (skipped otherwise)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rigs.cni_runtime import SYSTEM_CNI_DIR, CniError
from tests.rigs.localnode import LocalNode, Pod, local_node, real_datapath_possible

POSSIBLE, REASON = real_datapath_possible()
pytestmark = [pytest.mark.root, pytest.mark.skipif(not POSSIBLE, reason=REASON)]


@pytest.fixture
def node(libcni_runner: Path) -> Iterator[LocalNode]:
    if not os.access(os.path.join(SYSTEM_CNI_DIR, "portmap"), os.X_OK):
        pytest.skip(f"no portmap in {SYSTEM_CNI_DIR} (apt-get install containernetworking-plugins)")
    with local_node(real=True, libcni_runner=str(libcni_runner)) as n:
        yield n


def node_ip(node: LocalNode, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", node.node_netns, *args], capture_output=True, text=True, check=True
    ).stdout


def primary_ip(node: LocalNode) -> str:
    return node_ip(node, "-4", "-o", "addr", "show", "eth0").split("inet ")[1].split("/")[0]


def sandbox(node: LocalNode, pod: str, which: str, if_name: str = "eth0") -> Pod:
    """ADD one sandbox of ``pod`` (its own container id and namespace)."""
    container = f"c{which}{node.tag.replace('-', '')}"
    netns = node.make_netns(f"{pod}-{which}")
    result = node.plugin("ADD", pod, netns, container, if_name=if_name)
    return Pod(pod, container, netns, result)


def mentions(node: LocalNode, ip: str) -> list[str]:
    """The node's rules and routes that name ``ip``."""
    lines = node_ip(node, "rule").splitlines()
    lines += node_ip(node, "route", "show", "table", "all").splitlines()
    return [line for line in lines if f"{ip} " in f"{line} "]


def test_a_recreated_sandbox_and_the_old_ones_del_leave_each_other_alone(
    node: LocalNode,
) -> None:
    host = primary_ip(node)
    old = sandbox(node, "web-0", "old")
    assert node.ping(old, host)
    new = sandbox(node, "web-0", "new")  # kubelet's re-creation: same pod, the old still there
    assert old.result["interfaces"][0]["name"] != new.result["interfaces"][0]["name"]
    assert node.ping(old, host), "the new sandbox's ADD cut off the old one"
    assert node.ping(new, host)
    node.plugin("DEL", "web-0", old.netns, old.container_id)  # the late DEL of the old one
    assert node.ping(new, host), "the old sandbox's DEL cut off the new one"
    node.plugin("CHECK", "web-0", new.netns, new.container_id)
    assert mentions(node, old.ip) == []
    node.plugin("DEL", "web-0", new.netns, new.container_id)
    assert mentions(node, new.ip) == []


def test_the_old_sandboxs_del_while_the_daemon_is_down_leaves_the_new_one(
    node: LocalNode,
) -> None:
    host = primary_ip(node)
    old = sandbox(node, "db-0", "old")
    new = sandbox(node, "db-0", "new")
    node.stop_daemon(signal.SIGKILL)
    node.plugin("DEL", "db-0", old.netns, old.container_id)  # the plugin deletes the old veth
    assert node.ping(new, host), "the plugin's DEL of the old sandbox deleted the new one's veth"
    assert not node.ping(old, host)
    node.start_daemon()
    assert node.ping(new, host)
    node.plugin("CHECK", "db-0", new.netns, new.container_id)
    assert mentions(node, old.ip) == []
    node.plugin("DEL", "db-0", new.netns, new.container_id)


def test_a_second_interface_in_one_pod_is_refused_and_the_first_keeps_working(
    node: LocalNode,
) -> None:
    host = primary_ip(node)
    first = sandbox(node, "multi", "a")
    with pytest.raises(CniError, match="not supported"):
        node.plugin("ADD", "multi", first.netns, first.container_id, if_name="eth1")
    node.plugin("DEL", "multi", first.netns, first.container_id, if_name="eth1")  # runtime's undo
    assert node.ping(first, host)
    node.plugin("CHECK", "multi", first.netns, first.container_id)
    node.plugin("DEL", "multi", first.netns, first.container_id)
    assert mentions(node, first.ip) == []


def test_a_pod_that_vanished_while_the_daemon_was_down_leaves_no_rule(node: LocalNode) -> None:
    pod = sandbox(node, "gone", "x")
    assert mentions(node, pod.ip)
    node.stop_daemon(signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", os.path.basename(pod.netns)], check=True)
    node.start_daemon()
    assert mentions(node, pod.ip) == []
    assert pod.ip not in node.ipamctl("pods")
