"""Request handlers: ADD, DEL, CHECK, STATUS and GC, each returning a protocol Reply.

Ordering that makes each reply trustworthy:

* ADD: assign (or wait for the policy to bring addresses), then, concurrently, set up the
  datapath and make the allocation durable (group commit); reply only when both are done.
  If the datapath fails, the allocation is released (nothing leaks) -> ``datapath_failed``.
  An ADD for a key that already has an address answers the same address; the datapath is
  rebuilt only if ``check_pod`` finds a piece missing.
* DEL: tear down, release, durable, reply. An unknown key is a success.
"""

from __future__ import annotations

import time

from adapters import protocol as p
from adapters.ipamd.agent import Agent
from adapters.ipamd.clock import race_timeout
from ipamcore.errors import PoolExhausted
from ipamcore.model import Allocation, AllocationKey, PodRef
from ipamcore.netspec import PodNetwork, attachment_tag, host_veth_name, route_table_for_device
from ipamcore.ports import DatapathPort


def host_veth_for(agent: Agent, allocation: Allocation) -> str:
    """One name per attachment (network, container id, interface): see
    :func:`ipamcore.netspec.host_veth_name` for why not upstream's pod namespace and name."""
    key = allocation.key
    return host_veth_name(
        key.network_name, key.container_id, key.if_name, agent.settings.veth_prefix
    )


def pod_network(
    agent: Agent, allocation: Allocation, netns: str, mtu: int | None = None
) -> PodNetwork:
    assert allocation.ipv4 is not None
    return PodNetwork(
        netns_path=netns,
        if_name=allocation.key.if_name,
        host_veth=host_veth_for(agent, allocation),
        ipv4=allocation.ipv4,
        mtu=mtu or agent.settings.pod_mtu,
        route_table=route_table_for_device(allocation.device_index),
        tag=attachment_tag(*allocation.key),
    )


async def teardown_quietly(agent: Agent, allocation: Allocation, netns: str) -> bool:
    """Best-effort teardown (start-up, GC): failures are logged, not raised."""
    if allocation.ipv4 is None:
        return True
    netns = netns or agent.hints.get(allocation.key) or ""
    try:
        await agent.in_datapath(
            agent.ports.datapath.teardown_pod, pod_network(agent, allocation, netns)
        )
    except Exception as exc:
        agent.log.warning("teardown failed", key=str(allocation.key), error=str(exc))
        return False
    return True


def _key(req: p.Request) -> AllocationKey:
    return AllocationKey(req.network_name, req.container_id, req.if_name)


async def handle(agent: Agent, req: p.Request) -> p.Reply:
    """Dispatch one validated request."""
    if agent.stopping:
        return p.Reply.failure(p.ERR_SHUTTING_DOWN, "ipamd is stopping; try again")
    if req.op == p.OP_ADD:
        began = time.perf_counter()
        reply = await add(agent, req)
        outcome = "ok" if reply.ok else reply.error_code
        agent.metrics.add_latency.labels(outcome).observe(time.perf_counter() - began)
        return reply
    if req.op == p.OP_DEL:
        return await delete(agent, req)
    if req.op == p.OP_CHECK:
        return await check(agent, req)
    if req.op == p.OP_STATUS:
        return status(agent)
    if req.op == p.OP_GC:
        return await gc(agent, req)
    return p.Reply.failure(p.ERR_BAD_REQUEST, f"unknown op {req.op!r}")


async def _wait_for_address(agent: Agent, key: AllocationKey, pod: PodRef) -> Allocation | None:
    """Kick the policy with one more waiter and retry until an address shows up or
    ``add_wait_s`` passes."""
    agent.metrics.no_ip.inc()
    agent.waiting += 1
    began = agent.clock.now()
    deadline = began + agent.settings.add_wait_s
    woken_before = False
    try:
        while True:
            agent.kick()
            waiter = agent.address_waiter(first=woken_before)
            remaining = deadline - agent.clock.now()
            woke = remaining > 0 and await race_timeout(agent.clock, waiter, remaining)
            waiter.cancel()  # no-op if it was woken; skipped by the queue if the time ran out
            try:
                return agent.core.assign(key, pod, agent.clock.now())
            except PoolExhausted:
                if not woke:
                    return None
                woken_before = True
    finally:
        agent.waiting -= 1
        agent.metrics.ip_wait.observe(agent.clock.now() - began)


async def add(agent: Agent, req: p.Request) -> p.Reply:
    agent.metrics.add_req.inc()
    key, pod = _key(req), PodRef(req.pod_namespace, req.pod_name)
    async with agent.key_locks.hold(key):
        existed = agent.core.get(key)
        try:
            allocation: Allocation | None = agent.core.assign(key, pod, agent.clock.now())
        except PoolExhausted:
            allocation = await _wait_for_address(agent, key, pod)
        if allocation is None:
            stats = agent.stats()
            return p.Reply.failure(
                p.ERR_POOL_EMPTY,
                f"no address available within {agent.settings.add_wait_s:g}s "
                f"({stats.assigned}/{stats.total} assigned, {stats.cooling} cooling)",
            )
        if allocation.ipv4 is None:
            agent.core.release(key, agent.clock.now())
            return p.Reply.failure(p.ERR_INTERNAL, "IPv6 pods are not supported by this daemon")
        net = pod_network(agent, allocation, req.netns, req.mtu)
        agent.hints.remember(key, req.netns)
        # The datapath setup (a worker thread) and the durable commit run concurrently.
        setup = agent.start_in_datapath(_setup_sync, agent.ports.datapath, net, existed is not None)
        commit_error: BaseException | None = None
        try:
            await agent.committer.commit()
        except Exception as exc:
            commit_error = exc
        setup_error: BaseException | None = None
        try:
            await setup
        except Exception as exc:
            setup_error = exc
        failure = setup_error or commit_error
        if failure is not None:
            if setup_error is None:
                await teardown_quietly(agent, allocation, req.netns)
            agent.core.release(key, agent.clock.now())
            agent.hints.forget(key)
            await _commit_quietly(agent)
            code = p.ERR_DATAPATH_FAILED if setup_error is not None else p.ERR_INTERNAL
            agent.log.error("add failed", key=str(key), code=code, error=str(failure))
            return p.Reply.failure(code, f"{type(failure).__name__}: {failure}")
        agent.log.debug("add", key=str(key), ipv4=allocation.ipv4)
        result = p.AddResult(
            host_veth=net.host_veth,
            if_name=net.if_name,
            ipv4=allocation.ipv4,
            eni_id=allocation.eni_id,
            device_index=allocation.device_index,
            mtu=net.mtu,
        )
        return p.Reply.success(result.to_dict())


def _setup_sync(datapath: DatapathPort, net: PodNetwork, existed: bool) -> None:
    """In a worker thread: build the pod's datapath; for a repeated ADD, rebuild it only if
    a piece is missing."""
    if existed:
        if not datapath.check_pod(net):
            return
        datapath.teardown_pod(net)
    datapath.setup_pod(net)


async def _commit_quietly(agent: Agent) -> None:
    try:
        await agent.committer.commit()
    except Exception as exc:
        agent.log.error("checkpoint write failed", error=str(exc))


async def delete(agent: Agent, req: p.Request) -> p.Reply:
    key = _key(req)
    async with agent.key_locks.hold(key):
        allocation = agent.core.get(key)
        if allocation is None:
            agent.metrics.del_req.labels("unknown").inc()
            return p.Reply.success({"released": False})
        if allocation.ipv4 is not None:
            netns = req.netns or agent.hints.get(key) or ""
            try:
                await agent.in_datapath(
                    agent.ports.datapath.teardown_pod, pod_network(agent, allocation, netns)
                )
            except Exception as exc:
                agent.log.error("teardown failed", key=str(key), error=str(exc))
                return p.Reply.failure(p.ERR_DATAPATH_FAILED, f"teardown failed: {exc}")
        agent.core.release(key, agent.clock.now())
        agent.hints.forget(key)
        agent.metrics.del_req.labels("PodDeleted").inc()
        try:
            await agent.committer.commit()
        except Exception as exc:
            return p.Reply.failure(p.ERR_INTERNAL, f"checkpoint write failed: {exc}")
        agent.notify_pool_changed()
        return p.Reply.success({"released": True, "ipv4": allocation.ipv4})


async def check(agent: Agent, req: p.Request) -> p.Reply:
    allocation = agent.core.get(_key(req))
    if allocation is None or allocation.ipv4 is None:
        return p.Reply.failure(p.ERR_NOT_FOUND, f"no address for {_key(req)}")
    net = pod_network(agent, allocation, req.netns, req.mtu)
    try:
        missing = await agent.in_datapath(agent.ports.datapath.check_pod, net)
    except Exception as exc:
        return p.Reply.failure(p.ERR_DATAPATH_FAILED, f"check failed: {exc}")
    if missing:
        return p.Reply.failure(p.ERR_DATAPATH_FAILED, "missing or wrong: " + ", ".join(missing))
    return p.Reply.success({"ipv4": allocation.ipv4})


def status(agent: Agent) -> p.Reply:
    stats = agent.stats()
    return p.Reply.success(
        {
            "ready": agent.ready,
            "enis": stats.enis,
            "total": stats.total,
            "assigned": stats.assigned,
            "available": stats.available,
            "cooling": stats.cooling,
        }
    )


async def gc(agent: Agent, req: p.Request) -> p.Reply:
    """Release this network's allocations whose attachment is not in the valid list."""
    valid = set(req.valid_attachments or ())
    stale = [
        a
        for a in agent.core.allocations()
        if a.key.network_name == req.network_name
        and (a.key.container_id, a.key.if_name) not in valid
    ]
    released = 0
    for allocation in stale:
        async with agent.key_locks.hold(allocation.key):
            if agent.core.get(allocation.key) is None:
                continue
            await teardown_quietly(agent, allocation, "")
            agent.core.release(allocation.key, agent.clock.now())
            agent.hints.forget(allocation.key)
            released += 1
    if released:
        agent.log.info("gc released allocations", count=released)
        try:
            await agent.committer.commit()
        except Exception as exc:
            return p.Reply.failure(p.ERR_INTERNAL, f"checkpoint write failed: {exc}")
        agent.notify_pool_changed()
    return p.Reply.success({"released": released})
