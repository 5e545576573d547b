"""The shared cloud contract for the EC2 backend over moto (in-process and moto_server).

moto enforces no ENI/address limits, ignores prefix requests, never runs a subnet out
(it hangs instead) and never throttles, so those parts of the contract are switched off
here; they are covered with botocore's Stubber and injected responses in
``test_ec2_stubbed.py`` and ``test_ec2_retries.py``. moto also ignores an attachment's
DeleteOnTermination and leaves a terminated instance's ENIs attached: ``terminate_instance``
here detaches them, as EC2 does with ENIs not marked DeleteOnTermination (the request
shape of the Modify call is pinned in ``test_ec2_stubbed.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from backends.aws.client import Ec2Config
from backends.aws.convert import rfc3339
from backends.observe import CallObserver
from ipamcore.model import CREATED_AT_TAG, INSTANCE_ID_TAG
from ipamcore.ports import CloudPort
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import REGION, MotoEnv
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

    def make_detached_eni(tags: Mapping[str, str]) -> str:
        params: dict[str, object] = {"SubnetId": world.subnet_id, "Description": "out of band"}
        if tags:
            tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
            params["TagSpecifications"] = [{"ResourceType": "network-interface", "Tags": tag_list}]
        created = world.client.create_network_interface(**params)
        return str(created["NetworkInterface"]["NetworkInterfaceId"])

    def make_cloud(
        instance_id: str,
        *,
        delete_on_termination: bool = True,
        cluster_name: str = "",
        observer: CallObserver | None = None,
    ) -> CloudPort:
        config = Ec2Config(
            region=REGION, endpoint_url=world.endpoint_url, max_attempts=2,
            cluster_name=cluster_name, delete_on_termination=delete_on_termination,
        )  # fmt: skip
        if observer is None:
            return world.backend(config=config)
        return world.backend(config=config, observer=observer)

    def launch_instance() -> str:
        found = world.client.run_instances(
            ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="m5.large",
            SubnetId=world.subnet_id, SecurityGroupIds=[world.sg_id],
        )  # fmt: skip
        return str(found["Instances"][0]["InstanceId"])

    def terminate_instance(instance_id: str) -> None:
        flt = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
        enis = world.client.describe_network_interfaces(Filters=flt)["NetworkInterfaces"]
        world.client.terminate_instances(InstanceIds=[instance_id])
        for eni in enis:
            if eni["Attachment"]["DeviceIndex"] != 0:
                world.client.detach_network_interface(
                    AttachmentId=eni["Attachment"]["AttachmentId"]
                )

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
        make_detached_eni=make_detached_eni,
        make_cloud=make_cloud,
        launch_instance=launch_instance,
        terminate_instance=terminate_instance,
    )


class TestEc2BackendOnMoto(CloudContract):
    """Runs once on moto in-process and once on moto_server (``moto_env`` is parametrised)."""

    supports_limits = False
    supports_prefixes = False
    supports_subnet_exhaustion = False
    supports_throttling = False
    supports_delete_on_termination = False
    supports_network_cards = False  # moto reports every ENI on card 0: see test_ec2_stubbed

    @pytest.fixture
    def env(self, moto_env: MotoEnv) -> CloudEnv:
        return cloud_env(moto_env)
