"""A realistic latency profile for the fake cloud: how long EC2 takes to answer each action,
and how long instance metadata (IMDS) lags behind an attach.

EC2 publishes no latency figures; these are assumptions, each within the range public sources
report, chosen in the middle of it:

* ``AssignPrivateIpAddresses`` 0.4 s: upstream measured "a 400 - 600ms delay" for assigning
  the first ENI's addresses at start (aws/amazon-vpc-cni-k8s#648).
* ``AssignIpv6Addresses`` 0.4 s (the /80 an IPv6 node takes at start): the same kind of
  call as ``AssignPrivateIpAddresses``; no figure of its own is published.
* ``CreateNetworkInterface`` 0.4 s with its secondary addresses in the same call (the same
  kind of control-plane write as an assign; hundreds of milliseconds).
* ``AttachNetworkInterface`` 0.25 s: it returns quickly with the attachment still
  ``attaching``; the device shows up on the instance later (next item).
* metadata lag 1.5 s: a new ENI (and its addresses) appears in IMDS about 1 - 2 s after the
  attach; upstream waits for it (``waitForENIAndIPsAttached``, aws/amazon-vpc-cni-k8s#1131,
  #1174) and #648 counts "at least 2.5 seconds" before a new ENI's addresses are usable;
  stragglers take far longer (up to 18 s: aws/amazon-ecs-cni-plugins#66), which this
  profile does not model.
* describes 0.15 s, ``ModifyNetworkInterfaceAttribute`` 0.15 s, detach/delete 0.3 s,
  unassign 0.2 s (the simulator's :data:`adapters.simulator.cluster.DEFAULT_LATENCIES` are
  of the same order).

:func:`least_new_eni_time` is the least time these latencies allow a node to get a new ENI's
addresses usable: create (with the addresses) + attach + the metadata lag, with
``ModifyNetworkInterfaceAttribute`` (DeleteOnTermination) overlapping the lag, or no Modify at
all with ``ENI_DELETE_ON_TERMINATION=false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.fakecloud.cloud import FakeCloud

REALISTIC_LATENCIES: Mapping[str, float] = {
    "AssignIpv6Addresses": 0.4,
    "AssignPrivateIpAddresses": 0.4,
    "AttachNetworkInterface": 0.25,
    "CreateNetworkInterface": 0.4,
    "DeleteNetworkInterface": 0.3,
    "DescribeInstanceTypes": 0.15,
    "DescribeInstances": 0.15,
    "DescribeNetworkInterfaces": 0.15,
    "DescribeSubnets": 0.15,
    "DetachNetworkInterface": 0.3,
    "ModifyNetworkInterfaceAttribute": 0.15,
    "UnassignPrivateIpAddresses": 0.2,
}
REALISTIC_METADATA_LAG_S = 1.5


def use_realistic_latency(cloud: FakeCloud) -> None:
    """Give every action of ``cloud`` its realistic latency and lag its metadata."""
    for action, seconds in REALISTIC_LATENCIES.items():
        cloud.set_latency(action, seconds)
    cloud.metadata_lag = REALISTIC_METADATA_LAG_S


def least_new_eni_time(
    latencies: Mapping[str, float] = REALISTIC_LATENCIES,
    metadata_lag_s: float = REALISTIC_METADATA_LAG_S,
    delete_on_termination: bool = True,
) -> float:
    """Seconds from the decision to create an ENI to its addresses being usable, at best:
    CreateNetworkInterface (addresses included) + AttachNetworkInterface + the longer of
    the metadata lag and ModifyNetworkInterfaceAttribute (which runs during the lag; not
    made without ``delete_on_termination``)."""
    create = latencies.get("CreateNetworkInterface", 0.0)
    attach = latencies.get("AttachNetworkInterface", 0.0)
    modify = latencies.get("ModifyNetworkInterfaceAttribute", 0.0)
    return create + attach + max(metadata_lag_s, modify if delete_on_termination else 0.0)


def least_burst_time(
    latencies: Mapping[str, float] = REALISTIC_LATENCIES,
    metadata_lag_s: float = REALISTIC_METADATA_LAG_S,
    delete_on_termination: bool = True,
) -> float:
    """The least time a burst needing new ENIs can be served in, when every ENI is created
    in parallel and the primary ENI is filled by one AssignPrivateIpAddresses meanwhile."""
    fill_primary = latencies.get("AssignPrivateIpAddresses", 0.0)
    new_eni = least_new_eni_time(latencies, metadata_lag_s, delete_on_termination)
    return max(new_eni, fill_primary)
