"""Shared moto fixtures for the AWS backend tests: moto in-process and a moto_server process.

Import the fixtures into a test module (``from tests.backends.moto_fixtures import
moto_env, moto_server_url``). ``moto_env`` is parametrised over ``inproc`` (``moto.mock_aws``)
and ``server`` (a ``moto_server`` on 127.0.0.1, started once per session); each test gets a
fresh VPC (/16), a tagged /20 subnet, a security group and one running instance.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import boto3  # type: ignore[import-untyped]
import pytest
from moto import mock_aws

from backends.aws.client import Ec2Config
from backends.aws.ec2 import Ec2Backend
from backends.observe import CallCounter
from ipamcore.model import SUBNET_DISCOVERY_TAG

REGION = "us-west-2"
ZONE = "us-west-2a"
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR = "10.0.0.0/20"
OTHER_SUBNET_CIDR = "10.0.16.0/20"
SMALL_SUBNET_CIDR = "10.0.32.0/28"  # only for listing: moto hangs when a subnet runs out
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@functools.cache
def session() -> boto3.Session:
    """One shared session with dummy credentials (moto accepts any).

    Shared so the EC2 service model is parsed once per test session, not once per client.
    """
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeSleep:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@attrs.define
class MotoEnv:
    """One test's EC2 world on moto, and a factory of backends pointed at it."""

    kind: str
    endpoint_url: str
    client: Any
    vpc_id: str
    subnet_id: str
    other_subnet_id: str
    small_subnet_id: str
    sg_id: str
    instance_id: str
    sleep: FakeSleep = attrs.field(factory=FakeSleep)
    counter: CallCounter = attrs.field(factory=CallCounter)
    now: float = 1_700_000_000.0

    def backend(self, **kwargs: Any) -> Ec2Backend:
        config = kwargs.pop(
            "config", Ec2Config(region=REGION, endpoint_url=self.endpoint_url, max_attempts=2)
        )
        kwargs.setdefault("observer", self.counter)
        kwargs.setdefault("sleep", self.sleep)
        kwargs.setdefault("clock", lambda: self.now)
        return Ec2Backend(config, session=session(), **kwargs)


def _client(endpoint_url: str) -> Any:
    return session().client("ec2", endpoint_url=endpoint_url or None)


def build_world(kind: str, endpoint_url: str) -> MotoEnv:
    ec2 = _client(endpoint_url)
    vpc_id = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(
        VpcId=vpc_id,
        CidrBlock=SUBNET_CIDR,
        AvailabilityZone=ZONE,
        TagSpecifications=[
            {"ResourceType": "subnet", "Tags": [{"Key": SUBNET_DISCOVERY_TAG, "Value": "1"}]}
        ],
    )["Subnet"]["SubnetId"]
    other = ec2.create_subnet(VpcId=vpc_id, CidrBlock=OTHER_SUBNET_CIDR, AvailabilityZone=ZONE)
    small = ec2.create_subnet(VpcId=vpc_id, CidrBlock=SMALL_SUBNET_CIDR, AvailabilityZone=ZONE)
    sg_id = ec2.create_security_group(GroupName="pods", Description="pods", VpcId=vpc_id)["GroupId"]
    instance = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.large",
        SubnetId=subnet_id,
        SecurityGroupIds=[sg_id],
    )["Instances"][0]
    return MotoEnv(
        kind=kind,
        endpoint_url=endpoint_url,
        client=ec2,
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        other_subnet_id=other["Subnet"]["SubnetId"],
        small_subnet_id=small["Subnet"]["SubnetId"],
        sg_id=sg_id,
        instance_id=instance["InstanceId"],
    )


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """A moto_server process on a free 127.0.0.1 port for the whole session."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"moto_server exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not answer within 30 s")
                time.sleep(0.05)  # waiting for a process to come up, not a timer under test
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset_moto_server(url: str) -> None:
    request = urllib.request.Request(url + "/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5):
        pass


@contextlib.contextmanager
def moto_world(kind: str, server_url: Callable[[], str]) -> Iterator[MotoEnv]:
    """A fresh world in-process (inside ``mock_aws``) or on the shared moto_server."""
    if kind == "inproc":
        with mock_aws():
            yield build_world(kind, "")
    else:
        url = server_url()
        reset_moto_server(url)
        yield build_world(kind, url)


@pytest.fixture(params=["inproc", "server"])
def moto_env(request: pytest.FixtureRequest) -> Iterator[MotoEnv]:
    with moto_world(request.param, lambda: request.getfixturevalue("moto_server_url")) as env:
        yield env


@pytest.fixture
def inproc_env() -> Iterator[MotoEnv]:
    """Only the in-process world (for tests that hook botocore's events on a mock client)."""
    with moto_world("inproc", lambda: "") as env:
        yield env
