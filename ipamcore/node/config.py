"""What a :class:`~ipamcore.node.machine.Node` is configured with: validated once, passed in.

The shell (the daemon's settings, the simulator's run config) builds one; the node never
reads the environment.
"""

from __future__ import annotations

import attrs

from ipamcore.config import PoolConfig

# The periodic cleanup calls an available ENI leaked once it is this old (upstream's 5 min):
# an ENI another node has just created and not attached yet is never touched.
LEAKED_ENI_AGE_S = 300.0
# An unreadable checkpoint quarantines every address for at least this long.
CORRUPT_QUARANTINE_S = 300.0


@attrs.frozen
class NodeConfig:
    """The node's settings. Durations are seconds of the ``now`` the inputs carry."""

    pool: PoolConfig = attrs.field(factory=PoolConfig)
    add_wait_s: float = 5.0
    # The policy looks at the pool at most this long after a request changed it (the changes
    # made meanwhile share one pass), and time-driven passes (Ipam.next_wake_at) come at most
    # this often unless ADDs wait; an idle node is not called on this beat.
    policy_interval_s: float = 5.0
    reconcile_interval_s: float = 60.0
    leaked_eni_interval_s: float = 3600.0
    leaked_eni_cleanup: bool = True
    eni_mtu: int = 9001
    pod_mtu: int = 9001
    veth_prefix: str = "eni"
    external_snat: bool = False
    # A new ENI is used once instance metadata lists it (upstream's
    # waitForENIAndIPsAttached): polled this often, for at most this long.
    eni_visible_poll_s: float = 0.05
    eni_visible_wait_s: float = 10.0
    # EC2 calls before "ready" are retried with a capped doubling backoff.
    start_retry_first_s: float = 1.0
    start_retry_max_s: float = 30.0
    checkpoint_path: str = ""  # named in log lines only
