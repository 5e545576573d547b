"""The IMDSv2 client against the metadata server over moto, the server's token rules, its CLI,
and the asyncio wrappers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from botocore.stub import Stubber  # type: ignore[import-untyped]

from backends.aws.imds import TOKEN_HEADER, TOKEN_TTL_HEADER, ImdsClient
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.model import InstanceIdentity, ObservedEni
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import (
    REGION,
    SUBNET_CIDR,
    VPC_CIDR,
    ZONE,
    MotoEnv,
    build_world,
    free_port,
    reset_moto_server,
    session,
)
from tests.rigs.metadata_server import MetadataServer

moto_env = moto_fixtures.moto_env
moto_server_url = moto_fixtures.moto_server_url
inproc_env = moto_fixtures.inproc_env

# The metadata server answers from moto; on a loaded 2-core machine that can take over the
# client's 2 s default, which is not what these tests are about.
SLOW_MACHINE_S = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(moto_env: MotoEnv) -> Iterator[MetadataServer]:
    with MetadataServer(moto_env.client, moto_env.instance_id) as srv:
        yield srv


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_identity(moto_env: MotoEnv, server: MetadataServer) -> None:
    identity = ImdsClient(server.url, timeout_s=SLOW_MACHINE_S).identity()
    (primary,) = moto_env.backend().describe_enis(moto_env.instance_id)
    assert identity == InstanceIdentity(
        instance_id=moto_env.instance_id,
        instance_type="m5.large",
        availability_zone=ZONE,
        primary_mac=primary.mac,
        vpc_cidrs=(VPC_CIDR,),
        region=REGION,
    )


def test_enis_match_what_ec2_describes(moto_env: MotoEnv, server: MetadataServer) -> None:
    backend = moto_env.backend()
    created = backend.create_eni(
        moto_env.instance_id, CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,), ipv4_count=2)
    )
    imds = ImdsClient(server.url, timeout_s=SLOW_MACHINE_S).enis()
    assert [(e.eni_id, e.device_index, e.is_primary) for e in imds] == [
        (e.eni_id, e.device_index, e.is_primary)
        for e in backend.describe_enis(moto_env.instance_id)
    ]
    second = imds[1]
    assert second.eni_id == created.eni_id
    assert (second.mac, second.primary_ip) == (created.mac, created.primary_ip)
    assert set(second.ipv4_addresses) == set(created.ipv4_addresses)
    assert second.subnet_id == moto_env.subnet_id and second.subnet_cidr == SUBNET_CIDR
    assert second.security_groups == (moto_env.sg_id,)
    assert second.ipv4_prefixes == () and second.tags == ()


def test_token_is_required(inproc_env: MotoEnv) -> None:
    with MetadataServer(inproc_env.client, inproc_env.instance_id) as srv:
        path = srv.url + "/latest/meta-data/instance-id"
        assert http(path)[0] == 401
        assert http(path, headers={TOKEN_HEADER: "forged"})[0] == 401
        assert http(srv.url + "/latest/api/token", "PUT")[0] == 400  # no TTL
        bad_ttl = {TOKEN_TTL_HEADER: "21601"}
        assert http(srv.url + "/latest/api/token", "PUT", bad_ttl)[0] == 400
        status, token = http(srv.url + "/latest/api/token", "PUT", {TOKEN_TTL_HEADER: "60"})
        assert status == 200 and token
        assert http(path, headers={TOKEN_HEADER: token}) == (200, inproc_env.instance_id)
        assert http(srv.url + "/latest/meta-data/nope", headers={TOKEN_HEADER: token})[0] == 404


def test_expired_token_is_renewed(inproc_env: MotoEnv) -> None:
    server_clock, client_clock = Clock(), Clock()
    srv = MetadataServer(inproc_env.client, inproc_env.instance_id, clock=server_clock)
    with srv:
        client = ImdsClient(
            srv.url, timeout_s=SLOW_MACHINE_S, token_ttl_s=60, refresh_margin_s=0,
            clock=client_clock,
        )  # fmt: skip
        assert client.identity().instance_id == inproc_env.instance_id
        server_clock.now += 61  # the server expires the token; the client still trusts it
        assert client.identity().instance_id == inproc_env.instance_id


def test_unreachable_imds_is_a_cloud_error() -> None:
    client = ImdsClient(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(CloudError) as info:
        client.identity()
    assert info.value.kind is FailureKind.OTHER


def test_broken_ec2_behind_the_server_is_a_cloud_error(inproc_env: MotoEnv) -> None:
    srv = MetadataServer(inproc_env.client, "i-0000000000000dead")
    with srv, pytest.raises(CloudError) as info:
        ImdsClient(srv.url, timeout_s=SLOW_MACHINE_S).identity()
    assert (info.value.kind, info.value.code) == (FailureKind.OTHER, "HTTP500")


def test_prefixes_are_served_and_read() -> None:
    """moto ignores prefixes, so the server reads a stubbed EC2 here."""
    client = session().client("ec2", region_name=REGION)
    eni = {
        "NetworkInterfaceId": "eni-1",
        "MacAddress": "02:00:00:00:00:01",
        "SubnetId": "subnet-1",
        "VpcId": "vpc-1",
        "PrivateIpAddress": "10.0.0.5",
        "PrivateIpAddresses": [
            {"PrivateIpAddress": "10.0.0.9", "Primary": False},
            {"PrivateIpAddress": "10.0.0.5", "Primary": True},
        ],
        "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.0.16/28"}, {"Ipv4Prefix": "10.0.0.32/28"}],
        "Groups": [{"GroupId": "sg-1"}, {"GroupId": "sg-2"}],
        "Attachment": {"DeviceIndex": 0, "NetworkCardIndex": 0},
    }
    with Stubber(client) as stub:
        stub.add_response(
            "describe_instances",
            {
                "Reservations": [
                    {
                        "Instances": [
                            {"InstanceType": "m5.large", "Placement": {"AvailabilityZone": ZONE}}
                        ]
                    }
                ]
            },
        )
        stub.add_response("describe_network_interfaces", {"NetworkInterfaces": [eni]})
        stub.add_response(
            "describe_subnets", {"Subnets": [{"SubnetId": "subnet-1", "CidrBlock": SUBNET_CIDR}]}
        )
        stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": VPC_CIDR}]})
        with MetadataServer(client, "i-1", cache_ttl_s=3600) as srv:
            (read,) = ImdsClient(srv.url, timeout_s=SLOW_MACHINE_S).enis()
    assert read.ipv4_prefixes == ("10.0.0.16/28", "10.0.0.32/28")
    assert (read.primary_ip, read.ipv4_addresses) == ("10.0.0.5", ("10.0.0.9",))
    assert read.security_groups == ("sg-1", "sg-2") and read.is_primary


def test_network_card_per_mac_is_served_and_read() -> None:
    """IMDS's ``network-card`` per MAC: an ENI on card 1 at device 1 reads as such, beside
    card 0's device 1 (device indexes count per card). moto drops the card: stubbed EC2."""
    client = session().client("ec2", region_name=REGION)

    def eni(n: int, card: int, device: int) -> dict[str, object]:
        return {
            "NetworkInterfaceId": f"eni-{n}", "MacAddress": f"02:00:00:00:00:0{n}",
            "SubnetId": "subnet-1", "VpcId": "vpc-1", "PrivateIpAddress": f"10.0.0.{n}",
            "PrivateIpAddresses": [{"PrivateIpAddress": f"10.0.0.{n}", "Primary": True}],
            "Groups": [{"GroupId": "sg-1"}],
            "Attachment": {"DeviceIndex": device, "NetworkCardIndex": card},
        }  # fmt: skip

    with Stubber(client) as stub:
        stub.add_response(
            "describe_instances",
            {"Reservations": [{"Instances": [
                {"InstanceType": "c6in.32xlarge", "Placement": {"AvailabilityZone": ZONE}}
            ]}]},
        )  # fmt: skip
        stub.add_response(
            "describe_network_interfaces",
            {"NetworkInterfaces": [eni(1, 0, 0), eni(2, 0, 1), eni(3, 1, 1)]},
        )
        stub.add_response(
            "describe_subnets", {"Subnets": [{"SubnetId": "subnet-1", "CidrBlock": SUBNET_CIDR}]}
        )
        stub.add_response("describe_vpcs", {"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": VPC_CIDR}]})
        with MetadataServer(client, "i-1", cache_ttl_s=3600) as srv:
            read = ImdsClient(srv.url, timeout_s=SLOW_MACHINE_S).enis()
    assert [(e.eni_id, e.network_card, e.device_index, e.is_primary) for e in read] == [
        ("eni-1", 0, 0, True), ("eni-2", 0, 1, False), ("eni-3", 1, 1, False),
    ]  # fmt: skip


def test_cli_serves_a_moto_server_instance(moto_server_url: str) -> None:
    reset_moto_server(moto_server_url)
    world = build_world("server", moto_server_url)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.rigs.metadata_server",
            "--ec2-endpoint",
            moto_server_url,
            "--instance-id",
            world.instance_id,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = ImdsClient(f"http://127.0.0.1:{port}", timeout_s=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                identity = client.identity()
                break
            except CloudError:
                assert proc.poll() is None, "metadata server exited"
                assert time.monotonic() < deadline, "metadata server did not come up"
                time.sleep(0.05)  # waiting for a process to start, not a timer under test
        assert identity.instance_id == world.instance_id
        assert [e.device_index for e in client.enis()] == [0]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def test_metadata_over_the_server_from_worker_threads(inproc_env: MotoEnv) -> None:
    with MetadataServer(inproc_env.client, inproc_env.instance_id) as srv:
        metadata = ImdsClient(srv.url, timeout_s=SLOW_MACHINE_S)
        identity, enis = await asyncio.gather(
            asyncio.to_thread(metadata.identity), asyncio.to_thread(metadata.enis)
        )
    assert identity.instance_id == inproc_env.instance_id
    assert isinstance(enis[0], ObservedEni) and enis[0].is_primary
