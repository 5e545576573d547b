"""A DEL acknowledged before its journal record was written or synced, then a crash.

The journaled store acknowledges a commit that only releases (DEL, GC, an ADD undone)
at once: it holds the change in memory until the next commit that adds (one record and
one ``fdatasync`` for both) or :attr:`JournalCheckpointStore.hold_releases_s` later (a
record in the page cache, not synced); see :mod:`backends.checkpoint.journal`. So a SIGKILL
or a power cut right after the DEL loses it. Here the crash is made exact: after the DEL's
acknowledgement the state directory is copied as the disk holds it (the journal's bytes
past :attr:`JournalCheckpointStore.synced_to` zeroed), and the daemon restarted on that
copy. The pod is gone (its network namespace removed, as the runtime does after a DEL):
the restart check must release the allocation the lost DEL left, and no address may be
held twice, then or after more ADDs.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator

import pytest

from adapters.ipamd.daemon import Daemon
from backends.checkpoint import JournalCheckpointStore
from tests.adapters.harness import World, add_request, call, del_request, logs


@pytest.fixture
def world() -> Iterator[World]:
    w = World.create()
    try:
        yield w
    finally:
        w.cleanup()


def journaled(world: World) -> tuple[Daemon, JournalCheckpointStore]:
    settings = world.settings(IP_COOLDOWN_PERIOD="30")
    store = JournalCheckpointStore(
        settings.checkpoint_path, clock=world.clock.now, hold_releases_s=0.05
    )  # releases held (off by default): the power cut below loses the DEL
    return world.daemon(settings=settings, store=store, IP_COOLDOWN_PERIOD="30"), store


def power_cut_copy(world: World, store: JournalCheckpointStore) -> dict[str, bytes]:
    """The checkpoint files as the disk holds them: the journal's unsynced bytes lost."""
    files = {}
    for name in ("ipam.json", "ipam.json.journal"):
        with open(os.path.join(world.state_dir, name), "rb") as f:
            files[name] = f.read()
    journal = bytearray(files["ipam.json.journal"])
    journal[store.synced_to :] = bytes(len(journal) - store.synced_to)
    files["ipam.json.journal"] = bytes(journal)
    return files


def held(daemon: Daemon) -> list[str]:
    return [a.ipv4 for a in daemon.executor.core.allocations()]


async def test_a_del_lost_in_a_power_cut_is_released_by_the_restart_check(world: World) -> None:
    d, store = journaled(world)
    await d.start()
    ips = {}
    try:
        for n in (1, 2):
            reply = await call(world.socket_path, add_request(n))
            assert reply.ok
            ips[n] = reply.result["ipv4"]
        syncs, off = store.syncs, store._off
        reply = await call(world.socket_path, del_request(1))
        assert reply.ok
        assert store.syncs == syncs, "the DEL was acknowledged without an fdatasync"
        assert store._off == off, "nor written: it is held in memory"
        assert store._state is not None and store._state.holds_changes
        disk = power_cut_copy(world, store)  # what a SIGKILL leaves, or a power cut
    finally:
        await d.stop()
    # The power cut: the files as the disk held them; pod 1's sandbox is gone (the runtime
    # deleted it after the acknowledged DEL).
    for name, data in disk.items():
        with open(os.path.join(world.state_dir, name), "wb") as f:
            f.write(data)
    world.datapath.remove_netns(add_request(1).netns)

    probe = JournalCheckpointStore(os.path.join(world.state_dir, "ipam.json"))
    restored = await probe.load()
    probe.close()
    assert restored is not None
    assert {a.ipv4 for a in restored.allocations} == {ips[1], ips[2]}, "the DEL was lost"

    d2, _store2 = journaled(world)
    await d2.start()
    try:
        assert held(d2) == [ips[2]], "the restart check released the lost DEL's allocation"
        assert "allocation not restored" in logs(world)
        got = []
        for n in range(3, 12):
            reply = await call(world.socket_path, add_request(n))
            assert reply.ok
            got.append(reply.result["ipv4"])
        everything = held(d2)
        assert [ip for ip, k in collections.Counter(everything).items() if k > 1] == []
        assert ips[2] not in got
        assert ips[1] not in got, "still cooling: released at the restart"
    finally:
        await d2.stop()


async def test_the_next_add_makes_an_earlier_unsynced_del_durable(world: World) -> None:
    d, store = journaled(world)
    await d.start()
    try:
        ip1 = (await call(world.socket_path, add_request(1))).result["ipv4"]
        assert (await call(world.socket_path, del_request(1))).ok
        assert (await call(world.socket_path, add_request(2))).ok
        disk = power_cut_copy(world, store)
    finally:
        await d.stop()
    for name, data in disk.items():
        with open(os.path.join(world.state_dir, name), "wb") as f:
            f.write(data)
    probe = JournalCheckpointStore(os.path.join(world.state_dir, "ipam.json"))
    restored = await probe.load()
    probe.close()
    assert restored is not None
    assert ip1 not in {a.ipv4 for a in restored.allocations}
    assert [a.key.container_id for a in restored.allocations] == [add_request(2).container_id]
