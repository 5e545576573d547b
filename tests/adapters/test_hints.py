"""The netns hints side file: stale temporary files of a killed process are removed."""

from __future__ import annotations

import os
import pathlib

from adapters.ipamd.hints import NetnsHints


def test_load_removes_temp_files_a_killed_process_left(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ipam.json.netns"
    path.write_text('{"aws-cni/c1/eth0": "/var/run/netns/cni-1"}')
    stale = tmp_path / "ipam.json.netns.tmp-99999999"
    stale.write_text("{half")
    other = tmp_path / "ipam.json.tmp-1"  # not ours: the checkpoint store's business
    other.write_text("x")
    hints = NetnsHints(str(path))
    hints.load()
    assert sorted(os.listdir(tmp_path)) == ["ipam.json.netns", "ipam.json.tmp-1"]
