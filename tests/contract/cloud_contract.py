"""The cloud contract: behaviour every ``CloudPort`` implementation must show.

How to use it
-------------
Subclass :class:`CloudContract` in a test module and provide a pytest fixture named ``env``
returning a :class:`CloudEnv`::

    class TestMyCloud(CloudContract):
        supports_throttling = False  # switch off what the backend cannot show

        @pytest.fixture
        def env(self) -> CloudEnv:
            ...

What ``env`` must hold (a fresh account per test):

* ``cloud``: the CloudPort under test.
* ``instance_id``: a running instance with only its primary ENI (device 0), launched in
  ``subnet_id``; its ``instance_type`` must allow at least 3 ENIs and 10 IPv4 addresses per
  ENI (``m5.large`` does).
* ``subnet_id``: the instance's subnet, at least a /24, tagged ``kubernetes.io/role/cni=1``.
* ``untagged_subnet_id``: another subnet in the same AZ without that tag (a /24 or larger).
* ``small_subnet_id``: a /28 in the same AZ (11 usable addresses, no free aligned /28).
* ``now()``: the current time (Unix seconds) of the clock the backend stamps ``createdAt``
  tags with; ``advance(seconds)`` moves that clock forward (a backend on a real clock can
  keep an offset that both ``now`` and its tagging use).
* ``make_leaked_eni(instance_id)``: create, out of band, an ENI in ``subnet_id`` tagged for
  ``instance_id`` (``node.k8s.amazonaws.com/instance_id`` and ``createdAt`` = ``now()``) and
  never attached, as an agent that crashed between create and attach leaves it; returns its id.
* ``make_detached_eni(tags)``: an unattached ENI in ``subnet_id`` carrying exactly ``tags``
  (created at ``now()``); returns its id.
* ``make_cloud(instance_id, delete_on_termination=, cluster_name=, observer=)``: another
  CloudPort of the same backend for the agent of ``instance_id``, built with those settings
  (its ``observer`` hears one CallRecord per EC2 call).
* ``launch_instance()``: another running instance (another node) like ``instance_id``.
* ``terminate_instance(instance_id)``: terminate it as EC2 does: ENIs with
  DeleteOnTermination are deleted, the others detached and left ``available``.

Capability flags (class attributes, all True here) let a backend skip what its substrate
cannot show: ``supports_limits`` (ENI and address limits by instance type),
``supports_prefixes`` (/28 prefix delegation), ``supports_subnet_exhaustion`` (free address
counts and SUBNET_FULL), ``supports_throttling`` (RequestLimitExceeded under load),
``supports_delete_on_termination`` (terminating an instance deletes the ENIs marked so),
``supports_network_cards`` (``launch_multi_card()`` runs an instance of
:data:`MULTI_CARD_TYPE`, whose ENIs attach per network card with per-card limits and device
indexes; moto accepts ``NetworkCardIndex`` but reports every ENI on card 0, so the EC2
backend's exact request is pinned by a Stubber test in ``tests/backends/test_ec2_stubbed.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import pytest

from backends.aws.convert import rfc3339
from backends.observe import CallObserver, CallRecord
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.limits import limits_for
from ipamcore.model import (
    CLUSTER_NAME_TAG,
    CREATED_AT_TAG,
    INSTANCE_ID_TAG,
    SUBNET_DISCOVERY_TAG,
    ObservedEni,
)
from ipamcore.ports import CloudPort

UNKNOWN_ENI = "eni-0123456789abcdef0"
UNKNOWN_SUBNET = "subnet-0123456789abcdef0"
FIVE_MINUTES = 300.0
GONE_INSTANCE = "i-0fedcba9876543210"  # an instance id this account does not run
MULTI_CARD_TYPE = "c6in.32xlarge"  # two network cards of 8 ENIs each


class CloudMaker(Protocol):
    def __call__(
        self,
        instance_id: str,
        *,
        delete_on_termination: bool = True,
        cluster_name: str = "",
        observer: CallObserver | None = None,
    ) -> CloudPort: ...


@attrs.define
class CloudEnv:
    """What a contract test needs from a backend; see the module docstring."""

    cloud: CloudPort
    instance_id: str
    instance_type: str
    subnet_id: str
    untagged_subnet_id: str
    small_subnet_id: str
    now: Callable[[], float]
    advance: Callable[[float], object]
    make_leaked_eni: Callable[[str], str]
    make_detached_eni: Callable[[Mapping[str, str]], str]
    make_cloud: CloudMaker
    launch_instance: Callable[[], str]
    terminate_instance: Callable[[str], object]
    launch_multi_card: Callable[[], str] | None = None


def in_cidr(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


def find_eni(env: CloudEnv, eni_id: str) -> ObservedEni:
    """The instance's ENI ``eni_id`` as describe_enis reports it (fails if absent)."""
    found = [e for e in env.cloud.describe_enis(env.instance_id) if e.eni_id == eni_id]
    assert len(found) == 1, f"{eni_id} attached {len(found)} times"
    return found[0]


def expect_failure(kind: FailureKind, call: Callable[[], object]) -> CloudError:
    """Run ``call`` expecting a CloudError of ``kind``; returns it for further checks."""
    with pytest.raises(CloudError) as info:
        call()
    assert info.value.kind is kind, f"expected {kind}, got {info.value.kind} ({info.value})"
    return info.value


class CloudContract:
    """Tests every CloudPort passes; subclasses provide the ``env`` fixture."""

    supports_limits = True
    supports_prefixes = True
    supports_subnet_exhaustion = True
    supports_throttling = True
    supports_delete_on_termination = True
    supports_network_cards = True

    def requires(self, capability: str) -> None:
        if not getattr(self, capability):
            pytest.skip(f"backend lacks {capability}")

    # -- describe ----------------------------------------------------------------------------

    def test_describe_enis_shows_the_primary_eni(self, env: CloudEnv) -> None:
        enis = env.cloud.describe_enis(env.instance_id)
        assert len(enis) == 1
        primary = enis[0]
        assert primary.device_index == 0
        assert primary.is_primary
        assert primary.subnet_id == env.subnet_id
        assert in_cidr(primary.primary_ip, primary.subnet_cidr)
        assert primary.ipv4_addresses == ()
        assert primary.eni_id.startswith("eni-")

    def test_describe_instance_type_matches_the_limits_table(self, env: CloudEnv) -> None:
        limits = env.cloud.describe_instance_type(env.instance_type)
        expected = limits_for(env.instance_type)
        assert (limits.max_enis, limits.ipv4_per_eni) == (expected.max_enis, expected.ipv4_per_eni)

    def test_unknown_instance_type_is_not_found(self, env: CloudEnv) -> None:
        expect_failure(
            FailureKind.NOT_FOUND, lambda: env.cloud.describe_instance_type("no.such-type")
        )

    # -- ENI lifecycle -----------------------------------------------------------------------

    def test_create_eni_attaches_at_the_next_device_index_with_tags(self, env: CloudEnv) -> None:
        eni = env.cloud.create_eni(
            env.instance_id,
            CreateEni(0, env.subnet_id, ()),
            {"cluster.k8s.amazonaws.com/name": "c1"},
        )
        assert eni.device_index == 1
        assert not eni.is_primary
        assert eni.subnet_id == env.subnet_id
        tags = eni.tag_map
        assert tags[INSTANCE_ID_TAG] == env.instance_id
        assert CREATED_AT_TAG in tags
        assert tags["cluster.k8s.amazonaws.com/name"] == "c1"
        assert sorted(e.device_index for e in env.cloud.describe_enis(env.instance_id)) == [0, 1]
        described = find_eni(env, eni.eni_id)
        assert (described.device_index, described.primary_ip) == (1, eni.primary_ip)

    def test_create_eni_fills_the_lowest_free_device_index(self, env: CloudEnv) -> None:
        first = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        second = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        assert (first.device_index, second.device_index) == (1, 2)
        env.cloud.free_eni(first.eni_id)
        third = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        assert third.device_index == 1

    def test_create_eni_with_secondary_addresses(self, env: CloudEnv) -> None:
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=3))
        assert len(eni.ipv4_addresses) == 3
        assert len({*eni.ipv4_addresses, eni.primary_ip}) == 4
        assert all(in_cidr(a, eni.subnet_cidr) for a in eni.ipv4_addresses)
        described = find_eni(env, eni.eni_id)
        assert set(described.ipv4_addresses) == set(eni.ipv4_addresses)

    def test_create_eni_in_another_subnet(self, env: CloudEnv) -> None:
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.untagged_subnet_id, ()))
        assert eni.subnet_id == env.untagged_subnet_id
        assert in_cidr(eni.primary_ip, eni.subnet_cidr)

    def test_free_eni_detaches_and_deletes(self, env: CloudEnv) -> None:
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=2))
        env.cloud.free_eni(eni.eni_id)
        assert [e.device_index for e in env.cloud.describe_enis(env.instance_id)] == [0]
        expect_failure(FailureKind.NOT_FOUND, lambda: env.cloud.free_eni(eni.eni_id))

    # -- addresses ---------------------------------------------------------------------------

    def test_assign_and_unassign_ipv4(self, env: CloudEnv) -> None:
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        got = env.cloud.assign_ipv4(eni.eni_id, 4)
        assert len(set(got)) == 4
        assert eni.primary_ip not in got
        assert all(in_cidr(a, eni.subnet_cidr) for a in got)

        assert set(find_eni(env, eni.eni_id).ipv4_addresses) == set(got)
        env.cloud.unassign_ipv4(eni.eni_id, got[:2])
        assert set(find_eni(env, eni.eni_id).ipv4_addresses) == set(got[2:])

    def test_addresses_are_unique_across_enis(self, env: CloudEnv) -> None:
        primary = env.cloud.describe_enis(env.instance_id)[0]
        a = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=3))
        b = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=3))
        more = env.cloud.assign_ipv4(primary.eni_id, 3)
        everything = [primary.primary_ip, *more, a.primary_ip, *a.ipv4_addresses]
        everything += [b.primary_ip, *b.ipv4_addresses]
        assert len(everything) == len(set(everything)) == 12

    def test_unknown_eni_is_not_found(self, env: CloudEnv) -> None:
        cloud = env.cloud
        expect_failure(FailureKind.NOT_FOUND, lambda: cloud.assign_ipv4(UNKNOWN_ENI, 1))
        expect_failure(
            FailureKind.NOT_FOUND, lambda: cloud.unassign_ipv4(UNKNOWN_ENI, ["10.0.0.77"])
        )
        expect_failure(FailureKind.NOT_FOUND, lambda: cloud.free_eni(UNKNOWN_ENI))

    # -- subnets -----------------------------------------------------------------------------

    def test_describe_subnets_by_id(self, env: CloudEnv) -> None:
        [subnet] = env.cloud.describe_subnets([env.subnet_id])
        primary = env.cloud.describe_enis(env.instance_id)[0]
        assert subnet.subnet_id == env.subnet_id
        assert subnet.cidr == primary.subnet_cidr
        assert subnet.availability_zone
        assert subnet.free_addresses > 0

    def test_describe_unknown_subnet_is_not_found(self, env: CloudEnv) -> None:
        expect_failure(FailureKind.NOT_FOUND, lambda: env.cloud.describe_subnets([UNKNOWN_SUBNET]))

    def test_describe_subnets_by_discovery_tag(self, env: CloudEnv) -> None:
        found = {s.subnet_id for s in env.cloud.describe_subnets(tag_key=SUBNET_DISCOVERY_TAG)}
        assert env.subnet_id in found
        assert env.untagged_subnet_id not in found
        assert env.small_subnet_id not in found

    # -- leaked ENIs -------------------------------------------------------------------------

    def test_leaked_eni_is_found_only_after_five_minutes(self, env: CloudEnv) -> None:
        leaked = env.make_leaked_eni(env.instance_id)
        assert leaked not in env.cloud.find_leaked_enis(env.instance_id, env.now())
        env.advance(FIVE_MINUTES + 1)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now()) == [leaked]

    def test_enis_of_other_instances_and_attached_enis_are_not_leaked(self, env: CloudEnv) -> None:
        env.make_leaked_eni("i-0fedcba9876543210")
        env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        env.advance(FIVE_MINUTES + 1)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now()) == []

    def test_any_instance_scope_is_as_old_as_the_own_one(self, env: CloudEnv) -> None:
        other = env.launch_instance()
        fresh = env.make_leaked_eni(other)  # another node's, created, not attached yet
        mine = env.make_leaked_eni(env.instance_id)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []
        env.advance(FIVE_MINUTES - 10)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []
        env.advance(11)
        found = env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True)
        assert found == sorted([fresh, mine])
        assert env.cloud.find_leaked_enis(env.instance_id, env.now()) == [mine]

    def test_attached_enis_of_other_nodes_are_never_leaked(self, env: CloudEnv) -> None:
        other = env.launch_instance()
        env.make_cloud(other).create_eni(other, CreateEni(0, env.subnet_id, ()))
        env.advance(FIVE_MINUTES + 1)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []

    def test_enis_without_our_instance_tag_are_never_leaked(self, env: CloudEnv) -> None:
        old = rfc3339(env.now() - 3600)
        env.make_detached_eni({})
        env.make_detached_eni({CREATED_AT_TAG: old})
        env.make_detached_eni({CREATED_AT_TAG: old, CLUSTER_NAME_TAG: "c1"})
        env.advance(FIVE_MINUTES + 1)
        named = env.make_cloud(env.instance_id, cluster_name="c1")
        for cloud in (env.cloud, named):
            assert cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []
            assert cloud.find_leaked_enis(env.instance_id, env.now()) == []

    def test_with_a_cluster_name_only_that_clusters_enis_are_leaked(self, env: CloudEnv) -> None:
        def eni_of(cluster: str) -> str:
            tags = {INSTANCE_ID_TAG: GONE_INSTANCE, CREATED_AT_TAG: rfc3339(env.now())}
            if cluster:
                tags[CLUSTER_NAME_TAG] = cluster
            return env.make_detached_eni(tags)

        ours, theirs, unnamed = eni_of("c1"), eni_of("c2"), eni_of("")
        env.advance(FIVE_MINUTES + 1)
        named = env.make_cloud(env.instance_id, cluster_name="c1")
        assert named.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == [ours]
        # without CLUSTER_NAME, upstream's filter has no cluster term: every node's ENIs
        everyone = env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True)
        assert everyone == sorted([ours, theirs, unnamed])

    # -- DeleteOnTermination -----------------------------------------------------------------

    @pytest.mark.parametrize("delete_on_termination", [True, False])
    def test_create_eni_calls_with_and_without_delete_on_termination(
        self, env: CloudEnv, delete_on_termination: bool
    ) -> None:
        calls: list[CallRecord] = []
        cloud = env.make_cloud(
            env.instance_id, delete_on_termination=delete_on_termination, observer=calls.append
        )
        eni = cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=2))
        mutating = [c.action for c in calls if c.mutating]
        expected = ["CreateNetworkInterface", "AttachNetworkInterface"]
        if delete_on_termination:
            expected.append("ModifyNetworkInterfaceAttribute")
        assert mutating == expected
        assert CREATED_AT_TAG in eni.tag_map  # stamped in the create call, no CreateTags
        described = find_eni(env, eni.eni_id)
        assert (described.device_index, len(described.ipv4_addresses)) == (1, 2)

    @pytest.mark.parametrize("delete_on_termination", [True, False])
    def test_a_terminated_nodes_enis_stay_only_without_delete_on_termination(
        self, env: CloudEnv, delete_on_termination: bool
    ) -> None:
        self.requires("supports_delete_on_termination")
        other = env.launch_instance()
        cloud = env.make_cloud(other, delete_on_termination=delete_on_termination)
        theirs = cloud.create_eni(other, CreateEni(0, env.subnet_id, ())).eni_id
        env.terminate_instance(other)
        env.advance(FIVE_MINUTES + 1)
        found = env.cloud.find_leaked_enis(env.instance_id, env.now(), any_instance=True)
        assert found == ([] if delete_on_termination else [theirs])

    def test_another_node_frees_a_terminated_nodes_eni(self, env: CloudEnv) -> None:
        other = env.launch_instance()
        cloud = env.make_cloud(other, cluster_name="c1", delete_on_termination=False)
        theirs = cloud.create_eni(other, CreateEni(0, env.subnet_id, (), ipv4_count=2)).eni_id
        env.terminate_instance(other)
        mine = env.make_cloud(env.instance_id, cluster_name="c1")
        assert mine.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []
        env.advance(FIVE_MINUTES + 1)
        assert mine.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == [theirs]
        assert mine.find_leaked_enis(env.instance_id, env.now()) == []  # not this node's own
        mine.free_eni(theirs)
        assert mine.find_leaked_enis(env.instance_id, env.now(), any_instance=True) == []
        expect_failure(FailureKind.NOT_FOUND, lambda: mine.free_eni(theirs))

    # -- network cards -----------------------------------------------------------------------

    def _multi_card(self, env: CloudEnv) -> tuple[CloudPort, str]:
        self.requires("supports_network_cards")
        assert env.launch_multi_card is not None
        iid = env.launch_multi_card()
        return env.make_cloud(iid), iid

    def test_create_eni_on_a_network_card_has_its_own_device_indexes(self, env: CloudEnv) -> None:
        cloud, iid = self._multi_card(env)
        on_0 = cloud.create_eni(iid, CreateEni(0, env.subnet_id, ()))
        on_1 = cloud.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1))
        again_1 = cloud.create_eni(
            iid, CreateEni(0, env.subnet_id, (), ipv4_count=1, network_card=1)
        )
        assert (on_0.network_card, on_0.device_index) == (0, 1)
        assert (on_1.network_card, on_1.device_index) == (1, 1)
        assert (again_1.network_card, again_1.device_index) == (1, 2)
        assert len(again_1.ipv4_addresses) == 1 and not on_1.is_primary
        described = {e.eni_id: (e.network_card, e.device_index) for e in cloud.describe_enis(iid)}
        assert described[on_1.eni_id] == (1, 1) and described[again_1.eni_id] == (1, 2)
        assert sorted(described.values()) == [(0, 0), (0, 1), (1, 1), (1, 2)]

    def test_a_reserved_device_index_on_a_card_is_used(self, env: CloudEnv) -> None:
        cloud, iid = self._multi_card(env)
        eni = cloud.create_eni(iid, CreateEni(0, env.subnet_id, (), device_index=3, network_card=1))
        assert (eni.network_card, eni.device_index) == (1, 3)
        expect_failure(
            FailureKind.OTHER,
            lambda: cloud.create_eni(
                iid, CreateEni(0, env.subnet_id, (), device_index=3, network_card=1)
            ),
        )

    def test_each_card_has_its_own_eni_limit(self, env: CloudEnv) -> None:
        self.requires("supports_limits")
        cloud, iid = self._multi_card(env)
        per_card = dict(limits_for(MULTI_CARD_TYPE).network_cards)[1]
        for _ in range(per_card):
            cloud.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1))
        before = {e.eni_id for e in cloud.describe_enis(iid)}
        expect_failure(
            FailureKind.LIMIT_EXCEEDED,
            lambda: cloud.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1)),
        )
        assert {e.eni_id for e in cloud.describe_enis(iid)} == before
        # Card 0 still has room: a full card 1 takes none of card 0's ENIs.
        assert cloud.create_eni(iid, CreateEni(0, env.subnet_id, ())).network_card == 0

    def test_a_card_the_type_lacks_is_refused(self, env: CloudEnv) -> None:
        self.requires("supports_limits")
        cloud, iid = self._multi_card(env)
        expect_failure(
            FailureKind.OTHER,
            lambda: cloud.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=5)),
        )
        assert [e.network_card for e in cloud.describe_enis(iid)] == [0]

    # -- limits (what moto does not enforce) -------------------------------------------------

    def test_assign_beyond_the_per_eni_limit(self, env: CloudEnv) -> None:
        self.requires("supports_limits")
        room = limits_for(env.instance_type).ips_per_eni
        eni = env.cloud.create_eni(
            env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=room - 1)
        )
        expect_failure(FailureKind.LIMIT_EXCEEDED, lambda: env.cloud.assign_ipv4(eni.eni_id, 2))
        assert len(env.cloud.assign_ipv4(eni.eni_id, 1)) == 1
        expect_failure(FailureKind.LIMIT_EXCEEDED, lambda: env.cloud.assign_ipv4(eni.eni_id, 1))

    def test_create_eni_beyond_max_enis_leaves_nothing_behind(self, env: CloudEnv) -> None:
        self.requires("supports_limits")
        for _ in range(limits_for(env.instance_type).max_enis - 1):
            env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        before = {e.eni_id for e in env.cloud.describe_enis(env.instance_id)}
        expect_failure(
            FailureKind.LIMIT_EXCEEDED,
            lambda: env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ())),
        )
        assert {e.eni_id for e in env.cloud.describe_enis(env.instance_id)} == before
        env.advance(FIVE_MINUTES + 1)
        assert env.cloud.find_leaked_enis(env.instance_id, env.now()) == []

    # -- prefixes ----------------------------------------------------------------------------

    def test_assign_and_unassign_prefixes(self, env: CloudEnv) -> None:
        self.requires("supports_prefixes")
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, ()))
        prefixes = env.cloud.assign_prefixes(eni.eni_id, 2)
        assert len(set(prefixes)) == 2
        for p in prefixes:
            net = ipaddress.ip_network(p)  # strict: raises if not aligned
            assert net.prefixlen == 28
            assert net.subnet_of(ipaddress.ip_network(eni.subnet_cidr))  # type: ignore[arg-type]
            assert ipaddress.ip_address(eni.primary_ip) not in net
        described = find_eni(env, eni.eni_id)
        assert set(described.ipv4_prefixes) == set(prefixes)
        env.cloud.unassign_prefixes(eni.eni_id, prefixes[:1])
        described = find_eni(env, eni.eni_id)
        assert described.ipv4_prefixes == prefixes[1:]

    def test_create_eni_with_prefixes(self, env: CloudEnv) -> None:
        self.requires("supports_prefixes")
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), prefix_count=1))
        assert len(eni.ipv4_prefixes) == 1
        assert ipaddress.ip_address(eni.primary_ip) not in ipaddress.ip_network(
            eni.ipv4_prefixes[0]
        )

    # -- subnet exhaustion -------------------------------------------------------------------

    def test_free_address_count_follows_assignments(self, env: CloudEnv) -> None:
        self.requires("supports_subnet_exhaustion")
        [before] = env.cloud.describe_subnets([env.subnet_id])
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.subnet_id, (), ipv4_count=2))
        [after] = env.cloud.describe_subnets([env.subnet_id])
        assert after.free_addresses == before.free_addresses - 3
        env.cloud.free_eni(eni.eni_id)
        [freed] = env.cloud.describe_subnets([env.subnet_id])
        assert freed.free_addresses == before.free_addresses

    def test_small_subnet_runs_out(self, env: CloudEnv) -> None:
        self.requires("supports_subnet_exhaustion")
        [small] = env.cloud.describe_subnets([env.small_subnet_id])
        assert small.free_addresses == 11
        env.cloud.create_eni(
            env.instance_id, CreateEni(0, env.small_subnet_id, (), ipv4_count=6)
        )  # 4 left
        err = expect_failure(
            FailureKind.SUBNET_FULL,
            lambda: env.cloud.create_eni(
                env.instance_id, CreateEni(0, env.small_subnet_id, (), ipv4_count=4)
            ),
        )
        assert err.code == "InsufficientFreeAddressesInSubnet"
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.small_subnet_id, ()))  # 3 left
        expect_failure(FailureKind.SUBNET_FULL, lambda: env.cloud.assign_ipv4(eni.eni_id, 4))
        assert len(env.cloud.assign_ipv4(eni.eni_id, 3)) == 3
        [full] = env.cloud.describe_subnets([env.small_subnet_id])
        assert full.free_addresses == 0

    def test_no_prefix_in_a_subnet_without_a_free_aligned_block(self, env: CloudEnv) -> None:
        self.requires("supports_subnet_exhaustion")
        self.requires("supports_prefixes")
        eni = env.cloud.create_eni(env.instance_id, CreateEni(0, env.small_subnet_id, ()))
        expect_failure(FailureKind.SUBNET_FULL, lambda: env.cloud.assign_prefixes(eni.eni_id, 1))

    # -- throttling --------------------------------------------------------------------------

    def test_hammering_is_throttled_then_recovers(self, env: CloudEnv) -> None:
        self.requires("supports_throttling")
        error: CloudError | None = None
        for _ in range(1000):
            try:
                env.cloud.describe_enis(env.instance_id)
            except CloudError as err:
                error = err
                break
        assert error is not None, "1000 back-to-back describes were never throttled"
        assert error.kind is FailureKind.THROTTLED
        assert error.code == "RequestLimitExceeded"
        env.advance(60)
        assert len(env.cloud.describe_enis(env.instance_id)) == 1
