"""The shared cloud contract for the EC2 backend over moto (in-process and moto_server).

moto enforces no ENI/address limits, ignores prefix requests, never runs a subnet out
(it hangs instead) and never throttles, so those parts of the contract are switched off
here; they are covered with botocore's Stubber and injected responses in
``test_ec2_stubbed.py`` and ``test_ec2_retries.py``.
"""

from __future__ import annotations

import pytest

from backends.aws.convert import rfc3339
from ipamcore.model import CREATED_AT_TAG, INSTANCE_ID_TAG
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import MotoEnv
from tests.contract.cloud_contract import CloudContract, CloudEnv

moto_env = moto_fixtures.moto_env
moto_server_url = moto_fixtures.moto_server_url

pytestmark = pytest.mark.moto_server


def cloud_env(world: MotoEnv) -> CloudEnv:
    def advance(seconds: float) -> None:
        world.now += seconds

    def make_leaked_eni(instance_id: str) -> str:
        tags = [
            {"Key": INSTANCE_ID_TAG, "Value": instance_id},
            {"Key": CREATED_AT_TAG, "Value": rfc3339(world.now)},
        ]
        created = world.client.create_network_interface(
            SubnetId=world.subnet_id,
            Description=f"aws-K8S-{instance_id}",
            TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
        )
        return str(created["NetworkInterface"]["NetworkInterfaceId"])

    return CloudEnv(
        cloud=world.backend(),
        instance_id=world.instance_id,
        instance_type="m5.large",
        subnet_id=world.subnet_id,
        untagged_subnet_id=world.other_subnet_id,
        small_subnet_id=world.small_subnet_id,
        now=lambda: world.now,
        advance=advance,
        make_leaked_eni=make_leaked_eni,
    )


class TestEc2BackendOnMoto(CloudContract):
    """Runs once on moto in-process and once on moto_server (``moto_env`` is parametrised)."""

    supports_limits = False
    supports_prefixes = False
    supports_subnet_exhaustion = False
    supports_throttling = False

    @pytest.fixture
    def env(self, moto_env: MotoEnv) -> CloudEnv:
        return cloud_env(moto_env)
