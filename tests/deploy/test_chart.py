"""The Helm chart rendered by real Helm (helm-python-sdk: Helm v4's Go SDK) and the plain
manifest, every object validated offline against the Kubernetes schemas of 1.29 to 1.35
(kubernetes-validate, strict: unknown fields are errors), and upstream's names, values and
defaults checked one by one.

ENIConfig and PodMonitor are custom resources: kubernetes-validate has no schema for them.
ENIConfigs are validated against the chart's own CRD schema (jsonschema); the PodMonitor's
fields are checked by hand.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from deploy import chart

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
pytest.importorskip("helm_python", reason="pip install -e '.[test]' (helm-python-sdk)")

KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35")
EVERYTHING = {
    "env": {"ANNOTATE_POD_IP": "true", "MINIMUM_IP_TARGET": "10"},
    "eniConfig": {"create": True, "subnets": {
        "us-west-2a": {"id": "subnet-0aaa", "securityGroups": ["sg-01", "sg-02"]},
        "us-west-2b": {"id": "subnet-0bbb"},
    }},
    "cniConfig": {"enabled": True, "fileContents": '{"cniVersion": "1.0.0", "name": "aws-cni", '
                  '"plugins": [{"type": "vpc-cni", "mtu": "__MTU__"}]}'},
    "podMonitor": {"create": True, "labels": {"release": "prom"}},
    "serviceAccount": {"annotations": {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/aws-node"}},
    "readinessWaitsForMinimumIPs": True,
    "podAnnotations": {"team": "net"},
}  # fmt: skip
UPSTREAM_ENV = {
    "ADDITIONAL_ENI_TAGS": "{}", "AWS_VPC_CNI_NODE_PORT_SUPPORT": "true",
    "AWS_VPC_ENI_MTU": "9001", "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "false",
    "AWS_VPC_K8S_CNI_EXTERNALSNAT": "false",
    "AWS_VPC_K8S_CNI_LOG_FILE": "/host/var/log/aws-routed-eni/ipamd.log",
    "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG", "AWS_VPC_K8S_CNI_RANDOMIZESNAT": "prng",
    "AWS_VPC_K8S_CNI_VETHPREFIX": "eni",
    "AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/aws-routed-eni/plugin.log",
    "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG", "DISABLE_INTROSPECTION": "false",
    "DISABLE_METRICS": "false", "DISABLE_NETWORK_RESOURCE_PROVISIONING": "false",
    "ENABLE_IPv4": "true", "ENABLE_IPv6": "false", "ENABLE_POD_ENI": "false",
    "ENABLE_PREFIX_DELEGATION": "false", "WARM_ENI_TARGET": "1", "WARM_PREFIX_TARGET": "1",
}  # fmt: skip


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, (kind, [o["kind"] for o in objs])
    return found[0]


@pytest.fixture(scope="module")
def default_objs() -> list[dict[str, Any]]:
    return chart.objects(chart.render())


@pytest.fixture(scope="module")
def full_objs() -> list[dict[str, Any]]:
    return chart.objects(chart.render(EVERYTHING))


def test_manifest_is_the_rendered_chart() -> None:
    assert chart.MANIFEST.read_text() == chart.manifest_text(), (
        "deploy/aws-k8s-cni.yaml is stale: run python -m deploy.chart manifest"
    )
    ds = one(chart.objects(chart.MANIFEST.read_text()), "DaemonSet")
    # upstream's selector (immutable in a DaemonSet): kubectl apply over upstream's aws-node
    assert ds["spec"]["selector"] == {"matchLabels": {"k8s-app": "aws-node"}}


def validate_all(objs: list[dict[str, Any]]) -> list[str]:
    """Every object against every version's schema; custom resources apart."""
    import jsonschema

    crd = one(chart.objects(chart.MANIFEST.read_text()), "CustomResourceDefinition")
    eni_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checked = []
    for obj in objs:
        if obj["kind"] == "ENIConfig":
            jsonschema.validate(obj, eni_schema)
            assert obj["apiVersion"] == "crd.k8s.amazonaws.com/v1alpha1"
            checked.append("ENIConfig (CRD schema)")
            continue
        if obj["kind"] == "PodMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            ep = obj["spec"]["podMetricsEndpoints"][0]
            assert ep["port"] == "metrics" and ep["path"] == "/metrics"
            assert obj["spec"]["selector"] == {"matchLabels": {"k8s-app": "aws-node"}}
            checked.append("PodMonitor (by hand)")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kv.validate(obj, f"{version}.0", strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{obj['kind']} invalid for {version}: {exc.message} at "
                            f"{list(exc.path)}")  # fmt: skip
        checked.append(obj["kind"])
    return checked


def test_every_object_validates_for_every_version(
    default_objs: list[dict[str, Any]], full_objs: list[dict[str, Any]]
) -> None:
    manifest = chart.objects(chart.MANIFEST.read_text())
    assert validate_all(manifest) == [
        "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "DaemonSet",
    ]  # fmt: skip
    checked = validate_all(full_objs)
    assert sorted(set(checked)) == sorted({
        "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        "ConfigMap", "DaemonSet", "ENIConfig (CRD schema)", "PodMonitor (by hand)",
    })  # fmt: skip
    assert validate_all(default_objs)


def test_schemas_cover_the_briefs_versions() -> None:
    for version in KUBERNETES_VERSIONS:
        kv.validate(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}},
            f"{version}.0", strict=True,
        )  # fmt: skip


def test_daemonset_has_upstreams_shape(default_objs: list[dict[str, Any]]) -> None:
    ds = one(default_objs, "DaemonSet")
    assert (ds["metadata"]["name"], ds["metadata"]["namespace"]) == ("aws-node", "kube-system")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}  # fmt: skip
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["template"]["metadata"]["labels"]["k8s-app"] == "aws-node"
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == "aws-node"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["terminationGracePeriodSeconds"] == 10
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert volumes == {
        "cni-bin-dir": "/opt/cni/bin", "cni-net-dir": "/etc/cni/net.d",
        "log-dir": "/var/log/aws-routed-eni", "run-dir": "/var/run/aws-node",
        "xtables-lock": "/run/xtables.lock", "netns-dir": "/var/run/netns",
    }  # fmt: skip
    (init,) = pod["initContainers"]
    assert init["name"] == "aws-vpc-cni-init" and init["command"] == ["aws-vpc-cni-init"]
    assert init["securityContext"] == {"privileged": True}
    assert {e["name"]: e["value"] for e in init["env"]} == {
        "DISABLE_TCP_EARLY_DEMUX": "false", "ENABLE_IPv6": "false"}  # fmt: skip
    assert init["volumeMounts"] == [{"mountPath": "/host/opt/cni/bin", "name": "cni-bin-dir"}]
    node, cni = pod["containers"]
    assert node["name"] == "aws-node" and node["command"] == ["aws-vpc-cni"]
    assert [(p["containerPort"], p["name"]) for p in node["ports"]] == [
        (61678, "metrics"), (61679, "introspection")]  # fmt: skip
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in node["env"]}
    for name, value in UPSTREAM_ENV.items():
        assert env[name] == value, name
    assert env["MY_NODE_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}
    assert env["MY_POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert "ANNOTATE_POD_IP" not in env and "HEALTH_READY_MIN_IPS" not in env
    assert node["resources"] == {"requests": {"cpu": "25m"}}
    assert node["livenessProbe"]["exec"]["command"][:2] == ["ipamctl", "health"]
    assert node["livenessProbe"]["initialDelaySeconds"] == 60
    assert node["livenessProbe"]["timeoutSeconds"] == 10
    assert node["readinessProbe"]["exec"]["command"][:3] == ["ipamctl", "health", "--ready"]
    assert node["readinessProbe"]["initialDelaySeconds"] == 1
    mounts = {m["mountPath"]: m for m in node["volumeMounts"]}
    assert set(mounts) == {
        "/host/opt/cni/bin", "/host/etc/cni/net.d", "/host/var/log/aws-routed-eni",
        "/var/run/aws-node", "/run/xtables.lock", "/var/run/netns",
    }  # fmt: skip
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    # the least this design needs: no privileged mode, exactly three capabilities
    assert node["securityContext"] == {
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]}}  # fmt: skip
    assert cni["name"] == "aws-cni"
    assert cni["command"] == ["tail", "-n", "200", "-F", "/var/log/aws-routed-eni/plugin.log"]
    assert cni["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert cni["volumeMounts"] == [{"mountPath": "/var/log/aws-routed-eni", "name": "log-dir",
                                    "readOnly": True}]  # fmt: skip
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]}
    assert keys == {"kubernetes.io/os", "kubernetes.io/arch", "eks.amazonaws.com/compute-type"}


def rules(objs: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    role = one(objs, "ClusterRole")
    return {(g, r): rule["verbs"] for rule in role["rules"]
            for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip


def test_rbac_is_upstreams(
    default_objs: list[dict[str, Any]], full_objs: list[dict[str, Any]]
) -> None:
    assert rules(default_objs) == {
        ("crd.k8s.amazonaws.com", "eniconfigs"): ["list", "watch", "get"],
        ("", "namespaces"): ["list", "watch", "get"],
        ("", "pods"): ["list", "watch", "get"],
        ("", "nodes"): ["list", "watch", "get"],
        ("", "events"): ["create", "patch", "list"],
        ("events.k8s.io", "events"): ["create", "patch", "list"],
        ("vpcresources.k8s.aws", "cninodes"): ["get", "list", "watch", "patch"],
    }
    assert rules(full_objs)[("", "pods")] == ["list", "watch", "get", "patch"]
    binding = one(default_objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aws-node"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aws-node", "namespace": "kube-system"}]
    sa = one(default_objs, "ServiceAccount")
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == ("aws-node", "kube-system")


def test_options(full_objs: list[dict[str, Any]]) -> None:
    enis = {o["metadata"]["name"]: o["spec"] for o in by_kind(full_objs, "ENIConfig")}
    assert enis == {
        "us-west-2a": {"subnet": "subnet-0aaa", "securityGroups": ["sg-01", "sg-02"]},
        "us-west-2b": {"subnet": "subnet-0bbb"},
    }
    cm = one(full_objs, "ConfigMap")
    conflist = base64.b64decode(cm["binaryData"]["10-aws.conflist"]).decode()
    assert json.loads(conflist)["plugins"][0]["mtu"] == "__MTU__"
    ds = one(full_objs, "DaemonSet")
    node = ds["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in node["volumeMounts"] if m["name"] == "cni-config")
    assert (mount["mountPath"], mount["subPath"]) == ("/app/10-aws.conflist", "10-aws.conflist")
    env = {e["name"]: e.get("value") for e in node["env"]}
    assert env["HEALTH_READY_MIN_IPS"] == "MINIMUM_IP_TARGET"
    assert env["ANNOTATE_POD_IP"] == "true"
    sa = one(full_objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/aws-node"}
    assert ds["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/default-container": "aws-node", "team": "net"}
    assert one(full_objs, "PodMonitor")["metadata"]["labels"] == {"release": "prom"}


def test_eniconfig_needs_subnets() -> None:
    from helm_python.errors import HelmError

    with pytest.raises(HelmError, match=r"eniConfig\.subnets must be specified"):
        chart.render({"eniConfig": {"create": True, "subnets": None}})


def test_chart_defaults_are_valid_settings(default_objs: list[dict[str, Any]]) -> None:
    """The env the chart gives the aws-node container is accepted by ipamd's settings and by
    the entrypoint (a bad default would crash-loop every node)."""
    from adapters.entrypoints import main as entrypoint
    from adapters.ipamd.settings import load_settings

    node = one(default_objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in node["env"] if "value" in e}
    settings = load_settings(env)
    assert settings.pool.warm_eni_target == 1 and settings.log_level == "DEBUG"
    entrypoint.validate_env(env)
    conf = entrypoint.render_conflist(
        (chart.DEPLOY.parent / "adapters" / "cni" / "10-vpc-cni.conflist").read_text(), env)
    assert conf["plugins"][0]["pluginLogFile"] == "/var/log/aws-routed-eni/plugin.log"
    load_settings({**env, **EVERYTHING["env"]})  # type: ignore[dict-item]
