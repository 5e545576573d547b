"""The node: every decision of a node agent, sans I/O (inputs with ``now`` in, commands out).

    node = Node(NodeConfig(...))
    commands = node.receive(Start(now))      # ReadIdentity(cid=1)
    commands = node.receive(IdentityRead(now, 1, identity))
    ...
    if node.wake_at is not None and now >= node.wake_at:
        commands = node.receive(Tick(now))

An executor performs each command and feeds back the input that answers it (see
:mod:`ipamcore.node.commands`); the daemon (asyncio, worker threads) and the simulator
(virtual time over the fake cloud) are two such executors, so they make the same decisions
by construction, and a log of the inputs replays every command.

What the node owns:

* start-up, in this order: identity; instance limits (the table, else EC2); EC2's view of the
  attached ENIs (instance metadata is only compared: it may be stale and list ENIs already
  gone, upstream #3887); subnets (subnet discovery); the leaked-ENI sweep of this instance
  (at start no creation of this node can be in flight, so any age counts); the checkpoint
  (missing, this project's, upstream's, unreadable or from a newer version, each with a log
  line and, for the last two, a quarantine of every address for
  ``max(IP_COOLDOWN_PERIOD, CORRUPT_QUARANTINE_S)``); the restore, dropping allocations whose
  pod's netns or host veth is gone (the executor checks, off its event loop); pending DELs;
  ENI then node datapath setup; a durable checkpoint; ready. EC2 calls at start are retried
  with a capped backoff while EC2 throttles or cannot be reached;
* requests: ADD (assign, or wait FIFO with a deadline while the policy brings addresses;
  then pod setup and a durable checkpoint at once, reply once both are done, unwind on
  failure), DEL, CHECK, GC; requests for one key never interleave;
* group commit: one checkpoint write in flight; every change made while it runs is in the
  next write, which all the requests waiting on it share (persist before acknowledging);
* effects: the pool policy when the core says a decision can change
  (:meth:`~ipamcore.ipam.Ipam.next_wake_at`; at most every ``policy_interval_s`` unless ADDs
  wait), within ``policy_interval_s`` of a request that changed the pool, and at once when
  kicked (an ADD waits, an effect's outcome, a reconciliation); a new ENI is
  used only once instance metadata lists it (polled, bounded), then set up, then waiting
  ADDs are served;
* timers: reconciliation with EC2, the leaked-ENI cleanup (ENIs over
  :data:`~ipamcore.node.config.LEAKED_ENI_AGE_S` old; a per-node spread of up to 10 % of the
  interval so a fleet restarted together does not call EC2 at the same second), and the
  "call me next at" value :attr:`Node.wake_at`.
"""

from __future__ import annotations

from ipamcore.node import inputs as i
from ipamcore.node.config import NodeConfig
from ipamcore.node.startup import StartUp


class Node(StartUp):
    """One node agent's decisions. Not thread-safe: feed it from one thread.

    Layers, each a module: :mod:`.runner` (tasks, waiting ADDs, group commit, outputs),
    :mod:`.upkeep` (policy, effects, timers), :mod:`.requests` (ADD, DEL, CHECK, GC),
    :mod:`.startup` (start-up and the checkpoint at restart)."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self._dispatch = {
            i.Start: self._on_start,
            i.Tick: self._on_tick,
            i.Stop: self._on_stop,
            i.Flush: self._on_flush,
            i.Cancel: self._on_cancel,
            i.EniConfigChanged: self._on_eniconfig,
            i.MaxPodsChanged: self._on_max_pods,
            i.Add: self._on_request,
            i.Del: self._on_request,
            i.Check: self._on_request,
            i.Gc: self._on_request,
        }
