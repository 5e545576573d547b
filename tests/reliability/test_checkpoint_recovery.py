"""Restart with the checkpoint missing, empty, truncated, from the upstream daemon or from a
newer version: each does what the README's "Checkpoint recovery" section says, and logs it."""

from __future__ import annotations

import glob
import json
import os
import pathlib
from collections.abc import Iterator

import pytest

from tests.rigs.localnode import LocalNode
from tests.rigs.reliability.crash_campaign import add, crash_node, daemon_pods, ec2_client
from tests.rigs.reliability.invariants import Ledger

COOLDOWN_S = 30  # long enough that "cooling" below cannot end during a test


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with crash_node(cooldown_s=COOLDOWN_S) as n:
        yield n


def checkpoint_path(node: LocalNode) -> str:
    return node.env["AWS_VPC_K8S_CNI_BACKING_STORE"]


def instance_addresses(node: LocalNode) -> set[str]:
    """Secondary addresses EC2 shows on the instance's ENIs."""
    enis = ec2_client(node).describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [node.instance_id]}]
    )["NetworkInterfaces"]
    return {
        a["PrivateIpAddress"] for e in enis for a in e["PrivateIpAddresses"] if not a.get("Primary")
    }


def restart_with(node: LocalNode, content: bytes | None) -> str:
    """Stop the daemon, put ``content`` (None: no file) as the checkpoint, start; the log
    of the new start."""
    if node.daemon is not None:
        node.stop_daemon()
    path = checkpoint_path(node)
    for old in glob.glob(path + "*"):
        os.unlink(old)
    if content is not None:
        with open(path, "wb") as f:
            f.write(content)
    log_path = os.path.join(node.workdir, "ipamd.log")
    offset = os.path.getsize(log_path)
    node.start_daemon()
    with open(log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode()


def add_retrying(node: LocalNode, key: str, attempts: int = 20) -> str | None:
    """ADD as kubelet does it: a "try again later" answer is retried. With every address
    in quarantine the pool must grow first, which can outlast the daemon's short ADD wait
    (``IPAMD_ADD_WAIT_SECONDS=1``) on a loaded machine."""
    ledger = Ledger(COOLDOWN_S)
    for attempt in range(attempts):
        address = add(node, ledger, f"{key}-{attempt}")
        if address is not None:
            return address
    return None


def events(log: str) -> list[str]:
    return [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]


def upstream_document(address: str) -> bytes:
    doc = {
        "version": "vpc-cni-ipam/1",
        "allocations": [
            {
                "networkName": "aws-cni", "containerID": "upstream-c1", "ifName": "eth0",
                "ipv4": address, "ipv6": "", "allocationTimestamp": 1_700_000_000_000_000_000,
                "metadata": {"k8sPodNamespace": "crash", "k8sPodName": "from-upstream"},
            }
        ],
    }  # fmt: skip
    return json.dumps(doc).encode()


def test_missing_checkpoint_is_a_first_start(node: LocalNode) -> None:
    log = restart_with(node, None)
    assert any(e.startswith("no checkpoint: first start") for e in events(log))
    assert daemon_pods(node) == {}
    assert add(node, Ledger(COOLDOWN_S), "after-missing") is not None


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("empty", b"", "empty checkpoint file"),
        ("truncated", b'{"version":"vpc-cni-ipam/1","allocations":[{"networkN', "not valid JSON"),
    ],
)
def test_empty_or_truncated_checkpoint_is_moved_aside_and_quarantines(
    node: LocalNode, name: str, content: bytes, error: str
) -> None:
    before = instance_addresses(node)
    log = restart_with(node, content)
    lines = [json.loads(x) for x in log.splitlines() if "CHECKPOINT UNREADABLE" in x]
    assert lines and error in lines[0]["error"], log
    assert os.path.exists(lines[0]["moved_to"])
    assert pathlib.Path(lines[0]["moved_to"]).read_bytes() == content  # kept, never overwritten
    address = add_retrying(node, f"after-{name}")
    assert address is not None and address not in before, "a quarantined address was reused"


def test_newer_version_is_moved_aside_and_quarantines(node: LocalNode) -> None:
    before = instance_addresses(node)
    content = json.dumps({"version": "vpc-cni-ipam/2", "allocations": []}).encode()
    log = restart_with(node, content)
    lines = [json.loads(x) for x in log.splitlines() if "CHECKPOINT FROM A NEWER VERSION" in x]
    assert lines and lines[0]["version"] == "vpc-cni-ipam/2", log
    assert pathlib.Path(lines[0]["moved_to"]).read_bytes() == content
    address = add_retrying(node, "after-future")
    assert address is not None and address not in before


def test_upstream_checkpoint_restores_and_cools_the_rest(node: LocalNode) -> None:
    before = sorted(instance_addresses(node))
    assert len(before) >= 2
    kept = before[0]
    log = restart_with(node, upstream_document(kept))
    assert any(e.startswith("checkpoint from the upstream daemon") for e in events(log)), log
    assert daemon_pods(node).get("from-upstream") == kept
    address = add_retrying(node, "after-upstream")
    assert address is not None and address not in before, "release times unknown: must cool"
