"""Retries are botocore's: throttles and 5xx answers injected through a ``before-send`` hook.

The hook answers an attempt with an ``AWSResponse`` carrying an EC2 error body, so botocore
parses it and its retry mode decides, exactly as with a real throttled answer; later attempts
fall through to moto. The backoff delay is patched to 0 so nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse  # type: ignore[import-untyped]
from botocore.exceptions import EndpointConnectionError  # type: ignore[import-untyped]
from botocore.retries import standard  # type: ignore[import-untyped]

from backends.aws.client import Ec2Config
from backends.aws.ec2 import Ec2Backend
from backends.observe import OK
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import REGION, MotoEnv

moto_env = moto_fixtures.moto_env
moto_server_url = moto_fixtures.moto_server_url
inproc_env = moto_fixtures.inproc_env

THROTTLED = (503, "RequestLimitExceeded")
INTERNAL = (500, "InternalError")


def error_body(code: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>injected {code}</Message>"
        "</Error></Errors><RequestID>req-1</RequestID></Response>"
    ).encode()


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class Injector:
    """A before-send handler failing the first ``failures`` attempts of ``action``."""

    def __init__(self, failures: int, error: tuple[int, str] = THROTTLED, action: str = "") -> None:
        self.remaining = failures
        self.error = error
        self.action = action
        self.attempts = 0

    def __call__(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if self.action and not event_name.endswith("." + self.action):
            return None
        self.attempts += 1
        if self.remaining == 0:
            return None
        self.remaining -= 1
        status, code = self.error
        return AWSResponse(request.url, status, {}, _RawBody(error_body(code)))

    def install(self, backend: Ec2Backend) -> Injector:
        backend.client.meta.events.register_first("before-send.ec2", self)
        return self


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays botocore's standard mode asked for; it gets 0 so tests do not sleep."""
    asked: list[float] = []
    original = standard.ExponentialBackoff.delay_amount

    def no_delay(self: Any, context: Any) -> float:
        asked.append(original(self, context))
        return 0.0

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", no_delay)
    return asked


def backend_with(env: MotoEnv, max_attempts: int, mode: str = "standard") -> Ec2Backend:
    config = Ec2Config(
        region=REGION, endpoint_url=env.endpoint_url, retry_mode=mode, max_attempts=max_attempts
    )
    return env.backend(config=config)


def test_throttled_call_is_retried_by_standard_mode_and_counted(
    moto_env: MotoEnv, delays: list[float]
) -> None:
    backend = backend_with(moto_env, max_attempts=5)
    injector = Injector(2, action="DescribeNetworkInterfaces").install(backend)
    enis = backend.describe_enis(moto_env.instance_id)
    assert [e.device_index for e in enis] == [0]
    assert injector.attempts == 3
    assert len(delays) == 2 and all(d >= 0 for d in delays)
    counts = moto_env.counter.counts
    assert counts[("DescribeNetworkInterfaces", "throttled")] == 2
    assert counts[("DescribeNetworkInterfaces", OK)] == 1
    assert moto_env.counter.total("DescribeNetworkInterfaces") == 3


def test_retry_exhaustion_ends_as_throttled(inproc_env: MotoEnv, delays: list[float]) -> None:
    backend = backend_with(inproc_env, max_attempts=3)
    injector = Injector(99).install(backend)
    with pytest.raises(CloudError) as info:
        backend.describe_subnets([inproc_env.subnet_id])
    assert (info.value.kind, info.value.code) == (FailureKind.THROTTLED, "RequestLimitExceeded")
    assert injector.attempts == 3
    assert inproc_env.counter.counts == {("DescribeSubnets", "throttled"): 3}


def test_server_errors_are_retried_then_succeed(inproc_env: MotoEnv, delays: list[float]) -> None:
    backend = backend_with(inproc_env, max_attempts=3)
    Injector(1, INTERNAL).install(backend)
    (subnet,) = backend.describe_subnets([inproc_env.subnet_id])
    assert subnet.subnet_id == inproc_env.subnet_id
    assert inproc_env.counter.counts == {
        ("DescribeSubnets", "other"): 1,
        ("DescribeSubnets", OK): 1,
    }


def test_connection_errors_are_retried_then_translated(
    inproc_env: MotoEnv, delays: list[float]
) -> None:
    backend = backend_with(inproc_env, max_attempts=2)
    attempts: list[str] = []

    def refuse(request: Any, **_: Any) -> None:
        attempts.append(request.url)
        raise EndpointConnectionError(endpoint_url=request.url)

    backend.client.meta.events.register_first("before-send.ec2", refuse)
    with pytest.raises(CloudError) as info:
        backend.describe_enis(inproc_env.instance_id)
    assert (info.value.kind, info.value.code) == (FailureKind.OTHER, "EndpointConnectionError")
    assert len(attempts) == 2
    assert inproc_env.counter.counts == {
        ("DescribeNetworkInterfaces", "other"): 2,
    }


def test_retry_mode_and_attempts_come_from_the_config(inproc_env: MotoEnv) -> None:
    backend = backend_with(inproc_env, max_attempts=7, mode="adaptive")
    assert backend.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    env_config = Ec2Config.from_env(
        {
            "AWS_REGION": "eu-west-1",
            "AWS_EC2_ENDPOINT": "http://127.0.0.1:5000",
            "AWS_RETRY_MODE": "adaptive",
            "AWS_MAX_ATTEMPTS": "4",
            "CLUSTER_NAME": "c1",
        }
    )
    assert (env_config.region, env_config.endpoint_url) == ("eu-west-1", "http://127.0.0.1:5000")
    assert (env_config.retry_mode, env_config.max_attempts) == ("adaptive", 4)
    assert env_config.cluster_name == "c1"


IID = "i-0123456789abcdef0"
CALLS: dict[str, Callable[[Ec2Backend], object]] = {
    "describe_enis": lambda b: b.describe_enis(IID),
    "describe_subnets": lambda b: b.describe_subnets(tag_key="x"),
    "create_eni": lambda b: b.create_eni(IID, CreateEni(0, "subnet-1", ("sg-1",))),
    "assign_ipv4": lambda b: b.assign_ipv4("eni-1", 1),
    "assign_prefixes": lambda b: b.assign_prefixes("eni-1", 1),
    "unassign_ipv4": lambda b: b.unassign_ipv4("eni-1", ["10.0.0.9"]),
    "unassign_prefixes": lambda b: b.unassign_prefixes("eni-1", ["10.0.0.16/28"]),
    "free_eni": lambda b: b.free_eni("eni-1"),
    "find_leaked_enis": lambda b: b.find_leaked_enis(IID, 0.0),
    "describe_instance_type": lambda b: b.describe_instance_type("m5.large"),
}


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("error", [THROTTLED, INTERNAL, (400, "InvalidParameterValue")])
def test_no_botocore_exception_escapes(
    delays: list[float], method: str, error: tuple[int, str]
) -> None:
    # every attempt is answered by the injector; the endpoint is a closed local port
    config = Ec2Config(region=REGION, endpoint_url="http://127.0.0.1:9", max_attempts=2)
    backend = Ec2Backend(config, session=moto_fixtures.session(), sleep=lambda _s: None)
    Injector(99, error).install(backend)
    with pytest.raises(CloudError) as info:
        CALLS[method](backend)
    assert type(info.value) is CloudError
    assert info.value.code == error[1]
