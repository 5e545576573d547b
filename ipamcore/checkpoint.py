"""The checkpoint format, as data: encode to and decode from upstream's ``ipam.json``.

Upstream (v1.23) writes::

    {"version": "vpc-cni-ipam/1",
     "allocations": [{"networkName": "aws-cni", "containerID": "...", "ifName": "eth0",
                      "ipv4": "10.0.1.5", "ipv6": "", "allocationTimestamp": <unix ns>,
                      "metadata": {"k8sPodNamespace": "default", "k8sPodName": "web-0"}}]}

This module reads exactly that. What upstream loses on restart (when each released address
was released, so cooldowns survive) is written in an extra top-level field,
``"releasedAddresses": [{"address": "10.0.1.9", "releasedAt": <unix ns>}]``, which upstream's
Go decoder ignores. Anything malformed is a :class:`CheckpointError`, never an empty pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.model import Allocation, AllocationKey, PodRef

CHECKPOINT_VERSION = "vpc-cni-ipam/1"
NS_PER_S = 1_000_000_000


@attrs.frozen
class Checkpoint:
    """Allocations and release times (Unix seconds) as stored on disk.

    ``from_upstream``: the document had no ``releasedAddresses`` field, so it was written by
    the upstream daemon and the release times of addresses freed before it stopped are
    unknown (this project always writes the field, empty or not). Where the document came
    from, not what it holds: not compared by ``==``.
    """

    allocations: tuple[Allocation, ...] = ()
    released_at: tuple[tuple[str, float], ...] = ()
    from_upstream: bool = attrs.field(default=False, eq=False)


def _to_ns(seconds: float) -> int:
    """Unix seconds to nanoseconds: whole seconds and the (exactly computed) fraction apart,
    so a present-day time keeps nanosecond precision."""
    whole = int(seconds // 1)
    return whole * NS_PER_S + round((seconds - whole) * NS_PER_S)


def _from_ns(ns: int) -> float:
    """Nanoseconds to the nearest float (int / int division is correctly rounded), so a
    present-day time survives the round trip bit for bit."""
    return ns / NS_PER_S


def encode(checkpoint: Checkpoint) -> bytes:
    """The upstream JSON document (with our extra field), as UTF-8 bytes."""
    doc: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "allocations": [
            {
                "networkName": a.key.network_name,
                "containerID": a.key.container_id,
                "ifName": a.key.if_name,
                "ipv4": a.ipv4 or "",
                "ipv6": a.ipv6 or "",
                "allocationTimestamp": _to_ns(a.allocated_at),
                "metadata": {"k8sPodNamespace": a.pod.namespace, "k8sPodName": a.pod.name},
            }
            for a in checkpoint.allocations
        ],
        "releasedAddresses": [
            {"address": addr, "releasedAt": _to_ns(at)} for addr, at in checkpoint.released_at
        ],
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


def _str_field(entry: Mapping[str, Any], name: str, required: bool = True) -> str:
    value = entry.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise CheckpointError(f"field {name!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise CheckpointError(f"field {name!r} is missing or empty")
    return value


def _int_field(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"field {name!r} must be an integer")
    return value


def _decode_allocation(entry: object) -> Allocation:
    if not isinstance(entry, dict):
        raise CheckpointError("an allocation must be a JSON object")
    meta = entry.get("metadata") or {}
    if not isinstance(meta, dict):
        raise CheckpointError("field 'metadata' must be an object")
    ipv4 = _str_field(entry, "ipv4", required=False) or None
    ipv6 = _str_field(entry, "ipv6", required=False) or None
    if ipv4 is None and ipv6 is None:
        raise CheckpointError("an allocation has neither ipv4 nor ipv6")
    return Allocation(
        key=AllocationKey(
            network_name=_str_field(entry, "networkName", required=False),
            container_id=_str_field(entry, "containerID"),
            if_name=_str_field(entry, "ifName", required=False),
        ),
        pod=PodRef(
            namespace=_str_field(meta, "k8sPodNamespace", required=False),
            name=_str_field(meta, "k8sPodName", required=False),
        ),
        ipv4=ipv4,
        ipv6=ipv6,
        allocated_at=_from_ns(_int_field(entry, "allocationTimestamp")),
    )


def decode(data: bytes | str) -> Checkpoint:
    """Parse a checkpoint written by this project or by the upstream daemon."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise CheckpointError("the checkpoint must be a JSON object")
    version = doc.get("version")
    if version != CHECKPOINT_VERSION:
        raise UnsupportedCheckpointVersion(version)
    raw_allocs = doc.get("allocations")
    if raw_allocs is None:
        raw_allocs = []
    if not isinstance(raw_allocs, list):
        raise CheckpointError("field 'allocations' must be a list")
    allocations = tuple(_decode_allocation(e) for e in raw_allocs)
    keys = [a.key for a in allocations]
    if len(set(keys)) != len(keys):
        raise CheckpointError("two allocations share one (networkName, containerID, ifName)")
    from_upstream = "releasedAddresses" not in doc
    raw_released = doc.get("releasedAddresses") or []
    if not isinstance(raw_released, list):
        raise CheckpointError("field 'releasedAddresses' must be a list")
    released: list[tuple[str, float]] = []
    for entry in raw_released:
        if not isinstance(entry, dict):
            raise CheckpointError("a released address must be a JSON object")
        released.append(
            (_str_field(entry, "address"), _from_ns(_int_field(entry, "releasedAt")))
        )
    return Checkpoint(
        allocations=allocations, released_at=tuple(released), from_upstream=from_upstream
    )
