"""The Kubernetes settings parsed from the environment (a mapping, never os.environ)."""

from __future__ import annotations

import pytest

from backends.kubernetes.settings import KubeSettings, KubeSettingsError
from ipamcore.eniconfig import DEFAULT_ENICONFIG_KEY, EniConfigKeys

ZONE = "topology.kubernetes.io/zone"


def test_defaults():
    s = KubeSettings.from_env({"MY_NODE_NAME": "n1"})
    assert s.node_name == "n1" and s.pod_namespace == "kube-system"
    assert s.eniconfig_keys == EniConfigKeys(DEFAULT_ENICONFIG_KEY, DEFAULT_ENICONFIG_KEY)
    assert not s.needs_api_server and s.start_wait_s == 30.0
    assert not s.in_cluster


@pytest.mark.parametrize(
    ("env", "needs"),
    [
        ({"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"}, True),
        ({"ANNOTATE_POD_IP": "1"}, True),
        ({"ANNOTATE_POD_IP": "false", "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "no"}, False),
    ],
)
def test_features_that_need_the_api_server(env, needs):
    assert KubeSettings.from_env({"MY_NODE_NAME": "n", **env}).needs_api_server is needs


def test_eniconfig_keys_and_endpoint():
    s = KubeSettings.from_env(
        {
            "MY_NODE_NAME": "n",
            "ENI_CONFIG_LABEL_DEF": ZONE,
            "ENI_CONFIG_ANNOTATION_DEF": "",
            "CLUSTER_ENDPOINT": "https://ABCD.gr7.us-west-2.eks.amazonaws.com/",
        }
    )
    assert s.eniconfig_keys == EniConfigKeys(DEFAULT_ENICONFIG_KEY, ZONE)
    assert s.cluster_endpoint == "https://ABCD.gr7.us-west-2.eks.amazonaws.com"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "MY_NODE_NAME"),
        ({"MY_NODE_NAME": "n", "ANNOTATE_POD_IP": "maybe"}, "ANNOTATE_POD_IP"),
        ({"MY_NODE_NAME": "n", "CLUSTER_ENDPOINT": "10.0.0.1"}, "CLUSTER_ENDPOINT"),
        ({"MY_NODE_NAME": "n", "IPAMD_KUBE_START_WAIT_SECONDS": "soon"}, "START_WAIT"),
        ({"MY_NODE_NAME": "n", "IPAMD_KUBE_EVENT_WAITING_SECONDS": "-1"}, "EVENT_WAITING"),
        ({"MY_NODE_NAME": "n", "IPAMD_KUBE_EVENT_THROTTLED_SECONDS": "inf"}, "EVENT_THROTTLED"),
        ({"MY_NODE_NAME": "n", "IPAMD_KUBE_EVENT_INTERVAL_SECONDS": "0"}, "EVENT_INTERVAL"),
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(KubeSettingsError, match=names):
        KubeSettings.from_env(env)


def test_event_thresholds_default_and_set():
    s = KubeSettings.from_env({"MY_NODE_NAME": "n"})
    assert (s.event_thresholds.throttled_s, s.event_thresholds.waiting_s) == (300.0, 30.0)
    assert s.event_interval_s == 10.0
    s = KubeSettings.from_env({
        "MY_NODE_NAME": "n", "IPAMD_KUBE_EVENT_THROTTLED_SECONDS": "6",
        "IPAMD_KUBE_EVENT_WAITING_SECONDS": "4", "IPAMD_KUBE_EVENT_INTERVAL_SECONDS": "0.5",
    })  # fmt: skip
    assert (s.event_thresholds.throttled_s, s.event_thresholds.waiting_s) == (6.0, 4.0)
    assert s.event_interval_s == 0.5
