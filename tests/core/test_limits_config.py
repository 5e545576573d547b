"""Instance limits (the brief's table, corrected) and configuration validation."""

from __future__ import annotations

import pytest

from ipamcore.config import PoolConfig, choose_discovered_subnet
from ipamcore.errors import ConfigError, UnknownInstanceType
from ipamcore.limits import known_instance_types, limits_for, max_pods
from ipamcore.model import Subnet


@pytest.mark.parametrize(
    ("instance_type", "enis", "ipv4", "pods"),
    [
        ("t3.medium", 3, 6, 17), ("t3.large", 3, 12, 35), ("m5.large", 3, 10, 29),
        ("m5.xlarge", 4, 15, 58), ("m5.2xlarge", 4, 15, 58), ("c5.2xlarge", 4, 15, 58),
        ("c5.4xlarge", 8, 30, 234), ("r5.xlarge", 4, 15, 58),
    ],
)
def test_real_limits_for_the_types_in_the_brief(
    instance_type: str, enis: int, ipv4: int, pods: int
) -> None:
    limits = limits_for(instance_type)
    assert (limits.max_enis, limits.ipv4_per_eni, limits.max_pods) == (enis, ipv4, pods)


def test_the_table_has_every_type_and_matches_upstream_max_pods_file() -> None:
    assert len(known_instance_types()) == 1391
    assert limits_for("m5.large").max_pods_prefix_delegation == 3 * 9 * 16 + 2
    assert max_pods(3, 10) == 29


def test_unknown_type_is_a_typed_error() -> None:
    with pytest.raises(UnknownInstanceType, match=r"x9\.huge"):
        limits_for("x9.huge")


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"warm_ip_target": "5"}, "WARM_IP_TARGET"),
        ({"warm_eni_target": True}, "WARM_ENI_TARGET"),
        ({"cooldown_s": float("nan")}, "IP_COOLDOWN_PERIOD"),
        ({"shrink_interval_s": "30"}, "shrink_interval_s"),
        ({"policy": "adaptive"}, "IPAMD_POLICY"),
        ({"warm_ip_target": -1}, "WARM_IP_TARGET"),
        ({"cooldown_s": -5}, "IP_COOLDOWN_PERIOD"),
        ({"max_eni": 0}, "MAX_ENI"),
        ({"prefix_delegation": True, "ipv6": True}, "ENABLE_PREFIX_DELEGATION"),
    ],
)
def test_invalid_combinations_are_rejected_naming_the_setting(
    kwargs: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        PoolConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.setting == setting


def test_prefix_delegation_with_warm_ip_only_is_valid() -> None:
    assert PoolConfig(prefix_delegation=True, warm_prefix_target=0, warm_ip_target=5)


def test_subnet_discovery_rules() -> None:
    cni = ("kubernetes.io/role/cni", "1")
    subnets = [
        Subnet("subnet-primary", "10.0.0.0/24", "az1", 10),
        Subnet("subnet-off", "10.0.1.0/24", "az1", 999, (("kubernetes.io/role/cni", "0"),)),
        Subnet("subnet-other-az", "10.0.2.0/24", "az2", 999, (cni,)),
        Subnet("subnet-red", "10.0.3.0/24", "az1", 999,
               (cni, ("kubernetes.io/cluster/red", "owned"))),
        Subnet("subnet-ok", "10.0.4.0/24", "az1", 100, (cni,)),
        Subnet("subnet-untagged", "10.0.5.0/24", "az1", 5000),
    ]
    chosen = choose_discovered_subnet(subnets, "az1", "blue", "subnet-primary")
    assert chosen is not None and chosen.subnet_id == "subnet-ok"
    only_primary = choose_discovered_subnet(subnets[:1], "az1", "blue", "subnet-primary")
    assert only_primary is not None and only_primary.subnet_id == "subnet-primary"
