"""The CI short run of the fuzz targets (``benchmarks/fuzz_targets.py``): a few thousand
deterministic mutants per target, each under the hang bound, and no contract violation.
The deep run (a million per target, atheris) is ``benchmarks/reliability_fuzz.py``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import fuzz_targets as ft
from ipamcore.errors import CheckpointError

SHORT_RUN = int(os.environ.get("FUZZ_SHORT_INPUTS", "3000"))
HANG_S = 5.0  # generous: the machine is shared; a real hang never ends


@pytest.fixture(params=sorted(ft.TARGETS))
def target(request: pytest.FixtureRequest) -> Iterator[Any]:
    t = ft.TARGETS[request.param]()
    yield t
    t.close()


def test_short_run_finds_no_violation(target: Any) -> None:
    findings = []
    for data in ft.inputs(target.name, SHORT_RUN, seed=1):
        finding = ft.run_one(target, data, HANG_S)
        if finding is not None:
            findings.append((finding, data[:200]))
    assert findings == []


def test_seeds_reach_the_success_paths() -> None:
    """The seeds are not all rejected: the short run exercises the accepting paths too."""
    plugin = ft.PluginTarget()
    try:
        for seed in ft.plugin_seeds()[:2]:
            environ, reply, stdin = ft.split_plugin_input(seed)
            run = ft._SandboxedPlugin(environ, stdin, reply, plugin.sandbox)
            assert run.run() == 0
            assert '"ips"' in run.stdout.getvalue()
    finally:
        plugin.close()
    assert ft.checkpoint_seeds()[0]  # decodes
    ft.CheckpointTarget()(ft.checkpoint_seeds()[0])


def test_a_pending_del_is_written_into_the_sandbox_only() -> None:
    plugin = ft.PluginTarget()
    try:
        seed = ft.plugin_seeds()[5]  # DEL, daemon unavailable, prevResult names the veth
        environ, reply, stdin = ft.split_plugin_input(seed)
        run = ft._SandboxedPlugin(environ, stdin, reply, plugin.sandbox)
        assert run.run() == 0
        names = os.listdir(plugin.sandbox)
        assert len(names) == 1 and names[0].startswith("del-")
        assert run.deleted_links == ["eni1a2b3c4d5e6"]
    finally:
        plugin.close()


def test_contract_checks_can_fail() -> None:
    """run_one reports an unexpected exception, a violation and a hang."""

    def crashes(_data: bytes) -> None:
        raise OverflowError("integer division result too large for a float")

    def breaks(_data: bytes) -> None:
        raise ft.Violation("two replies")

    def spins(_data: bytes) -> None:
        while True:
            pass

    assert ft.run_one(crashes, b"", 1.0) == (
        "unhandled OverflowError: integer division result too large for a float"
    )
    assert ft.run_one(breaks, b"", 1.0) == "violation: two replies"
    assert ft.run_one(spins, b"", 0.05) == "hang: more than 0.05s"


def test_checkpoint_target_flags_an_unclear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def decode(_data: bytes) -> None:
        raise CheckpointError("x" * 5000)

    monkeypatch.setattr(ft.ckpt, "decode", decode)
    assert (ft.run_one(ft.CheckpointTarget(), b"{}", 1.0) or "").startswith(
        "violation: unclear checkpoint error"
    )


def test_found_by_fuzzing_checkpoint_timestamp_overflow() -> None:
    """A 400-digit timestamp raised OverflowError from the decoder (finding, now fixed)."""
    doc = (
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"c","ipv4":"10.0.0.1",'
        b'"allocationTimestamp":' + b"9" * 400 + b"}]}"
    )
    with pytest.raises(CheckpointError, match="allocationTimestamp"):
        ft.ckpt.decode(doc)
    assert ft.run_one(ft.CheckpointTarget(), doc, 1.0) is None


def test_found_by_fuzzing_huge_checkpoint_version_message() -> None:
    """An unknown 100 kB version string was echoed whole into the error (finding, fixed)."""
    doc = b'{"version":"' + b"x" * 100_000 + b'"}'
    with pytest.raises(CheckpointError) as info:
        ft.ckpt.decode(doc)
    assert len(str(info.value)) < 200


def test_server_oversized_and_stalled_frames() -> None:
    server = ft.ServerTarget()
    try:
        for data in (b"\x02" + b"x" * 100, b"\x04" + b'{"version":1', b"\x00", b"\x03a\x1fb"):
            assert ft.run_one(server, data, HANG_S) is None
    finally:
        server.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ipv6", "2001:db8:;5"),
        ("ipv4", "10.0.1.x"),
        ("ipv4", "2001:db8::5"),
        ("ipv6", "fe80::1%eth0"),
    ],
)
def test_found_by_fuzzing_malformed_address_crashed_restore(field: str, value: str) -> None:
    """An allocation with a malformed address decoded, then ``Ipam.restore`` raised
    ValueError at start (finding, fixed: the decoder checks addresses)."""
    alloc = {"containerID": "c", "ipv4": "", "ipv6": "", field: value}
    doc = {"version": "vpc-cni-ipam/1", "allocations": [alloc]}
    with pytest.raises(CheckpointError, match=field):
        ft.ckpt.decode(json.dumps(doc))
    assert ft.run_one(ft.CheckpointTarget(), json.dumps(doc).encode(), 1.0) is None


def test_checkpoint_addresses_are_canonical() -> None:
    doc = {
        "version": "vpc-cni-ipam/1",
        "allocations": [{"containerID": "c", "ipv6": "2001:DB8:0::0005"}],
        "releasedAddresses": [{"address": "10.0.1.9", "releasedAt": 1}],
    }
    decoded = ft.ckpt.decode(json.dumps(doc))
    assert decoded.allocations[0].ipv6 == "2001:db8::5"
    with pytest.raises(CheckpointError, match="'address'"):
        ft.ckpt.decode(json.dumps({**doc, "releasedAddresses": [{"address": "bogus"}]}))
