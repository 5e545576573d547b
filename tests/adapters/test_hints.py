"""The netns side file of earlier versions: read at start, stale temporary files removed."""

from __future__ import annotations

import os
import pathlib

from adapters.ipamd.hints import NetnsHints
from ipamcore.model import AllocationKey


def test_load_legacy_removes_temp_files_a_killed_process_left(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ipam.json.netns"
    path.write_text('{"aws-cni/c1/eth0": "/var/run/netns/cni-1"}')
    stale = tmp_path / "ipam.json.netns.tmp-99999999"
    stale.write_text("{half")
    other = tmp_path / "ipam.json.tmp-1"  # not ours: the checkpoint store's business
    other.write_text("x")
    hints = NetnsHints(str(path))
    assert hints.load_legacy()
    assert sorted(os.listdir(tmp_path)) == ["ipam.json.netns", "ipam.json.tmp-1"]
    assert hints.get(AllocationKey("aws-cni", "c1", "eth0")) == "/var/run/netns/cni-1"
    hints.drop_legacy_file()
    assert sorted(os.listdir(tmp_path)) == ["ipam.json.tmp-1"]
    hints.drop_legacy_file()  # idempotent


def test_no_side_file_means_no_hints(tmp_path: pathlib.Path) -> None:
    hints = NetnsHints(str(tmp_path / "ipam.json.netns"))
    assert not hints.load_legacy()
    assert hints.pairs() == ()


def test_paths_from_a_checkpoint_win_and_bad_ones_are_dropped(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ipam.json.netns"
    path.write_text('{"aws-cni/c1/eth0": "/var/run/netns/old", "a/b": "/var/run/netns/x"}')
    hints = NetnsHints(str(path))
    hints.load_legacy()
    c1, c2 = AllocationKey("aws-cni", "c1", "eth0"), AllocationKey("aws-cni", "c2", "eth0")
    hints.adopt([(c1, "/var/run/netns/new"), (c2, "/etc/shadow")])
    assert hints.pairs() == ((c1, "/var/run/netns/new"),)
    hints.retain(set())
    assert hints.pairs() == ()
