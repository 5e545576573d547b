"""The Kubernetes contract against the fake API server process, and against a real cluster
when ``IPAMCORE_TEST_KUBECONFIG`` names a kubeconfig (skipped otherwise)."""

from __future__ import annotations

import os

import pytest
from lightkube import KubeConfig

from tests.contract.kube_contract import KubeContract, KubeHarness
from tests.rigs.kube_rig import FakeApiServerProcess


@pytest.fixture(scope="module")
def fake_apiserver(tmp_path_factory):
    with FakeApiServerProcess(tmp_path_factory.mktemp("apiserver"), bookmark_interval=0.3) as rig:
        yield rig


class TestFakeApiServer(KubeContract):
    bookmark_within_s = 5.0

    @pytest.fixture
    async def harness(self, fake_apiserver):
        fake_apiserver.reset()
        config = KubeConfig.from_file(fake_apiserver.kubeconfig).get()
        h = KubeHarness(config)
        yield h
        await h.close()


REAL = os.environ.get("IPAMCORE_TEST_KUBECONFIG", "")


@pytest.mark.skipif(not REAL, reason="IPAMCORE_TEST_KUBECONFIG not set (no real cluster)")
class TestRealCluster(KubeContract):
    """Needs the ENIConfig CRD installed and rights to create Nodes, Pods, Events,
    ENIConfigs (and CNINodes, when the VPC resource controller's CRD is there)."""

    bookmark_within_s = None if not os.environ.get("IPAMCORE_TEST_SLOW") else 90.0
    has_cninode_crd = os.environ.get("IPAMCORE_TEST_CNINODE", "") == "1"

    @pytest.fixture
    async def harness(self):
        config = KubeConfig.from_file(REAL).get()
        h = KubeHarness(config)
        yield h
        await h.close()
