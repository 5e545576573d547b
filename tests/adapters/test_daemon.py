"""The daemon in-process: FakeCloud, fake datapath, a real checkpoint file, virtual time;
requests through the real socket with the protocol's own client."""

from __future__ import annotations

import asyncio
import json
import os

from adapters import pending_dels as pd
from adapters import protocol as p
from adapters.ipamd.daemon import Daemon
from backends.checkpoint import JsonFileCheckpointStore, read_checkpoint_file
from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import FailureKind
from ipamcore.model import AllocationKey
from tests.adapters.harness import (
    NETNS,
    World,
    add_request,
    call,
    del_request,
    eventually,
    logs,
    until,
)


def saved_ips(world: World) -> set[str]:
    cp = read_checkpoint_file(world.checkpoint_path)
    assert cp is not None
    return {a.ipv4 for a in cp.allocations if a.ipv4}


async def test_add_then_del(world: World, daemon: Daemon) -> None:
    reply = await call(world.socket_path, add_request(1))
    assert reply.ok, reply
    ip = reply.result["ipv4"]
    result = p.AddResult.from_dict(reply.result)
    assert result.host_veth.startswith("eni") and result.if_name == "eth0"
    assert ip in saved_ips(world)  # durable before the reply
    assert result.host_veth in world.datapath.links
    on_cloud = {a for e in world.cloud.enis_of(world.instance_id) for a in e.ipv4_addresses}
    assert ip in on_cloud

    reply = await call(world.socket_path, del_request(1))
    assert reply.ok and reply.result["released"] is True
    assert ip not in saved_ips(world)
    assert result.host_veth not in world.datapath.links
    assert daemon.executor.stats().assigned == 0


async def test_add_is_idempotent(world: World, daemon: Daemon) -> None:
    first = await call(world.socket_path, add_request(1))
    second = await call(world.socket_path, add_request(1))
    assert first.ok and second.ok and first.result == second.result
    assert world.datapath.calls.count("setup_pod") == 1  # check_pod found it all in place
    assert daemon.executor.stats().assigned == 1


async def test_add_rebuilds_missing_datapath_pieces(world: World, daemon: Daemon) -> None:
    first = await call(world.socket_path, add_request(1))
    world.datapath._del_host_link(first.result["host_veth"])
    second = await call(world.socket_path, add_request(1))
    assert second.ok and second.result["ipv4"] == first.result["ipv4"]
    assert first.result["host_veth"] in world.datapath.links


async def test_del_of_unknown_key_succeeds(world: World, daemon: Daemon) -> None:
    reply = await call(world.socket_path, del_request(42))
    assert reply.ok and reply.result["released"] is False


async def test_datapath_failure_leaks_nothing(world: World, daemon: Daemon) -> None:
    world.datapath.fail_next("setup_pod", "rules")
    reply = await call(world.socket_path, add_request(1))
    assert not reply.ok and reply.error_code == p.ERR_DATAPATH_FAILED
    assert daemon.executor.core.allocations() == []
    assert saved_ips(world) == set()
    assert not [n for n, link in world.datapath.links.items() if link.peer]
    assert (await call(world.socket_path, add_request(2))).ok


async def test_check(world: World, daemon: Daemon) -> None:
    check = add_request(1)
    check.op = p.OP_CHECK
    assert (await call(world.socket_path, check)).error_code == p.ERR_NOT_FOUND
    add = await call(world.socket_path, add_request(1))
    assert (await call(world.socket_path, check)).ok
    world.datapath._del_host_link(add.result["host_veth"])
    reply = await call(world.socket_path, check)
    assert reply.error_code == p.ERR_DATAPATH_FAILED and "host veth" in reply.error_message


async def test_gc_releases_attachments_not_listed(world: World, daemon: Daemon) -> None:
    for n in (1, 2, 3):
        assert (await call(world.socket_path, add_request(n))).ok
    gc = p.Request(p.OP_GC, network_name="aws-cni", valid_attachments=[("c0002", "eth0")])
    reply = await call(world.socket_path, gc)
    assert reply.ok and reply.result["released"] == 2
    assert [a.key.container_id for a in daemon.executor.core.allocations()] == ["c0002"]
    assert len(saved_ips(world)) == 1


async def test_status(world: World, daemon: Daemon) -> None:
    reply = await call(world.socket_path, p.Request(p.OP_STATUS, network_name="aws-cni"))
    assert reply.ok and reply.result["ready"] is True


async def test_pool_short_kicks_policy_and_add_succeeds(world: World) -> None:
    d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="30")
    await d.start()
    try:
        assert d.executor.stats().total == 0  # no warm pool: the ADD must kick the policy
        world.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.THROTTLED)
        task = asyncio.create_task(call(world.socket_path, add_request(1)))
        await eventually(lambda: d.executor.calls.total("AssignPrivateIpAddresses") >= 1)
        await eventually(lambda: d.executor.effects_in_flight == 0)
        assert not task.done()  # throttled: growth paused, the ADD waits
        await until(task.done, world.clock, step=1.0)  # policy retries after the pause
        reply = task.result()
        assert reply.ok, reply
        assert d.executor.metrics.no_ip._value.get() == 1
    finally:
        await d.stop()


async def test_pool_empty_after_the_wait(world: World) -> None:
    d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="3")
    await d.start()
    try:
        world.cloud.set_unreachable()
        task = asyncio.create_task(call(world.socket_path, add_request(1)))
        await until(task.done, world.clock, step=1.0)
        assert task.result().error_code == p.ERR_POOL_EMPTY
        assert d.executor.core.allocations() == []
    finally:
        await d.stop()


async def test_netns_paths_are_written_in_the_checkpoint(world: World, daemon: Daemon) -> None:
    reply = await call(world.socket_path, add_request(1))
    assert reply.ok
    with open(world.checkpoint_path, encoding="utf-8") as f:
        (entry,) = json.load(f)["allocations"]
    assert entry["containerID"] == add_request(1).container_id
    assert entry["netns"] == add_request(1).netns  # durable with the allocation, no side file
    assert not os.path.exists(world.checkpoint_path + ".netns")
    assert (await call(world.socket_path, del_request(1))).ok
    with open(world.checkpoint_path, encoding="utf-8") as f:
        assert json.load(f)["allocations"] == []


async def test_an_earlier_versions_side_file_is_read_then_removed(world: World) -> None:
    """A node upgraded from a version that kept the paths in ``ipam.json.netns``: the restart
    uses them (a pod gone while the daemon was down is dropped), writes them into the
    checkpoint and removes the side file."""
    d = world.daemon()
    await d.start()
    ips = {n: (await call(world.socket_path, add_request(n))).result["ipv4"] for n in (1, 2)}
    await d.stop()
    with open(world.checkpoint_path, encoding="utf-8") as f:
        doc = json.load(f)
    for entry in doc["allocations"]:  # as the earlier version wrote it
        del entry["netns"]
    with open(world.checkpoint_path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    side = world.checkpoint_path + ".netns"
    with open(side, "w", encoding="utf-8") as f:
        json.dump({f"aws-cni/{add_request(n).container_id}/eth0": NETNS.format(n)
                   for n in (1, 2)}, f)  # fmt: skip
    world.datapath.remove_netns(add_request(2).netns)

    d2 = world.daemon()
    await d2.start()
    try:
        assert saved_ips(world) == {ips[1]}
        assert not os.path.exists(side)
        with open(world.checkpoint_path, encoding="utf-8") as f:
            (entry,) = json.load(f)["allocations"]
        assert entry["netns"] == NETNS.format(1)
    finally:
        await d2.stop()


async def test_restart_restores_allocations_and_drops_gone_pods(world: World) -> None:
    d = world.daemon()
    await d.start()
    ips = {}
    for n in (1, 2, 3):
        ips[n] = (await call(world.socket_path, add_request(n))).result["ipv4"]
    await d.stop()
    world.datapath.remove_netns(add_request(2).netns)  # pod 2 died while the daemon was down

    d2 = world.daemon()
    await d2.start()
    try:
        kept = {a.ipv4 for a in d2.executor.core.allocations()}
        assert kept == {ips[1], ips[3]}
        assert "allocation not restored" in logs(world)
        assert saved_ips(world) == {ips[1], ips[3]}
        again = await call(world.socket_path, add_request(1))
        assert again.result["ipv4"] == ips[1]
    finally:
        await d2.stop()


async def test_pending_dels_are_processed_at_start(world: World) -> None:
    d = world.daemon()
    await d.start()
    ip1 = (await call(world.socket_path, add_request(1))).result["ipv4"]
    ip2 = (await call(world.socket_path, add_request(2))).result["ipv4"]
    await d.stop()
    pending = d.settings.pending_del_dir
    record = pd.write_pending_del(pending, del_request(1))

    d2 = world.daemon()
    await d2.start()
    try:
        assert not os.path.exists(record)
        assert {a.ipv4 for a in d2.executor.core.allocations()} == {ip2}
        assert saved_ips(world) == {ip2} and ip1 != ip2
    finally:
        await d2.stop()


async def test_a_pending_del_recorded_after_the_start_scan_is_not_left_for_the_next_restart(
    world: World,
) -> None:
    """A DEL the plugin recorded once the start had read the records (the daemon was still
    starting, or too busy to answer) is picked up by the rescan after the daemon listens,
    then every reconcile interval, instead of waiting for the next restart."""
    d = world.daemon()
    await d.start()
    try:
        ip1 = (await call(world.socket_path, add_request(1))).result["ipv4"]
        ip2 = (await call(world.socket_path, add_request(2))).result["ipv4"]
        record = pd.write_pending_del(d.settings.pending_del_dir, del_request(1))
        key1 = AllocationKey("aws-cni", "c0001", "eth0")
        await until(lambda: d.executor.core.get(key1) is None, world.clock, step=10.0, limit=12)
        await eventually(lambda: not os.path.exists(record))
        assert {a.ipv4 for a in d.executor.core.allocations()} == {ip2}
        assert saved_ips(world) == {ip2} and ip1 != ip2
    finally:
        await d.stop()


async def test_corrupt_checkpoint_quarantines_every_address(world: World) -> None:
    d = world.daemon()
    await d.start()
    used = (await call(world.socket_path, add_request(1))).result["ipv4"]
    before = {a for e in world.cloud.enis_of(world.instance_id) for a in e.ipv4_addresses}
    await d.stop()
    with open(world.checkpoint_path, "w") as f:
        f.write('{"version": "vpc-cni-ipam/1", "allocations": [')  # truncated

    d2 = world.daemon()
    await d2.start()
    try:
        assert "CHECKPOINT UNREADABLE" in logs(world)
        assert any(n.startswith("ipam.json.corrupt-") for n in os.listdir(world.state_dir))
        stats = d2.executor.stats()
        assert stats.assigned == 0 and stats.cooling == len(before) and used in before
        reply = await call(world.socket_path, add_request(9))
        assert reply.ok and reply.result["ipv4"] not in before
    finally:
        await d2.stop()


async def test_garbage_costs_nothing(world: World, daemon: Daemon) -> None:
    from tests.adapters.harness import raw_call

    cases = {
        b"this is not json\n": p.ERR_BAD_REQUEST,
        b'{"version": 1, "op": "add"': p.ERR_BAD_REQUEST,  # truncated: EOF before newline
        b"x" * (p.MAX_MESSAGE_SIZE + 10): p.ERR_TOO_LARGE,
        b'{"version": 99, "op": "add"}\n': p.ERR_UNSUPPORTED_VERSION,
        b'{"version": 1, "op": "add", "container_id": "../etc"}\n': p.ERR_BAD_REQUEST,
        b"\xff\xfe\n": p.ERR_BAD_REQUEST,
        b"": p.ERR_BAD_REQUEST,
    }
    for data, code in cases.items():
        reply = p.decode_reply(await raw_call(world.socket_path, data))
        assert not reply.ok and reply.error_code == code, (data[:40], reply)
    assert daemon.server.rejected == len(cases)
    assert daemon.executor.core.allocations() == []
    assert (await call(world.socket_path, add_request(1))).ok


async def test_group_commit_shares_checkpoint_writes() -> None:
    world = World.create("c5.4xlarge")
    d = world.daemon(WARM_IP_TARGET="40")
    await d.start()
    try:
        await until(lambda: d.executor.stats().available >= 40, world.clock)
        saves_before = d.executor.node.saves
        n = 32
        replies = await asyncio.gather(*(call(world.socket_path, add_request(i)) for i in range(n)))
        assert all(r.ok for r in replies)
        assert len({r.result["ipv4"] for r in replies}) == n
        saves = d.executor.node.saves - saves_before
        assert 1 <= saves < n, saves
        assert len(saved_ips(world)) == n
        assert "setup_eni" in world.datapath.calls  # the second ENI was wired
    finally:
        await d.stop()
        world.cleanup()


async def test_reconcile_picks_up_out_of_band_changes(world: World, daemon: Daemon) -> None:
    primary = world.cloud.enis_of(world.instance_id)[0]
    ex = daemon.executor
    await until(lambda: ex.stats().total > 0 and ex.commands_in_flight == 0, world.clock)
    total = ex.stats().total  # the warm pool as the first policy pass made it
    world.cloud.add_address(primary.eni_id, "10.0.9.9")
    await world.clock.advance(61)
    await until(lambda: daemon.executor.stats().total == total + 1, world.clock)
    assert daemon.executor.metrics.reconcile.labels("eni")._value.get() >= 1


async def test_leaked_enis_are_freed(world: World) -> None:
    d = world.daemon(IPAMD_LEAKED_ENI_INTERVAL_SECONDS="600")
    await d.start()
    try:
        leaked = world.cloud.create_detached_eni(world.instance_id)
        await until(lambda: leaked not in world.cloud.vpc.enis, world.clock, step=60.0, limit=20)
        assert "leaked ENI freed" in logs(world)
    finally:
        await d.stop()


async def test_socket_is_private(world: World, daemon: Daemon) -> None:
    assert os.stat(world.socket_path).st_mode & 0o777 == 0o600
    assert os.stat(world.socket_path).st_uid == os.getuid()


async def test_ready_is_logged_as_json(world: World, daemon: Daemon) -> None:
    events = [json.loads(line)["event"] for line in logs(world).splitlines()]
    assert "ready" in events


async def test_a_new_eni_is_used_only_once_instance_metadata_shows_it(world: World) -> None:
    world.cloud.metadata_lag = 2.0  # virtual seconds, like IMDS after an attach
    d = world.daemon(WARM_ENI_TARGET="2")  # m5.large: fill the primary and create one ENI
    await d.start()
    try:
        began = world.clock.now()
        await eventually(lambda: d.executor.calls.total("ModifyNetworkInterfaceAttribute") == 1)
        await world.clock.advance(1.0)
        await asyncio.sleep(0.01)
        assert d.executor.stats().enis == 1  # created and attached, but not visible yet
        assert (d.executor.stats().pending, d.executor.stats().in_flight) == (9, 1)  # still coming
        await until(lambda: d.executor.stats().enis == 2, world.clock, step=0.25)
        assert 2.0 <= world.clock.now() - began <= 2.5
        assert "not in instance metadata" not in logs(world)
    finally:
        await d.stop()


def key_of(n: int) -> AllocationKey:
    return AllocationKey("aws-cni", f"c{n:04d}", "eth0")


class FlakyStore(JsonFileCheckpointStore):
    """The real checkpoint file, whose writes fail while ``full`` (a full disk)."""

    full = False

    async def save(self, checkpoint: Checkpoint) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        await super().save(checkpoint)


async def test_a_full_disk_never_takes_an_address_from_a_live_pod(world: World) -> None:
    """Issue 16 item 7: a repeated ADD or a DEL whose checkpoint write fails leaves the pod
    its address (and its network, for the ADD); memory, replies and the file agree."""
    settings = world.settings()
    store = FlakyStore(settings.checkpoint_path, clock=world.clock.now)
    d = world.daemon(settings=settings, store=store)
    await d.start()
    try:
        first = await call(world.socket_path, add_request(1))
        assert first.ok
        ip, veth = first.result["ipv4"], first.result["host_veth"]
        store.full = True
        again = await call(world.socket_path, add_request(1))
        assert again.error_code == p.ERR_INTERNAL
        assert veth in world.datapath.links and saved_ips(world) == {ip}
        assert [a.ipv4 for a in d.executor.core.allocations()] == [ip]
        gone = await call(world.socket_path, del_request(1))
        assert gone.error_code == p.ERR_INTERNAL
        assert saved_ips(world) == {ip} and d.executor.core.get(key_of(1)) is not None
        store.full = False
        retry = await call(world.socket_path, del_request(1))
        assert retry.ok and retry.result == {"released": True, "ipv4": ip}
        assert saved_ips(world) == set() and d.executor.core.allocations() == []
    finally:
        await d.stop()


async def test_wall_clock_steps_move_no_deadline_or_cooldown(world: World) -> None:
    """Issue 16 item 10: deadlines and cooldowns run on the monotonic clock; wall time is only
    what the checkpoint file holds, converted when written and read."""
    d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="5")
    await d.start()
    try:
        world.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.THROTTLED)
        waiting = asyncio.create_task(call(world.socket_path, add_request(1)))
        await eventually(lambda: d.executor.node.waiting == 1)
        world.clock.step_wall(-3600.0)  # back an hour: the ADD's 5 s still end in 5 s
        await until(waiting.done, world.clock, step=1.0, limit=8)
    finally:
        await d.stop()
    d = world.daemon(WARM_IP_TARGET="3")
    await d.start()
    try:
        await until(lambda: d.executor.stats().available >= 3, world.clock)
        added = await call(world.socket_path, add_request(2))
        assert (await call(world.socket_path, del_request(2))).ok
        world.clock.step_wall(3600.0)  # forward an hour: the address still cools 30 s
        assert d.executor.stats().cooling == 1
        released = dict(read_checkpoint_file(world.checkpoint_path).released_at)  # type: ignore[union-attr]
        wall = released[added.result["ipv4"]]
        assert abs(wall - (world.clock.now() - 3600.0)) < 1.0  # written before the step
        assert (await call(world.socket_path, add_request(3))).ok
        saved = read_checkpoint_file(world.checkpoint_path)
        assert saved is not None and abs(saved.allocations[0].allocated_at - world.clock.now()) < 1
    finally:
        await d.stop()


async def test_an_add_whose_client_left_keeps_no_address(world: World) -> None:
    """Issue 16 item 14: the plugin gave up (its socket closed) while its ADD waited for an
    address; the address that then comes goes to nobody's pod."""
    d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="30")
    await d.start()
    try:
        n = 100
        await eventually(lambda: d.executor.effects_in_flight == 0)
        while d.executor.stats().available:  # whatever the start topped up: taken
            assert (await call(world.socket_path, add_request(n))).ok
            n += 1
        world.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.THROTTLED)
        _, writer = await asyncio.open_unix_connection(world.socket_path)
        writer.write(p.encode_request(add_request(1)))
        await writer.drain()
        await eventually(lambda: d.executor.node.waiting == 1)
        writer.close()
        await eventually(lambda: d.executor.node.waiting == 0)
        assert d.executor.core.get(key_of(1)) is None
        second = asyncio.create_task(call(world.socket_path, add_request(2)))
        await until(second.done, world.clock, step=1.0)
        assert second.result().ok
        assert d.executor.core.get(key_of(1)) is None and d.executor.core.get(key_of(2))
    finally:
        await d.stop()


async def test_the_flight_record_replays_and_explains_a_wait(world: World) -> None:
    """Issue 17 section 4: the daemon records every node input; ``ipamctl replay`` gives
    every command again and ``ipamctl explain`` tells why a pod waited."""
    import io

    from adapters.ipamctl.main import main as ipamctl

    world.cloud.metadata_lag = 2.0
    d = world.daemon(WARM_ENI_TARGET="0", IPAMD_ADD_WAIT_SECONDS="30")
    await d.start()
    try:
        first = asyncio.create_task(call(world.socket_path, add_request(1)))
        await until(first.done, world.clock, step=0.5)
        assert first.result().ok
        for n in range(2, 12):  # past the primary ENI: a new ENI, after metadata shows it
            task = asyncio.create_task(call(world.socket_path, add_request(n)))
            await until(task.done, world.clock, step=0.5)
            assert task.result().ok
        assert (await call(world.socket_path, del_request(3))).ok
    finally:
        await d.stop()
    log = os.path.join(world.state_dir, "flight.log")
    out = io.StringIO()
    assert ipamctl(["replay", log], out) == 0, out.getvalue()
    assert "commands reproduced bit for bit" in out.getvalue()
    stories = []
    for n in range(1, 12):
        out = io.StringIO()
        assert ipamctl(["explain", "--log", log, "--pod", f"default/pod-{n}"], out) == 0
        stories.append(out.getvalue())
    assert all("ADD aws-cni/" in story and "reply: 10." in story for story in stories)
    out = io.StringIO()  # what if the node had kept 5 addresses warm: no pod waits
    assert ipamctl(["replay", log, "--what-if", "WARM_IP_TARGET=5"], out) == 0, out.getvalue()
    assert "WARM_IP_TARGET=5" in out.getvalue() and "address wait" in out.getvalue()
    out = io.StringIO()
    eni_id = world.cloud.enis_of(world.instance_id)[1].eni_id
    assert ipamctl(["explain", "--log", log, "--eni", eni_id], out) == 0
    assert "created and attached" in out.getvalue()
    assert "instance metadata lists" in out.getvalue()
