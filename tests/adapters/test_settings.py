"""Settings: every bad value stops start with a message naming its variable."""

from __future__ import annotations

import pytest

from adapters.ipamd import settings as settings_module
from adapters.ipamd.main import main
from adapters.ipamd.settings import SettingsError, load_settings
from ipamcore.config import PolicyName
from ipamcore.errors import ConfigError

BAD = [
    ("WARM_ENI_TARGET", "-1"),
    ("WARM_ENI_TARGET", "one"),
    ("WARM_IP_TARGET", "1.5"),
    ("MINIMUM_IP_TARGET", "x"),
    ("WARM_PREFIX_TARGET", "-3"),
    ("ENABLE_PREFIX_DELEGATION", "maybe"),
    ("MAX_ENI", "0"),
    ("MAX_ENI", "lots"),
    ("IP_COOLDOWN_PERIOD", "-5"),
    ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "yesplease"),
    ("ENI_CONFIG_SUBNET", "vpc-123"),
    ("ENI_CONFIG_SECURITY_GROUPS", "sg-1,group2"),
    ("ENABLE_SUBNET_DISCOVERY", "2"),
    ("ADDITIONAL_ENI_TAGS", "not json"),
    ("ADDITIONAL_ENI_TAGS", '["a"]'),
    ("ADDITIONAL_ENI_TAGS", '{"aws:x": "1"}'),
    ("ADDITIONAL_ENI_TAGS", '{"k": 1}'),
    ("AWS_VPC_ENI_MTU", "100"),
    ("AWS_VPC_ENI_MTU", "9002"),
    ("POD_MTU", "abc"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "toolong"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "eth"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "a-b"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "nope"),
    ("AWS_VPC_K8S_CNI_BACKING_STORE", "relative/ipam.json"),
    ("INTROSPECTION_BIND_ADDRESS", "nohostport"),
    ("INTROSPECTION_BIND_ADDRESS", "10.0.0.1:61679"),
    ("INTROSPECTION_BIND_ADDRESS", "127.0.0.1:99999"),
    ("DISABLE_INTROSPECTION", "x"),
    ("DISABLE_METRICS", "x"),
    ("DISABLE_LEAKED_ENI_CLEANUP", "x"),
    ("ENI_DELETE_ON_TERMINATION", "sometimes"),
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "LOUD"),
    ("AWS_EC2_ENDPOINT", "ftp://x"),
    ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "169.254.169.254"),
    ("IPAMD_SOCKET", "ipam.sock"),
    ("IPAMD_PENDING_DEL_DIR", "pending"),
    ("IPAMD_DATAPATH", "ebpf"),
    ("IPAMD_CLOUD", "gcp"),
    ("IPAMD_ADD_WAIT_SECONDS", "soon"),
    ("IPAMD_FAKE_LATENCY", "slow"),
    ("IPAMD_FAKE_CALL_LOG", "calls.jsonl"),
    ("IPAMD_POLICY", "greedy"),
    ("METRICS_BIND_ADDRESS", "host:port"),
]


@pytest.mark.parametrize(("variable", "value"), BAD)
def test_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(variable + ":")
    assert "expected" in str(info.value)


def test_defaults_are_upstreams() -> None:
    s = load_settings({})
    assert s.pool.warm_eni_target == 1 and s.pool.warm_ip_target == 0
    assert s.pool.cooldown_s == 30.0 and s.pool.max_eni is None
    assert s.checkpoint_path == "/var/run/aws-node/ipam.json"
    assert s.socket_path == "/var/run/aws-node/ipam.sock"
    assert str(s.introspection) == "127.0.0.1:61679"
    assert s.veth_prefix == "eni" and s.eni_mtu == 9001 and s.pod_mtu == 9001
    assert s.introspection_enabled and s.metrics_enabled and s.leaked_eni_cleanup
    assert s.eni_delete_on_termination


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("TRUE", True)])
def test_eni_delete_on_termination_is_a_bool(raw: str, expected: bool) -> None:
    assert load_settings({"ENI_DELETE_ON_TERMINATION": raw}).eni_delete_on_termination is expected


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            "WARM_IP_TARGET": "5", "MINIMUM_IP_TARGET": "10", "MAX_ENI": "2",
            "ENABLE_PREFIX_DELEGATION": "true", "IP_COOLDOWN_PERIOD": "45",
            "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "ENI_CONFIG_SUBNET": "subnet-0abc",
            "ENI_CONFIG_SECURITY_GROUPS": "sg-1, sg-2", "ADDITIONAL_ENI_TAGS": '{"team":"net"}',
            "AWS_VPC_ENI_MTU": "1500", "AWS_VPC_K8S_CNI_VETHPREFIX": "veth",
            "AWS_VPC_K8S_CNI_EXTERNALSNAT": "1", "AWS_VPC_K8S_CNI_LOGLEVEL": "warn",
            "INTROSPECTION_BIND_ADDRESS": "0.0.0.0:9999",
            "INTROSPECTION_ALLOW_NON_LOOPBACK": "true", "MAX_ENI_UNUSED": "x",
        }
    )  # fmt: skip
    assert s.pool.warm_ip_target == 5 and s.pool.minimum_ip_target == 10
    assert s.pool.max_eni == 2 and s.pool.prefix_delegation and s.pool.cooldown_s == 45
    assert s.pool.placement.custom_networking
    assert s.pool.placement.subnet_id == "subnet-0abc"
    assert s.pool.placement.security_groups == ("sg-1", "sg-2")
    assert s.additional_eni_tags == (("team", "net"),)
    assert s.eni_mtu == 1500 and s.pod_mtu == 1500  # POD_MTU follows the ENI MTU
    assert s.veth_prefix == "veth" and s.external_snat and s.log_level == "WARNING"
    assert s.introspection.port == 9999 and not s.introspection.is_loopback


def test_fake_cloud_latency_call_log_and_policy() -> None:
    s = load_settings(
        {"IPAMD_FAKE_LATENCY": "realistic", "IPAMD_FAKE_CALL_LOG": "/tmp/calls.jsonl",
         "IPAMD_POLICY": "upstream-faithful"}
    )  # fmt: skip
    assert (s.fake_latency, s.fake_call_log) == ("realistic", "/tmp/calls.jsonl")
    assert s.pool.policy is PolicyName.UPSTREAM_FAITHFUL
    assert load_settings({}).fake_latency == "none"


def test_custom_networking_needs_a_subnet() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"})
    assert info.value.variable == "ENI_CONFIG_SUBNET"


def test_warm_prefix_target_0_is_valid_as_upstream() -> None:
    """Upstream documents WARM_PREFIX_TARGET=0 as valid (issue 15 item 4): the daemon starts."""
    env = {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "0"}
    assert load_settings(env).pool.warm_prefix_target == 0


def test_core_config_errors_keep_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: object) -> None:
        raise ConfigError("WARM_PREFIX_TARGET", "refused by the core")

    monkeypatch.setattr(settings_module, "PoolConfig", refuse)
    with pytest.raises(SettingsError) as info:
        load_settings({})
    assert info.value.variable == "WARM_PREFIX_TARGET"


def test_disabled_introspection_may_name_any_address() -> None:
    s = load_settings({"INTROSPECTION_BIND_ADDRESS": "10.0.0.1:1", "DISABLE_INTROSPECTION": "1"})
    assert not s.introspection_enabled


def test_main_exits_2_naming_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], env={"WARM_IP_TARGET": "many"}) == 2
    err = capsys.readouterr().err
    assert "WARM_IP_TARGET" in err and "integer" in err


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check-config"], env={}) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "policy"),
    [(None, PolicyName.UPSTREAM), ("adaptive", PolicyName.ADAPTIVE),
     ("Upstream-Faithful", PolicyName.UPSTREAM_FAITHFUL)],
)  # fmt: skip
def test_pool_policy_is_chosen_by_ipamd_policy(raw: str | None, policy: PolicyName) -> None:
    env = {} if raw is None else {"IPAMD_POLICY": raw}
    assert load_settings(env).pool.policy is policy


def test_a_bad_pool_policy_names_the_choices() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"IPAMD_POLICY": "smart"})
    assert "upstream, upstream-faithful, adaptive" in str(err.value)


def test_multi_nic_in_dual_stack_is_refused_at_start_naming_both(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "ENABLE_MULTI_NIC": "true", "ENABLE_IPv6": "true", "ENABLE_IPv4": "true",
        "ENABLE_PREFIX_DELEGATION": "true",
    }  # fmt: skip
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.variable == "ENABLE_MULTI_NIC" and "dual stack" in str(info.value)
    assert main([], env=env) == 2
    err = capsys.readouterr().err
    assert "ENABLE_MULTI_NIC" in err and "ENABLE_IPv4=false" in err
    assert load_settings({**env, "ENABLE_MULTI_NIC": "false"}).pool.ipv6
    assert load_settings({"ENABLE_MULTI_NIC": "true"}).pool.multi_nic


def test_multi_nic_in_ipv6_mode_loads_as_upstream_v1_20() -> None:
    pool = load_settings({
        "ENABLE_MULTI_NIC": "true", "ENABLE_IPv6": "true", "ENABLE_IPv4": "false",
        "ENABLE_PREFIX_DELEGATION": "true",
    }).pool  # fmt: skip
    assert pool.multi_nic and pool.ipv6_only
