"""Issue 16 item 5: the daemon (in-process, real checkpoint file, a fake cloud that outlives
it) rewrites an upstream checkpoint keeping what it does not use: unknown fields of an
allocation and of its metadata, and the exact nanosecond ``allocationTimestamp``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.adapters.harness import World, add_request, call, logs


async def test_an_upstream_checkpoint_keeps_unknown_fields_and_exact_timestamps(
    world: World,
) -> None:
    d = world.daemon()
    await d.start()
    assert (await call(world.socket_path, add_request(1))).ok
    await d.stop()
    path = Path(world.checkpoint_path)
    doc = json.loads(path.read_bytes())
    del doc["releasedAddresses"]  # as upstream writes it
    (entry,) = doc["allocations"]
    entry.pop("netns", None)
    entry["allocationTimestamp"] = entry["allocationTimestamp"] // 10**9 * 10**9 + 123456789
    entry["metadata"]["interfacesCount"] = 1
    entry["fromANewerUpstream"] = [1, {"x": None}]
    path.write_text(json.dumps(doc))

    d2 = world.daemon()
    await d2.start()  # restores, then writes the checkpoint
    try:
        assert "checkpoint from the upstream daemon" in logs(world)
        (rewritten,) = json.loads(path.read_bytes())["allocations"]
        assert rewritten["allocationTimestamp"] == entry["allocationTimestamp"]
        assert rewritten["metadata"]["interfacesCount"] == 1
        assert rewritten["fromANewerUpstream"] == [1, {"x": None}]
        assert (await call(world.socket_path, add_request(2))).ok  # later saves keep them
        (kept,) = [
            a for a in json.loads(path.read_bytes())["allocations"] if a["containerID"] == "c0001"
        ]
        assert kept["allocationTimestamp"] == entry["allocationTimestamp"]
        assert kept["metadata"]["interfacesCount"] == 1
    finally:
        await d2.stop()
