"""The node machine alone: inputs in, commands out, no executor (a test plays its part).

Each test drives :class:`ipamcore.node.Node` with a small synchronous driver that answers the
commands it chooses to, at the times it chooses, so the orderings the daemon and the
simulator can produce are all reachable and nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ipamcore.checkpoint import Checkpoint
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni
from ipamcore.errors import FailureKind
from ipamcore.events import AddressesAssigned, EffectFailed, EniCreated
from ipamcore.model import Allocation, AllocationKey, InstanceIdentity, ObservedEni, PodRef
from ipamcore.node import Node, NodeConfig, replies
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node.config import LEAKED_ENI_AGE_S

T0 = 1_700_000_000.0
IDENTITY = InstanceIdentity("i-1", "m5.large", "us-east-1a", "02:00:00:00:00:01")


def eni(n: int, addresses: tuple[str, ...] = (), device_index: int | None = None) -> ObservedEni:
    return ObservedEni(
        eni_id=f"eni-{n}", mac=f"02:00:00:00:00:{n:02x}",
        device_index=n if device_index is None else device_index, subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/16", primary_ip=f"10.0.{n}.1", is_primary=n == 0,
        ipv4_addresses=addresses,
    )  # fmt: skip


PRIMARY = eni(0, tuple(f"10.0.0.{k}" for k in range(10, 19)))  # 9 secondary addresses


def key(n: int) -> AllocationKey:
    return AllocationKey("aws-cni", f"c{n}", "eth0")


class Drive:
    """Feeds a node and keeps the commands it has not answered yet."""

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.node = Node(config or NodeConfig(pool=PoolConfig(warm_eni_target=0)))
        self.now = T0
        self.open: list[Any] = []
        self.replies: dict[int, c.Reply] = {}
        self.logs: list[c.Log] = []
        self.trace: list[tuple[i.Input, list[c.Command]]] = []
        self.ready = False
        self._rid = 0

    def feed(self, inp: i.Input) -> list[c.Command]:
        commands = self.node.receive(inp)
        self.trace.append((inp, commands))
        for command in commands:
            if isinstance(command, c.Reply):
                self.replies[command.request_id] = command
            elif isinstance(command, c.Log):
                self.logs.append(command)
            elif isinstance(command, c.Ready):
                self.ready = True
            elif isinstance(command, c.Abort):
                raise AssertionError(command)
            elif hasattr(command, "cid"):
                self.open.append(command)
        return commands

    def take(self, kind: type) -> Any:
        """The oldest open command of ``kind`` (it must be there)."""
        for command in self.open:
            if isinstance(command, kind):
                self.open.remove(command)
                return command
        raise AssertionError(f"no open {kind.__name__} in {self.open}")

    def has(self, kind: type) -> bool:
        return any(isinstance(command, kind) for command in self.open)

    def done(self, kind: type) -> list[c.Command]:
        return self.feed(i.Done(self.now, self.take(kind).cid))

    def boot(self, enis: tuple[ObservedEni, ...] = (PRIMARY,), **read: Any) -> None:
        read.setdefault("checkpoint", None)
        self.feed(i.Start(self.now))
        self.feed(i.IdentityRead(self.now, self.take(c.ReadIdentity).cid, IDENTITY))
        self.feed(i.EnisDescribed(self.now, self.take(c.DescribeEnis).cid, enis))
        self.feed(i.MetadataEnisRead(self.now, self.take(c.ReadMetadataEnis).cid, enis))
        self.feed(i.LeakedEnisFound(self.now, self.take(c.FindLeakedEnis).cid, ()))
        self.feed(i.CheckpointRead(self.now, self.take(c.ReadCheckpoint).cid, **read))
        if self.has(c.CheckPodsPresent):
            return
        self.finish_boot()

    def finish_boot(self) -> None:
        self.feed(i.PendingDelsRead(self.now, self.take(c.ReadPendingDels).cid, ()))
        while self.has(c.SetUpEni):
            self.done(c.SetUpEni)
        self.done(c.SetUpNode)
        if self.has(c.RemoveStale):  # skipped under quarantine
            self.feed(i.StaleRemoved(self.now, self.take(c.RemoveStale).cid, ()))
        self.done(c.Persist)
        assert self.ready

    def tick(self, to: float | None = None) -> list[c.Command]:
        if to is not None:
            self.now = to
        return self.feed(i.Tick(self.now))

    def add(self, n: int, **kw: Any) -> int:
        self._rid += 1
        pod, netns = PodRef("default", f"pod-{n}"), f"/var/run/netns/n{n}"
        self.feed(i.Add(self.now, self._rid, key(n), pod, netns, **kw))
        return self._rid

    def delete(self, n: int) -> int:
        self._rid += 1
        self.feed(i.Del(self.now, self._rid, key(n)))
        return self._rid

    def settle(self) -> None:
        """Answer every open pod setup/teardown and checkpoint write with success."""
        while any(isinstance(x, c.SetUpPod | c.TearDownPod | c.Persist) for x in self.open):
            command = next(
                x for x in self.open if isinstance(x, c.SetUpPod | c.TearDownPod | c.Persist)
            )
            self.open.remove(command)
            self.feed(i.Done(self.now, command.cid))


def test_start_up_order_and_the_sweep_of_leaked_enis_takes_any_age_at_the_real_now() -> None:
    d = Drive()
    kinds = []
    d.feed(i.Start(d.now))
    for answer in (
        lambda x: i.IdentityRead(d.now, x.cid, IDENTITY),
        lambda x: i.EnisDescribed(d.now, x.cid, (PRIMARY,)),
        lambda x: i.MetadataEnisRead(d.now, x.cid, (PRIMARY,)),
        lambda x: i.LeakedEnisFound(d.now, x.cid, ()),
        lambda x: i.CheckpointRead(d.now, x.cid, None),
        lambda x: i.PendingDelsRead(d.now, x.cid, ()),
        lambda x: i.Done(d.now, x.cid),
        lambda x: i.StaleRemoved(d.now, x.cid, ()),
        lambda x: i.Done(d.now, x.cid),
    ):
        [command] = d.open
        d.open.clear()
        kinds.append(type(command).__name__)
        if isinstance(command, c.FindLeakedEnis):
            assert (command.min_age_s, command.any_instance) == (None, False)
        d.feed(answer(command))
    assert kinds == [
        "ReadIdentity", "DescribeEnis", "ReadMetadataEnis", "FindLeakedEnis", "ReadCheckpoint",
        "ReadPendingDels", "SetUpNode", "RemoveStale", "Persist",
    ]  # fmt: skip
    assert d.ready and d.node.wake_at == d.now  # the first policy pass at once


def test_ec2_throttling_at_start_is_retried_after_a_backoff() -> None:
    d = Drive()
    d.feed(i.Start(d.now))
    d.feed(i.IdentityRead(d.now, d.take(c.ReadIdentity).cid, IDENTITY))
    for delay in (1.0, 2.0, 4.0):
        d.feed(i.Failed(d.now, d.take(c.DescribeEnis).cid, "slow down", FailureKind.THROTTLED))
        assert d.node.wake_at == d.now + delay and not d.open
        d.tick(d.now + delay)
    assert d.has(c.DescribeEnis)


def test_an_eni_only_metadata_shows_is_not_adopted() -> None:
    d = Drive()
    d.feed(i.Start(d.now))
    d.feed(i.IdentityRead(d.now, d.take(c.ReadIdentity).cid, IDENTITY))
    d.feed(i.EnisDescribed(d.now, d.take(c.DescribeEnis).cid, (PRIMARY,)))
    stale = eni(1, ("10.0.1.10",))
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (PRIMARY, stale)))
    assert d.node.core.eni("eni-1") is None
    assert any("stale metadata" in log.event for log in d.logs)


def test_an_unreadable_checkpoint_quarantines_every_address() -> None:
    d = Drive()
    d.boot(checkpoint=None, problem=i.UNREADABLE, detail="truncated")
    assert any("stale datapath cleanup skipped" in log.event for log in d.logs)
    assert d.node.stats(d.now).available == 0
    assert d.node.stats(d.now + 299).available == 0
    assert d.node.stats(d.now + 301).available == 9
    assert d.node.quarantine_until == d.now + 300


def test_an_upstream_checkpoint_cools_every_address_it_does_not_allocate() -> None:
    d = Drive()
    held = Allocation(key(1), PodRef("default", "pod-1"), "10.0.0.10", None, T0 - 100)
    upstream = Checkpoint(allocations=(held,), from_upstream=True)
    d.boot(checkpoint=upstream)
    stats = d.node.stats(d.now)
    assert (stats.assigned, stats.cooling, stats.available) == (1, 8, 0)
    assert d.node.stats(d.now + 31).available == 8


def test_the_restore_asks_the_executor_which_pods_are_gone() -> None:
    d = Drive()
    alive = Allocation(key(1), PodRef("default", "pod-1"), "10.0.0.10", None, T0)
    dead = Allocation(key(2), PodRef("default", "pod-2"), "10.0.0.11", None, T0)
    unknown = Allocation(key(3), PodRef("default", "pod-3"), "10.0.0.12", None, T0)
    netns = ((key(1), "/var/run/netns/a"), (key(2), "/var/run/netns/b"))
    d.boot(checkpoint=Checkpoint(allocations=(alive, dead, unknown), netns=netns))
    check = d.take(c.CheckPodsPresent)
    assert [p.key for p in check.pods] == [key(1), key(2)]  # no netns known: kept unasked
    d.feed(i.PodsPresent(d.now, check.cid, frozenset({key(2)})))
    teardown = d.take(c.TearDownPod)  # what the gone pod left on the host goes too
    assert teardown.network.ipv4 == "10.0.0.11"
    d.feed(i.Done(d.now, teardown.cid))
    d.finish_boot()
    assert {a.key for a in d.node.core.allocations()} == {key(1), key(3)}
    assert set(d.node.hints) == {key(1)}


def test_a_waiting_add_kicks_the_policy_and_is_served_when_the_addresses_come() -> None:
    d = Drive()
    d.boot(enis=(eni(0),))  # no secondary address at all
    d.tick()  # first policy pass: WARM_ENI_TARGET=0, nothing to do
    rid = d.add(1)
    assert d.node.waiting == 1 and d.node.wake_at == d.now  # kicked
    d.tick()
    effect = d.take(c.PerformEffect)
    assert isinstance(effect.effect, AssignAddresses)
    outcome = AddressesAssigned(effect.effect.effect_id, "eni-0", ("10.0.0.10",))
    d.feed(i.EffectDone(d.now, effect.cid, outcome))
    assert d.node.waiting == 0
    d.settle()
    assert d.replies[rid].allocation is not None
    assert d.replies[rid].allocation.ipv4 == "10.0.0.10"


def test_waiting_adds_are_served_first_come_first_served_and_time_out() -> None:
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=0), add_wait_s=5.0))
    d.boot(enis=(eni(0),))
    first, second = d.add(1), d.add(2)
    d.tick()
    effect = d.take(c.PerformEffect)
    d.now += 1
    one = AddressesAssigned(effect.effect.effect_id, "eni-0", ("10.0.0.10",))
    d.feed(i.EffectDone(d.now, effect.cid, one))
    d.settle()
    assert d.replies[first].error == "" and second not in d.replies
    assert d.node.wake_at is not None and d.node.wake_at <= T0 + 5.0
    d.tick(T0 + 5.0)
    assert d.replies[second].error == replies.POOL_EMPTY


def test_requests_for_one_key_never_interleave() -> None:
    d = Drive()
    d.boot()
    add = d.add(1)
    delete = d.delete(1)  # arrives while the ADD's setup and write are open
    assert not d.has(c.TearDownPod)
    d.done(c.SetUpPod)
    assert not d.has(c.TearDownPod)
    d.done(c.Persist)  # the ADD replies, then the DEL takes the key
    assert d.replies[add].error == ""
    assert d.has(c.TearDownPod)
    d.settle()
    assert d.replies[delete].released == 1


def test_a_del_cancels_its_pods_waiting_add() -> None:
    d = Drive()
    d.boot(enis=(eni(0),))
    add = d.add(1)
    delete = d.delete(1)
    assert d.replies[add].error == replies.POOL_EMPTY and "cancelled" in d.replies[add].message
    assert d.replies[delete].released == 0 and d.node.waiting == 0


def test_group_commit_one_write_in_flight_the_next_shared() -> None:
    d = Drive()
    d.boot()
    adds = [d.add(n) for n in range(3)]
    persists = [x for x in d.open if isinstance(x, c.Persist)]
    assert len(persists) == 1  # the first ADD started it; the other two wait for the next
    while d.has(c.SetUpPod):
        d.done(c.SetUpPod)
    d.done(c.Persist)
    assert d.replies[adds[0]].error == "" and adds[1] not in d.replies
    assert len([x for x in d.open if isinstance(x, c.Persist)]) == 1
    d.done(c.Persist)
    assert all(d.replies[r].error == "" for r in adds)
    assert d.node.saves == 3  # boot, then two batches


@pytest.mark.parametrize("failing", [c.SetUpPod, c.Persist])
def test_a_failed_add_keeps_no_address(failing: type) -> None:
    d = Drive()
    d.boot()
    rid = d.add(1)
    d.feed(i.Failed(d.now, d.take(failing).cid, "boom", error_type="OSError"))
    d.settle()
    reply = d.replies[rid]
    wanted = replies.DATAPATH_FAILED if failing is c.SetUpPod else replies.INTERNAL
    assert reply.error == wanted and reply.message == "OSError: boom"
    assert d.node.core.get(key(1)) is None and key(1) not in d.node.hints


def test_a_new_eni_is_used_only_once_instance_metadata_lists_it() -> None:
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=2)))
    d.boot()
    d.tick()
    effect = d.take(c.PerformEffect)
    assert isinstance(effect.effect, CreateEni)
    new = eni(1, ("10.0.1.10",), device_index=effect.effect.device_index)
    d.feed(i.EffectDone(d.now, effect.cid, EniCreated(effect.effect.effect_id, new)))
    assert d.node.core.eni("eni-1") is None  # not yet
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (PRIMARY,)))
    assert d.node.wake_at == d.now + 0.05
    d.tick(d.now + 0.05)
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (PRIMARY, new)))
    assert d.node.core.eni("eni-1") is not None
    setup = d.take(c.SetUpEni)
    assert setup.created and setup.eni_id == "eni-1"


def test_the_periodic_leaked_eni_cleanup_uses_the_five_minute_age_rule() -> None:
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=0), leaked_eni_interval_s=3600))
    d.boot()
    d.tick()
    t = d.now
    while not d.has(c.FindLeakedEnis):
        wake = d.node.wake_at
        assert wake is not None
        d.tick(wake)
        if d.has(c.DescribeEnis):
            d.feed(i.EnisDescribed(d.now, d.take(c.DescribeEnis).cid, (PRIMARY,)))
    find = d.take(c.FindLeakedEnis)
    assert (find.any_instance, find.min_age_s) == (True, LEAKED_ENI_AGE_S)
    assert 3600 <= d.now - t <= 3960


def test_a_replay_of_the_inputs_gives_the_same_commands() -> None:
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=2)))
    d.boot()
    d.tick()
    effect = d.take(c.PerformEffect)
    new = eni(1, ("10.0.1.10",), device_index=effect.effect.device_index)
    d.feed(i.EffectDone(d.now, effect.cid, EniCreated(effect.effect.effect_id, new)))
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (PRIMARY, new)))
    d.add(1)
    d.add(2)
    d.settle()
    d.delete(1)
    d.settle()
    again = Node(d.node.config)
    for inp, commands in d.trace:
        assert again.receive(inp) == commands
    assert again.checkpoint() == d.node.checkpoint()


def test_requests_before_ready_wait_for_it_and_after_stop_are_refused() -> None:
    d = Drive()
    rid = d.add(1)  # before start: held
    assert rid not in d.replies
    d.boot()
    d.settle()
    assert d.replies[rid].error == ""
    d.feed(i.Stop(d.now))
    late = d.add(2)
    assert d.replies[late].error == replies.SHUTTING_DOWN
    assert d.node.wake_at is None


def test_inputs_are_frozen_values() -> None:
    add = i.Add(T0, 1, key(1), PodRef("default", "p"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        add.now = 0.0  # type: ignore[misc]


def test_a_failed_write_never_takes_the_address_of_a_live_pod() -> None:
    """Issue 16 item 7: a repeated ADD of a running pod while the checkpoint cannot be
    written keeps the pod's address and network."""
    d = Drive()
    d.boot()
    first = d.add(1)
    d.settle()
    ip = d.replies[first].allocation.ipv4  # type: ignore[union-attr]
    again = d.add(1)
    d.done(c.SetUpPod)
    d.feed(i.Failed(d.now, d.take(c.Persist).cid, "disk full", error_type="OSError"))
    assert d.replies[again].error == replies.INTERNAL
    assert not d.has(c.TearDownPod)
    assert d.node.core.get(key(1)).ipv4 == ip  # type: ignore[union-attr]


def test_a_del_whose_write_fails_keeps_memory_answer_and_file_in_agreement() -> None:
    d = Drive()
    d.boot()
    d.add(1)
    d.settle()
    first = d.delete(1)
    d.done(c.TearDownPod)
    d.feed(i.Failed(d.now, d.take(c.Persist).cid, "disk full", error_type="OSError"))
    assert d.replies[first].error == replies.INTERNAL
    assert d.node.core.get(key(1)) is not None  # as the file still says
    assert key(1) in d.node.checkpoint().netns[0]
    retry = d.delete(1)
    d.settle()
    assert d.replies[retry].released == 1 and d.node.core.get(key(1)) is None


def test_restored_times_are_never_later_than_now() -> None:
    """A wall clock stepped back before a restart: a release time 'in the future' would keep
    the address cooling for far longer than the cooldown."""
    d = Drive()
    future = Checkpoint(released_at=(("10.0.0.10", T0 + 3600),))
    d.boot(checkpoint=future)
    assert d.node.stats(d.now).cooling == 1
    assert d.node.stats(d.now + 31).cooling == 0


def test_same_key_adds_on_an_empty_pool_do_not_queue_one_after_another() -> None:
    """Issue 16 item 14: a retried ADD takes the waiting one's place (which is answered at
    once); the newest gets the address when it comes, within the first one's deadline."""
    d = Drive()
    d.boot(enis=(eni(0),))
    first = d.add(1)
    d.now += 1
    second = d.add(1)
    third = d.add(1)
    assert d.replies[first].error == d.replies[second].error == replies.POOL_EMPTY
    assert "superseded" in d.replies[first].message and d.node.waiting == 1
    d.tick()
    effect = d.take(c.PerformEffect)
    one = AddressesAssigned(effect.effect.effect_id, "eni-0", ("10.0.0.10",))
    d.feed(i.EffectDone(d.now, effect.cid, one))
    d.settle()
    assert d.replies[third].allocation is not None


def test_an_add_whose_client_is_gone_keeps_no_address() -> None:
    d = Drive()
    d.boot(enis=(eni(0),))
    waiting = d.add(1)
    d.feed(i.Cancel(d.now, waiting))
    assert d.node.waiting == 0 and d.node.core.get(key(1)) is None
    d2 = Drive()
    d2.boot()
    rid = d2.add(2)
    d2.feed(i.Cancel(d2.now, rid))  # gone while its pod was set up
    d2.done(c.SetUpPod)
    d2.done(c.Persist)
    assert d2.has(c.TearDownPod)
    d2.settle()
    assert d2.node.core.get(key(2)) is None and d2.replies[rid].error == replies.INTERNAL


def test_upstream_entries_migrated_from_cri_are_found_by_their_container() -> None:
    """Issue 16 item 4: upstream keyed entries it migrated from CRI
    ``_migrated-from-cri/<container>/unknown``; DEL, CHECK and a re-ADD fall back to that key
    as upstream's datastore does, and GC frees such an entry once its container is gone."""
    legacy = AllocationKey("_migrated-from-cri", "c1", "unknown")
    old = AllocationKey("_migrated-from-cri", "c9", "unknown")
    held = (
        Allocation(legacy, PodRef("default", "pod-1"), "10.0.0.10", None, T0),
        Allocation(old, PodRef("default", "pod-9"), "10.0.0.11", None, T0),
    )
    d = Drive()
    d.boot(checkpoint=Checkpoint(allocations=held, from_upstream=True))
    again = d.add(1)  # the same container, now with its real key
    d.settle()
    reply = d.replies[again].allocation
    assert reply is not None and reply.ipv4 == "10.0.0.10" and reply.key == legacy
    assert d.node.core.stats(d.now).assigned == 2  # no second address
    d._rid += 1
    d.feed(i.Check(d.now, d._rid, key(1)))
    check = d.take(c.CheckPod)
    assert check.network.if_name == "eth0"
    d.feed(i.PodChecked(d.now, check.cid, ()))
    assert d.replies[d._rid].error == ""
    d._rid += 1
    d.feed(i.Gc(d.now, d._rid, "aws-cni", frozenset({("c1", "eth0")})))
    d.settle()
    assert d.replies[d._rid].released == 1 and d.node.core.get(old) is None
    gone = d.delete(1)
    d.settle()
    assert d.replies[gone].released == 1 and d.node.core.allocations() == []


def test_a_record_of_the_inputs_replays_bit_for_bit() -> None:
    from ipamcore.node import record

    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=2)))
    held = Allocation(key(7), PodRef("default", "pod-7"), "10.0.0.12", None, T0 - 5)
    d.boot(checkpoint=Checkpoint(allocations=(held,), netns=((key(7), "/var/run/netns/x"),)))
    d.feed(i.PodsPresent(d.now, d.take(c.CheckPodsPresent).cid, frozenset()))
    d.finish_boot()
    d.tick()
    effect = d.take(c.PerformEffect)
    new = eni(1, ("10.0.1.10",), device_index=effect.effect.device_index)
    d.feed(i.EffectDone(d.now, effect.cid, EniCreated(effect.effect.effect_id, new)))
    d.feed(i.MetadataEnisRead(d.now, d.take(c.ReadMetadataEnis).cid, (PRIMARY, new)))
    d.add(1)
    d.settle()
    d.feed(i.Failed(d.now + 1, d.take(c.SetUpEni).cid, "no link", FailureKind.OTHER, "OSError"))
    lines = [record.config_line(d.node.config)] + [record.input_line(x, o) for x, o in d.trace]
    rec = record.read(lines)
    assert rec.config == d.node.config and [s[0] for s in rec.steps] == [x for x, _ in d.trace]
    replayed = list(record.replay(rec.config, rec.steps))
    assert all(step.matches for step in replayed)
    assert [list(step.commands) for step in replayed] == [o for _, o in d.trace]


def test_an_eni_gone_from_the_instance_has_its_rule_and_routes_torn_down() -> None:
    """Reconciliation drops an ENI removed out of band; the node then asks the datapath to
    remove that ENI's rule and table routes (issue 16 item 3), not only at the next start."""
    d = Drive(NodeConfig(pool=PoolConfig(warm_eni_target=0)))
    second = eni(1, ("10.0.1.10", "10.0.1.11"))
    d.boot((PRIMARY, second))
    d.tick()
    gone = False
    for _ in range(50):
        while d.has(c.PerformEffect):  # the policy would free the idle ENI: refuse, so the
            effect = d.take(c.PerformEffect)  # ENI stays until reconciliation sees it gone
            failed = EffectFailed(effect.effect.effect_id, FailureKind.OTHER, "refused")
            d.feed(i.EffectDone(d.now, effect.cid, failed))
        if d.has(c.DescribeEnis):
            d.feed(i.EnisDescribed(d.now, d.take(c.DescribeEnis).cid, (PRIMARY,)))
        if d.node.core.eni("eni-1") is None:
            gone = True
            break
        wake = d.node.wake_at
        assert wake is not None
        d.tick(wake)
    assert gone
    teardown = d.take(c.TearDownEni)
    assert teardown.eni_id == "eni-1"
    assert teardown.network.primary_ip == second.primary_ip
