"""Upstream v1.23.1 ``pkg/ipamd/datastore/secondary_eni_exclusion_focused_test.go``.

Upstream excludes an ENI from pod addresses with ``SetENIExcludedForPodIPs`` (an ENI in a
subnet tagged ``kubernetes.io/role/cni=0``) and can still free it when it is idle. The core's
only exclusion of a secondary ENI is the ``no_manage=true`` tag, which upstream too treats as
"not ours": such an ENI carries no pod addresses and is never freed. So the allocation
halves of these tests translate (with the tag as the exclusion); the "excluded ENI is
deletable" halves do not, and are listed in ``tests/core/fidelity/__init__.py``. The core
reads the tag when an ENI joins the pool; a tag added to an ENI already in the pool is not
seen until the node restarts (listed there too).
"""

from __future__ import annotations

import pytest

from ipamcore.config import PoolConfig
from ipamcore.effects import FreeEni
from ipamcore.errors import PoolExhausted
from ipamcore.model import NO_MANAGE_TAG, ObservedNode
from tests.core.fidelity.upstream import (
    OLD,
    datastore,
    eni_ids,
    ipam_key,
    metadata,
    observed,
    shrink_answered,
)

EXCLUDED = ((NO_MANAGE_TAG, "true"),)


def test_secondary_eni_exclusion_focused() -> None:
    """TestSecondaryENIExclusionFocused, tests 1-6 and 9-10: once the secondary ENI is
    excluded, the first pod goes to the primary, the second finds no address ("no available
    IP/Prefix addresses"), and the primary is unaffected."""
    primary = observed("eni-primary", 0, primary=True, ips=("10.0.1.1",))
    secondary = observed("eni-secondary", 1, ips=("10.0.2.1",))
    ipam = datastore([primary, secondary], PoolConfig(warm_eni_target=0))
    assert ipam.stats(0.0).available == 2  # test 1: two ENIs carry addresses
    excluded = observed("eni-secondary", 1, ips=("10.0.2.1",), tags=EXCLUDED)
    ipam = datastore([primary, excluded], PoolConfig(warm_eni_target=0))
    assert ipam.stats(0.0).available == 1  # tests 2-3: only the primary's address
    first = ipam.assign(ipam_key("pod-1"), metadata("pod-1"), 0.0)
    assert first.ipv4 is not None and first.ipv4.startswith("10.0.1.")  # test 4
    with pytest.raises(PoolExhausted, match="no address is ready"):  # test 6
        ipam.assign(ipam_key("pod-2"), metadata("pod-2"), 0.0)
    assert [v.assigned for v in ipam.eni_views(0.0)] == [1, 0]  # tests 5 and 9


def test_secondary_eni_exclusion_with_pods() -> None:
    """TestSecondaryENIExclusionWithPods: a pod already on the secondary ENI keeps its address
    when the ENI becomes excluded, new pods avoid the excluded ENI, and the excluded ENI is
    not freed while it carries the pod."""
    primary = observed("eni-primary", 0, primary=True, ips=("10.0.1.1",))
    secondary = observed("eni-secondary", 1, ips=("10.0.2.1",))
    ipam = datastore([primary, secondary], PoolConfig(warm_eni_target=0))
    ipam.assign(ipam_key("pod-1"), metadata("pod-1"), 0.0)
    on_secondary = ipam.assign(ipam_key("pod-2"), metadata("pod-2"), 0.0)
    assert on_secondary.eni_id == "eni-secondary"
    # the secondary becomes excluded (tagged) while its pod runs; the primary gets an address
    excluded = observed("eni-secondary", 1, ips=("10.0.2.1",), tags=EXCLUDED)
    grown = observed("eni-primary", 0, primary=True, ips=("10.0.1.1", "10.0.1.2"))
    ipam.reconcile(ObservedNode((grown, excluded)), 100.0)
    assert ipam.get(ipam_key("pod-2")) == on_secondary  # kept
    assert not [e for e in shrink_answered(ipam, OLD) if isinstance(e, FreeEni)]
    new = ipam.assign(ipam_key("new-pod"), metadata("new-pod"), OLD)
    assert new.ipv4 == "10.0.1.2"  # the new pod goes to the primary
    assert "eni-secondary" in eni_ids(ipam, OLD)
