"""The node's IPAM state machine: pool + warm-pool policy + in-flight effects + reconciliation.

This is the one object a daemon, a simulator or an embedding program drives:

* pods: :meth:`Ipam.assign` / :meth:`Ipam.release` (O(log n), deterministic choice);
* policy: :meth:`Ipam.plan` returns effects, the shell performs them and reports each
  outcome with :meth:`Ipam.apply`;
* reconciliation: :meth:`Ipam.reconcile` with an observed snapshot of the instance's ENIs;
* persistence: :meth:`Ipam.checkpoint` / :meth:`Ipam.restore`.

Every method that depends on time takes ``now`` (Unix seconds, float). Nothing here does I/O.
"""

from __future__ import annotations
