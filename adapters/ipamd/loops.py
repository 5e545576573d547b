"""The agent's timers, all on the injectable clock (tests advance a VirtualClock).

* pool policy: every ``policy_interval_s`` (5 s) and at once when kicked (an ADD found the
  pool short, or an effect finished);
* reconciliation with EC2 (and metadata, at start) every ``reconcile_interval_s`` (60 s);
* leaked-ENI cleanup every ``leaked_eni_interval_s`` (1 h) plus up to 10 % jitter, so a
  fleet of nodes restarted together does not call EC2 at the same second. It frees, as
  upstream does, every available ENI of the VPC tagged by this CNI for any instance (of
  this cluster when ``CLUSTER_NAME`` is set) whose ``createdAt`` is over five minutes old:
  those a terminated node left (they keep no DeleteOnTermination with
  ``ENI_DELETE_ON_TERMINATION=false``) and those a crash left; the age guard keeps it off
  an ENI another node has just created and not attached yet.
"""

from __future__ import annotations

import random

from adapters.ipamd.agent import Agent
from adapters.ipamd.clock import race_timeout
from adapters.ipamd.startup import free_leaked_enis, refresh_subnets
from ipamcore.model import ObservedNode


async def policy_loop(agent: Agent) -> None:
    interval = agent.settings.policy_interval_s
    while not agent.stopping:
        agent.kicked.clear()
        try:
            agent.run_policy()
        except Exception as exc:  # a bug must not stop the loop
            agent.log.exception("policy pass failed", error=str(exc))
        agent.notify_pool_changed()  # cooldowns may have ended: waiting ADDs retry
        await race_timeout(agent.clock, agent.kicked.wait(), interval)


async def reconcile_once(agent: Agent) -> None:
    """One reconciliation pass with EC2's view of the instance."""
    assert agent.identity is not None
    enis = await agent.in_cloud(agent.ports.cloud.describe_enis, agent.identity.instance_id)
    before = {e.eni_id for e in agent.core.eni_views(agent.clock.now())}
    report = agent.core.reconcile(ObservedNode(tuple(enis)), agent.clock.now())
    agent.metrics.reconcile.labels("eni").inc()
    change = report.diff
    if not change.empty:
        agent.log.info(
            "reconciled", added_enis=[e.eni_id for e in change.add_enis],
            removed_enis=list(change.remove_enis), added_blocks=len(change.add_blocks),
            removed_blocks=len(change.remove_blocks),
        )  # fmt: skip
    removed_enis = sum(1 for e in change.remove_enis if e in before)
    agent.note_force_removed(report.force_removed, removed_enis)
    for eni in change.add_enis:
        await agent.setup_eni(eni)
    await agent.retry_eni_setups()
    await refresh_subnets(agent)
    if report.force_removed:
        await agent.committer.commit()
    agent.notify_pool_changed()
    agent.kick()


async def reconcile_loop(agent: Agent) -> None:
    while not agent.stopping:
        await agent.clock.sleep(agent.settings.reconcile_interval_s)
        if agent.stopping:
            return
        try:
            await reconcile_once(agent)
        except Exception as exc:
            agent.log.warning("reconciliation failed", error=str(exc))


async def cleanup_leaked_once(agent: Agent) -> list[str]:
    """Free the ENIs of any node of the cluster that were left detached (see the module
    docstring); returns the ids freed."""
    assert agent.identity is not None
    cloud = agent.ports.cloud
    leaked = await agent.in_cloud(
        cloud.find_leaked_enis, agent.identity.instance_id, agent.clock.now(), True
    )  # any_instance=True: upstream's scope
    return await free_leaked_enis(agent, leaked, at_start=False)


async def leaked_eni_loop(agent: Agent, rng: random.Random) -> None:
    interval = agent.settings.leaked_eni_interval_s
    while not agent.stopping:
        await agent.clock.sleep(interval + rng.uniform(0.0, interval * 0.1))
        if agent.stopping:
            return
        try:
            await cleanup_leaked_once(agent)
        except Exception as exc:
            agent.log.warning("leaked ENI cleanup failed", error=str(exc))
