"""The requests: ADD (assign or wait, pod setup and a durable checkpoint at once, unwound
on failure), DEL, CHECK, GC, a client that leaves, and upstream's legacy keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ipamcore.cards import attachment_index, attachment_key, is_extra_attachment
from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import PoolExhausted
from ipamcore.model import (
    Allocation,
    AllocationKey,
)
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from ipamcore.node import replies
from ipamcore.node.tasks import DURABLE, AddressWait, CardWait, TaskGen, Turn
from ipamcore.node.upkeep import Upkeep

# The key upstream gave entries it migrated from the CRI checkpoint (no network or ifname).
LEGACY_NETWORK = "_migrated-from-cri"
LEGACY_IF_NAME = "unknown"

# Counters every ADD and DEL emits: frozen values, made once.
_ADD_REQ = c.Count("add_req")
_DEL_DONE = c.Count("del_req", "PodDeleted")
_DEL_UNKNOWN = c.Count("del_req", "unknown")


class Requests(Upkeep):
    """ADD, DEL, CHECK and GC; requests for one key never interleave."""

    def _on_flush(self, inp: i.Flush) -> None:
        self._spawn(self._flush(inp.request_id), "flush")

    def _flush(self, request_id: int) -> TaskGen:
        error = yield DURABLE
        if error is None:
            self._out.append(c.Reply(request_id))
        else:
            self._out.append(c.Reply(request_id, replies.INTERNAL, error.message))

    def _on_request(self, req: i.Request) -> None:
        if self.stopping:
            self._out.append(
                c.Reply(req.request_id, replies.SHUTTING_DOWN, "ipamd is stopping; try again")
            )
            return
        if not self.ready:
            self._early.append(req)
            return
        kind = type(req)
        if kind is i.Add:
            assert isinstance(req, i.Add)
            self._out.append(_ADD_REQ)
            waiting = self._waiting_by_key.get(req.key)
            if waiting is not None:
                # A retried ADD of an attachment still waiting: the newer request takes the
                # older one's place in the queue (and its deadline); the older is answered now,
                # so same-key ADDs never wait one after another.
                older = waiting.request
                superseded = "superseded by a newer ADD for this attachment"
                self._reply(older.request_id, replies.POOL_EMPTY, superseded)
                waiting.request = req
                self._adds_open.add(req.request_id)
                return
            self._adds_open.add(req.request_id)
            self._spawn(self._add(req), "add")
        elif kind is i.Del:
            assert isinstance(req, i.Del)
            waiting = self._waiting_by_key.get(req.key)
            if waiting is not None:  # the pod is gone before its ADD got an address
                self._stop_waiting(waiting, "a DEL for this attachment arrived")
            self._spawn(self._delete(req), "del")
        elif kind is i.Check:
            assert isinstance(req, i.Check)
            self._spawn(self._check(req), "check")
        else:
            assert isinstance(req, i.Gc)
            self._spawn(self._gc(req), "gc")

    def _on_cancel(self, inp: i.Cancel) -> None:
        rid = inp.request_id
        if rid not in self._adds_open:
            return  # answered already, or not an ADD: a DEL or GC goes on
        for wait in self._waiting_by_key.values():
            if wait.request.request_id == rid:
                self._stop_waiting(wait, "the client is gone")
                return
        self._abandoned.add(rid)  # set up and persisted, then undone (see _add_holding)

    def _stop_waiting(self, wait: AddressWait, why: str) -> None:
        wait.cancelled = why
        if isinstance(wait, CardWait):
            self._card_waiters.remove(wait)
        else:
            self._waiters.remove(wait)
        assert wait.task is not None
        self._resolve(wait.task, 0, None)

    def _add(self, req: i.Add) -> TaskGen:
        return self._in_turn(req.key, self._add_holding(req))

    def _in_turn(self, key: AllocationKey, body: TaskGen) -> TaskGen:
        """Run ``body`` holding ``key``'s turn (one request per key at a time)."""
        if not self._take_turn(key):
            yield Turn(key)
        yield from body
        self._leave(key)

    def _add_holding(self, req: i.Add) -> TaskGen:
        ipam, key = self.core, req.key
        if key.network_name == LEGACY_NETWORK:
            self._legacy_possible = True
        legacy = self._legacy(key)
        existed = legacy is not None or ipam.get(key) is not None
        try:
            # An upstream entry of this container (legacy key) is its address: never a second.
            allocation: Allocation | None = legacy or ipam.assign(key, req.pod, self._now)
            self.changes.touch(key, allocation)
            self._pool_changed()
        except PoolExhausted:
            wait = AddressWait(key, req.pod, self._now, self._now + self.config.add_wait_s, req)
            allocation = yield from self._wait_for_address(wait)
            req = wait.request  # a newer ADD for this attachment may have taken the place
        if allocation is None:
            return
        extras: list[Allocation] = []
        fresh: list[Allocation] = []  # the extras this ADD took (unwound if it fails)
        if req.multi_nic:
            got = yield from self._assign_extras(req)
            if got is None:
                if not existed:
                    ipam.release(key, self._now)
                    self.changes.touch(key, allocation)
                    self._pool_changed()
                return
            extras, fresh, req = got
        net = self.pod_network(allocation, req.netns, req.mtu, key.if_name)
        nets = [net, *(self.pod_network(a, req.netns, req.mtu) for a in extras)]
        if req.netns:
            for one in (allocation, *extras):
                self.hints[one.key] = req.netns
                self.changes.touch(one.key)
        # The datapath setup (every interface) and the durable commit run at once.
        *setups, commit_error = yield (
            *(c.SetUpPod(self._cid(), n, existed) for n in nets), DURABLE,
        )  # fmt: skip
        setup = next((s for s in setups if isinstance(s, i.Failed)), setups[0])
        setup_failed = isinstance(setup, i.Failed)
        if not existed and req.request_id in self._abandoned and not setup_failed:
            # Nobody will read the reply: keep no address for it (undone as a failure).
            commit_error = i.Failed(self._now, 0, "the client is gone before the reply")
        if (setup_failed or commit_error is not None) and existed:
            # A repeated ADD of a pod that already had this address (durable since its first
            # ADD): a failure now never takes the address or the network from a live pod;
            # the addresses on other cards this ADD took are given back.
            for one, built in zip((allocation, *extras), setups, strict=True):
                if one in fresh and not isinstance(built, i.Failed):
                    yield from self._teardown_quietly(one, req.netns)
            for one in fresh:
                ipam.release(one.key, self._now)
                self.hints.pop(one.key, None)
                self.changes.touch(one.key, one)
            if fresh:
                self._pool_changed()
            code = replies.DATAPATH_FAILED if setup_failed else replies.INTERNAL
            message = setup.describe() if setup_failed else commit_error.describe()
            self._log(
                "error",
                "repeated add failed; the pod keeps its address",
                key=str(key),
                code=code,
                error=message,
            )
            self._reply(req.request_id, code, message)
            return
        if setup_failed or commit_error is not None:
            for one, built in zip((allocation, *extras), setups, strict=True):
                if not isinstance(built, i.Failed):
                    yield from self._teardown_quietly(one, req.netns)
            for one in (allocation, *extras):
                ipam.release(one.key, self._now)
                self.hints.pop(one.key, None)
                self.changes.touch(one.key, one)
            self._pool_changed()
            error = yield DURABLE
            if error is not None:
                self._log("error", "checkpoint write failed", error=error.message)
            code = replies.DATAPATH_FAILED if setup_failed else replies.INTERNAL
            message = setup.describe() if setup_failed else commit_error.describe()
            self._log("error", "add failed", key=str(key), code=code, error=message)
            self._reply(req.request_id, code, message)
            return
        fields = (("key", str(key)), ("ipv4", allocation.ipv4), ("ipv6", allocation.ipv6))
        self._out.append(c.Log("debug", "add", fields))
        self._reply(
            req.request_id, allocation=allocation, pod=net,
            extra=tuple(zip(extras, nets[1:], strict=True)),
        )  # fmt: skip

    def _assign_extras(self, req: i.Add) -> Any:
        """A multi-NIC pod's addresses on the cards above 0 (upstream's one interface per
        network card): ``(extras in card order, those this ADD took, the ADD answered)``,
        or None once the request is answered. Without ENABLE_MULTI_NIC it fails as
        upstream's does. A card with no address ready makes the ADD wait, as a single-card
        ADD waits on card 0 (counted as waiting on that card, so the policy grows it), for
        up to ``add_wait_s``; if some card still has none then (or the wait is cancelled),
        every address this ADD took on other cards is given back: all or nothing."""
        ipam, now = self.core, self._now
        if not ipam.config.multi_nic:
            self._reply(
                req.request_id, replies.INTERNAL,
                "the pod asks for a multi-nic-attachment: set ENABLE_MULTI_NIC=true on aws-node",
            )  # fmt: skip
            return None
        extras: list[Allocation] = []
        fresh: list[Allocation] = []
        missing: dict[int, AllocationKey] = {}
        for index, card in enumerate(ipam.multi_nic_cards[1:], 1):
            akey = attachment_key(req.key, index)
            known = ipam.get(akey)
            try:
                one = known or ipam.assign_on_card(akey, req.pod, card, now)
            except PoolExhausted:
                missing[card] = akey
                continue
            extras.append(one)
            if known is None:
                fresh.append(one)
                self.changes.touch(akey, one)
        if missing:
            if fresh:
                self._pool_changed()
            deadline = now + self.config.add_wait_s
            wait = CardWait(req.key, req.pod, now, deadline, req, missing=missing)
            self._count("no_ip")
            self._waiting_by_key[req.key] = wait
            self._kick()
            yield wait
            self._waiting_by_key.pop(req.key, None)
            self._observe("ip_wait", max(0.0, self._now - wait.since))
            req = wait.request  # a newer ADD for this attachment may have taken the place
            extras += wait.got
            fresh += wait.got
            if wait.missing:
                for one in fresh:
                    ipam.release(one.key, self._now)
                    self.changes.touch(one.key, one)
                self._pool_changed()
                cards = ", ".join(str(card) for card in sorted(wait.missing))
                why = (
                    f"cancelled while waiting for an address: {wait.cancelled}" if wait.cancelled
                    else f"network card(s) {cards} had no address for a multi-NIC pod within "
                    f"{self.config.add_wait_s:g}s"
                )  # fmt: skip
                self._reply(req.request_id, replies.POOL_EMPTY, why)
                return None
        extras.sort(key=lambda a: attachment_index(a.key))
        return extras, fresh, req

    def _extras_of(self, key: AllocationKey) -> list[Allocation]:
        """The interfaces on cards above 0 of the multi-NIC attachment ``key``."""
        ipam = self.core
        if not ipam.card_pools or is_extra_attachment(key):
            return []
        found = (ipam.get(attachment_key(key, n)) for n in range(1, len(ipam.card_pools) + 1))
        return [a for a in found if a is not None]

    def _note_legacy(self, allocations: Iterable[Allocation]) -> None:
        """Allocations about to be restored: any under a legacy key turns its lookup on."""
        if any(a.key.network_name == LEGACY_NETWORK for a in allocations):
            self._legacy_possible = True

    def _legacy(self, key: AllocationKey) -> Allocation | None:
        """The allocation an upstream checkpoint migrated from CRI holds for ``key``'s
        container (upstream's key ``_migrated-from-cri/<container>/unknown``): DEL, CHECK and
        ADD fall back to it as upstream's datastore does, so it can be freed and is never
        doubled by a second address."""
        if not self._legacy_possible or key.network_name == LEGACY_NETWORK:
            return None
        return self.core.get(AllocationKey(LEGACY_NETWORK, key.container_id, LEGACY_IF_NAME))

    def _wait_for_address(self, wait: AddressWait) -> Any:
        """Wait (FIFO) for an address until ``add_wait_s`` passes; the policy counts the
        waiter and is kicked at once."""
        self._count("no_ip")
        self._waiting_by_key[wait.key] = wait
        self._kick()
        allocation = yield wait
        self._waiting_by_key.pop(wait.key, None)
        self._observe("ip_wait", max(0.0, self._now - wait.since))
        req = wait.request
        if allocation is not None:
            return allocation
        if wait.cancelled:
            self._reply(
                req.request_id, replies.POOL_EMPTY,
                f"cancelled while waiting for an address: {wait.cancelled}",
            )  # fmt: skip
            return None
        stats = self.core.stats(self._now)
        self._reply(
            req.request_id, replies.POOL_EMPTY,
            f"no address available within {self.config.add_wait_s:g}s "
            f"({stats.assigned}/{stats.total} assigned, {stats.cooling} cooling)",
        )  # fmt: skip
        return None

    def _delete(self, req: i.Del) -> TaskGen:
        return self._in_turn(req.key, self._delete_holding(req))

    def _delete_holding(self, req: i.Del) -> TaskGen:
        ipam, key = self.core, req.key
        allocation = ipam.get(key) or self._legacy(key)
        extras = self._extras_of(key)
        if allocation is None and not extras:
            self._out.append(_DEL_UNKNOWN)
            self._reply(req.request_id, released=0)
            return
        every = [a for a in (allocation, *extras) if a is not None]
        nets = [
            self.pod_network(
                a, req.netns or self.hints.get(a.key, ""),
                if_name=key.if_name if a is allocation else "",
            )
            for a in every
        ]  # fmt: skip
        if nets:
            done = yield tuple(c.TearDownPod(self._cid(), net) for net in nets)
            failed = [d for d in done if isinstance(d, i.Failed)]
            if failed:
                self._log("error", "teardown failed", key=str(key), error=failed[0].message)
                self._reply(
                    req.request_id, replies.DATAPATH_FAILED,
                    f"teardown failed: {failed[0].message}",
                )  # fmt: skip
                return
        released: list[tuple[Allocation, str]] = []
        for one in every:
            ipam.release(one.key, self._now)
            released.append((one, self.hints.pop(one.key, "")))
            self.changes.touch(one.key, one)
        self._pool_changed()
        self._out.append(_DEL_DONE)
        error = yield DURABLE
        if error is not None:
            # The file still holds the allocation: so does memory, and a retried DEL frees it.
            self._keep_after_failed_write(released)
            self._reply(
                req.request_id, replies.INTERNAL, f"checkpoint write failed: {error.message}"
            )
            return
        main = allocation or every[0]
        self._reply(
            req.request_id, released=1, allocation=main,
            extra=tuple((a, n) for a, n in zip(every[1:], nets[1:], strict=False)),
        )  # fmt: skip

    def _check(self, req: i.Check) -> TaskGen:
        allocation = self.core.get(req.key) or self._legacy(req.key)
        if allocation is None:
            self._reply(req.request_id, replies.NOT_FOUND, f"no address for {req.key}")
            return
        extras = self._extras_of(req.key)
        nets = [
            self.pod_network(allocation, req.netns, req.mtu, req.key.if_name),
            *(self.pod_network(a, req.netns, req.mtu) for a in extras),
        ]
        results = yield tuple(c.CheckPod(self._cid(), net) for net in nets)
        failed = [r for r in results if isinstance(r, i.Failed)]
        missing = [m for r in results if not isinstance(r, i.Failed) for m in r.missing]
        if failed:
            message = failed[0].message
            self._reply(req.request_id, replies.DATAPATH_FAILED, f"check failed: {message}")
        elif missing:
            self._reply(
                req.request_id,
                replies.DATAPATH_FAILED,
                "missing or wrong: " + ", ".join(missing),
            )
        else:
            self._reply(
                req.request_id, allocation=allocation,
                extra=tuple(zip(extras, nets[1:], strict=True)),
            )  # fmt: skip

    def _gc(self, req: i.Gc) -> TaskGen:
        """Release this network's allocations whose attachment is not in the valid list (a
        multi-NIC pod's interfaces on cards above 0 live as long as one of its container's)."""
        containers = {container for container, _ in req.valid}
        stale = [
            a
            for a in self.core.allocations()
            if (
                a.key.network_name == req.network_name
                and (a.key.container_id, a.key.if_name) not in req.valid
                and not (is_extra_attachment(a.key) and a.key.container_id in containers)
            )
            or (  # an upstream entry: stale once no valid attachment is of its container
                a.key.network_name == LEGACY_NETWORK
                and a.key.if_name == LEGACY_IF_NAME
                and all(container != a.key.container_id for container, _ in req.valid)
            )
        ]
        released: list[tuple[Allocation, str]] = []
        for allocation in stale:
            yield Turn(allocation.key)
            if self.core.get(allocation.key) is not None:
                yield from self._teardown_quietly(allocation, "")
                self.core.release(allocation.key, self._now)
                self._pool_changed()
                released.append((allocation, self.hints.pop(allocation.key, "")))
                self.changes.touch(allocation.key, allocation)
            self._leave(allocation.key)
        if released:
            self._log("info", "gc released allocations", count=len(released))
            error = yield DURABLE
            if error is not None:
                self._keep_after_failed_write(released)
                self._reply(
                    req.request_id, replies.INTERNAL, f"checkpoint write failed: {error.message}"
                )
                return
        self._reply(req.request_id, released=len(released))

    def _keep_after_failed_write(self, released: Iterable[tuple[Allocation, str]]) -> None:
        """Bind released allocations again after the write of their release failed, so that
        memory, the answer (an error) and the file agree: the address stays the pod's until a
        retried DEL (or GC) is durable. (A released address cools, so nobody took it since.)"""
        pairs = list(released)
        self.changes.touch_all()
        self._note_legacy(a for a, _ in pairs)
        report = self.core.restore(Checkpoint(allocations=tuple(a for a, _ in pairs)), self._now)
        self._pool_changed()
        for allocation, reason in report.dropped:
            self._log(
                "error",
                "released allocation could not be kept after a failed checkpoint write",
                key=str(allocation.key),
                reason=reason,
            )
        for allocation, netns in pairs:
            if netns:
                self.hints[allocation.key] = netns
