"""The boto3 EC2 client as the backend uses it: configuration, retries and call observation.

Retries are botocore's own (``standard`` or ``adaptive`` retry mode); this module adds no
retry loop. Observation hooks botocore's event system and reports **one CallRecord per HTTP
attempt**: a call that is throttled twice and then succeeds yields two THROTTLED records and
one OK record, so retries show up in the counts. A call answered without any HTTP attempt
(botocore's ``Stubber`` answers in ``before-call``) yields one record for the logical call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from backends.aws.errors import kind_for_code
from backends.observe import OK, CallObserver, CallRecord
from ipamcore.errors import FailureKind

_ATTEMPT_START = "ipamcore_attempt_start"
_CALL_START = "ipamcore_call_start"
_ATTEMPTS_SEEN = "ipamcore_attempts_seen"


@attrs.frozen
class Ec2Config:
    """How to reach EC2 and what to stamp on the ENIs this node creates.

    ``endpoint_url`` is empty for the real regional endpoint, or e.g. a moto_server URL.
    ``retry_mode`` is botocore's (``standard`` or ``adaptive``); ``max_attempts`` counts the
    first attempt too. ``cluster_name`` adds the ``cluster.k8s.amazonaws.com/name`` tag (and
    scopes the cleanup of other nodes' leaked ENIs to it); ``extra_tags`` go on every created
    ENI. ``delete_on_termination`` (upstream's behaviour) sets DeleteOnTermination on each new
    ENI's attachment, one ModifyNetworkInterfaceAttribute call after the attach (EC2 cannot
    set it at create or attach time); False skips that call, and the ENIs a terminated node
    leaves are then freed by the other nodes' leaked-ENI cleanup.
    """

    region: str = "us-west-2"
    endpoint_url: str = ""
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    cluster_name: str = ""
    extra_tags: Mapping[str, str] = attrs.field(factory=dict)
    delete_on_termination: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Ec2Config:
        """Build from the daemon's environment (``AWS_REGION``, ``AWS_EC2_ENDPOINT``, ...)."""
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-west-2"
        return cls(
            region=region,
            endpoint_url=environ.get("AWS_EC2_ENDPOINT", ""),
            retry_mode=environ.get("AWS_RETRY_MODE", "standard"),
            max_attempts=int(environ.get("AWS_MAX_ATTEMPTS", "5")),
            cluster_name=environ.get("CLUSTER_NAME", ""),
        )

    def botocore_config(self) -> Config:
        return Config(
            region_name=self.region,
            # botocore's "max_attempts" counts retries only; "total_max_attempts" all attempts
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
        )


def make_ec2_client(config: Ec2Config, session: boto3.Session | None = None) -> Any:
    """A boto3 EC2 client for ``config`` (credentials come from the session / environment)."""
    session = session or boto3.Session()
    kwargs: dict[str, Any] = {"region_name": config.region, "config": config.botocore_config()}
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    return session.client("ec2", **kwargs)


def _outcome_of(response: Any, caught_exception: BaseException | None) -> tuple[str, str]:
    """(outcome, code) of one attempt as ``needs-retry`` sees it."""
    if caught_exception is not None:
        return FailureKind.OTHER.value, type(caught_exception).__name__
    if response is None:
        return FailureKind.OTHER.value, ""
    http, parsed = response
    if getattr(http, "status_code", 200) < 300:
        return OK, ""
    code = str(parsed.get("Error", {}).get("Code", ""))
    return kind_for_code(code).value, code


def install_observer(
    client: Any, observer: CallObserver, monotonic: Callable[[], float] = time.monotonic
) -> None:
    """Report every EC2 attempt made through ``client`` to ``observer``.

    ``request-created`` fires once per attempt (retries rebuild the request) and
    ``needs-retry`` once after each attempt, with its response or exception; the retry
    handler's sleep happens after both, so latencies exclude backoff. The per-call request
    context carries the start times, so one client can serve many threads.
    """
    events = client.meta.events

    def before_call(context: dict[str, Any], **_: Any) -> None:
        context[_CALL_START] = monotonic()
        context[_ATTEMPTS_SEEN] = 0

    def request_created(request: Any, **_: Any) -> None:
        request.context[_ATTEMPT_START] = monotonic()

    def needs_retry(
        operation: Any,
        request_dict: dict[str, Any],
        response: Any = None,
        caught_exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        context = request_dict.get("context", {})
        start = context.get(_ATTEMPT_START, monotonic())
        context[_ATTEMPTS_SEEN] = context.get(_ATTEMPTS_SEEN, 0) + 1
        outcome, code = _outcome_of(response, caught_exception)
        _emit(observer, CallRecord(operation.name, monotonic() - start, outcome, code))

    def after_call(
        model: Any, http_response: Any, parsed: Any, context: dict[str, Any], **_: Any
    ) -> None:
        if context.get(_ATTEMPTS_SEEN, 0):
            return  # already reported attempt by attempt
        outcome, code = _outcome_of((http_response, parsed), None)
        start = context.get(_CALL_START, monotonic())
        _emit(observer, CallRecord(model.name, monotonic() - start, outcome, code))

    events.register("before-call.ec2", before_call)
    events.register("request-created.ec2", request_created)
    events.register("needs-retry.ec2", needs_retry)
    events.register("after-call.ec2", after_call)


def _emit(observer: CallObserver, record: CallRecord) -> None:
    """Observers must not break EC2 calls: their exceptions are swallowed."""
    try:
        observer(record)
    except Exception:
        pass
