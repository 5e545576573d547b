"""The socket's requests as node inputs, and the node's replies as protocol replies.

Every decision (ordering, waiting, unwinding) is the node's (:mod:`ipamcore.node.machine`);
this module only translates between :mod:`adapters.protocol` and :mod:`ipamcore.node`.
STATUS is a query of the node's state, not an input.
"""

from __future__ import annotations

import time

from adapters import protocol as p
from adapters.ipamd.executor import NodeExecutor
from ipamcore.model import Allocation, AllocationKey, PodRef
from ipamcore.netspec import PodNetwork
from ipamcore.node import commands as c
from ipamcore.node import inputs as i


def pod_network(
    executor: NodeExecutor, allocation: Allocation, netns: str, mtu: int | None = None
) -> PodNetwork:
    """The datapath the daemon builds for ``allocation``'s pod."""
    return executor.node.pod_network(allocation, netns, mtu)


def _key(req: p.Request) -> AllocationKey:
    return AllocationKey(req.network_name, req.container_id, req.if_name)


async def handle(executor: NodeExecutor, req: p.Request) -> p.Reply:
    """Dispatch one validated request."""
    if executor.stopping:
        return p.Reply.failure(p.ERR_SHUTTING_DOWN, "ipamd is stopping; try again")
    op = req.op
    if op == p.OP_ADD:
        began = time.perf_counter()
        pod = PodRef(req.pod_namespace, req.pod_name)
        reply = _reply(op, await executor.request(
            lambda now, rid: i.Add(now, rid, _key(req), pod, req.netns, req.mtu, req.multi_nic)
        ))  # fmt: skip
        outcome = "ok" if reply.ok else reply.error_code
        executor.metrics.add_latency.labels(outcome).observe(time.perf_counter() - began)
        return reply
    if op == p.OP_DEL:
        return _reply(op, await executor.request(
            lambda now, rid: i.Del(now, rid, _key(req), req.netns)
        ))  # fmt: skip
    if op == p.OP_CHECK:
        return _reply(op, await executor.request(
            lambda now, rid: i.Check(now, rid, _key(req), req.netns, req.mtu)
        ))  # fmt: skip
    if op == p.OP_STATUS:
        return status(executor)
    if op == p.OP_GC:
        valid = frozenset(tuple(v) for v in req.valid_attachments or ())
        return _reply(op, await executor.request(
            lambda now, rid: i.Gc(now, rid, req.network_name, valid)  # type: ignore[arg-type]
        ))  # fmt: skip
    return p.Reply.failure(p.ERR_BAD_REQUEST, f"unknown op {op!r}")


def _reply(op: str, reply: c.Reply) -> p.Reply:
    if reply.error:
        return p.Reply.failure(reply.error, reply.message)
    allocation = reply.allocation
    if op == p.OP_ADD:
        assert allocation is not None and allocation.ipv4 is not None and reply.pod is not None
        result = _add_result(allocation, reply.pod)
        result.attachments = [_add_result(a, n) for a, n in reply.extra]
        return p.Reply.success(result.to_dict())
    if op == p.OP_DEL:
        if not reply.released or allocation is None:
            return p.Reply.success({"released": False})
        return p.Reply.success({"released": True, "ipv4": allocation.ipv4})
    if op == p.OP_CHECK:
        assert allocation is not None
        return p.Reply.success({"ipv4": allocation.ipv4})
    return p.Reply.success({"released": reply.released})


def _add_result(allocation: Allocation, net: PodNetwork) -> p.AddResult:
    return p.AddResult(
        host_veth=net.host_veth,
        if_name=net.if_name,
        ipv4=allocation.ipv4,
        gateway=net.gateway,
        eni_id=allocation.eni_id,
        device_index=allocation.device_index,
        mtu=net.mtu,
    )


def status(executor: NodeExecutor) -> p.Reply:
    stats = executor.stats()
    return p.Reply.success(
        {
            "ready": executor.ready,
            "enis": stats.enis,
            "total": stats.total,
            "assigned": stats.assigned,
            "available": stats.available,
            "cooling": stats.cooling,
        }
    )
