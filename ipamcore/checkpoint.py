"""The checkpoint format, as data: encode to and decode from upstream's ``ipam.json``.

Upstream (v1.23) writes::

    {"version": "vpc-cni-ipam/1",
     "allocations": [{"networkName": "aws-cni", "containerID": "...", "ifName": "eth0",
                      "ipv4": "10.0.1.5", "ipv6": "", "allocationTimestamp": <unix ns>,
                      "metadata": {"k8sPodNamespace": "default", "k8sPodName": "web-0"}}]}

This module reads exactly that. What upstream loses on restart (when each released address
was released, so cooldowns survive) is written in an extra top-level field,
``"releasedAddresses": [{"address": "10.0.1.9", "releasedAt": <unix ns>}]``, and the pod's
network namespace path, which a restart needs to tell a live pod from a gone one, in an
extra field of its allocation, ``"netns": "/var/run/netns/cni-..."`` (written when known);
upstream's Go decoder ignores both. Anything malformed is a :class:`CheckpointError`, never
an empty pool.

A rewrite keeps what it does not use: fields of an allocation or of its metadata that this
module does not know (upstream's ``interfacesCount``, or a newer upstream's fields) and the
exact ``allocationTimestamp`` (nanoseconds; a float of seconds keeps only about a quarter of a
microsecond) are carried in :attr:`Checkpoint.preserved` and written back for as long as the
allocation lives (:class:`CheckpointEncoder` remembers them from the decoded file).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, NamedTuple, Protocol

import attrs

from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.model import Allocation, AllocationKey, PodRef
from ipamcore.netspec import legacy_veth_suffix

CHECKPOINT_VERSION = "vpc-cni-ipam/1"
NS_PER_S = 1_000_000_000
MAX_TIMESTAMP_NS = 2**63 - 1  # upstream stores Go int64 nanoseconds
MAX_TIMESTAMP_S = (MAX_TIMESTAMP_NS // NS_PER_S) - 1  # whole seconds that still fit, with margin
_KNOWN_ENTRY = frozenset(
    {"networkName", "containerID", "ifName", "ipv4", "ipv6", "allocationTimestamp", "metadata",
     "netns"}
)  # fmt: skip
_KNOWN_METADATA = frozenset({"k8sPodNamespace", "k8sPodName"})
# A JSON string as json.dumps writes it (ASCII, escaped): the C encoder json.dumps uses.
_quote = json.encoder.encode_basestring_ascii
_EMPTY = '""'  # the empty string, quoted
# A timestamp written back exactly when the allocation's float seconds round to within this.
_SAME_ALLOCATION_NS = 1_000


@attrs.frozen
class Preserved:
    """What a rewrite keeps of one decoded allocation: its exact timestamp and the JSON
    members it does not know, in the entry and in its metadata (in their order; each value
    as compact JSON text, so the record is hashable)."""

    timestamp_ns: int
    fields: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


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
    # The network namespace path of an allocation's pod, where the writer knows it: data for
    # the shell (the core does not use it), kept with the allocations so a save is one file.
    netns: tuple[tuple[AllocationKey, str], ...] = ()
    from_upstream: bool = attrs.field(default=False, eq=False)
    # What a rewrite keeps of each decoded allocation (the module docstring).
    preserved: tuple[tuple[AllocationKey, Preserved], ...] = attrs.field(default=(), eq=False)


class CheckpointChange(NamedTuple):
    """What changed in the checkpoint since the previous write, as the entries' current
    values (so applying a change twice, or after a snapshot that already has it, is the
    same): allocations added or changed (with their pod's netns path, "" when unknown),
    keys whose allocation is gone, release times set, and addresses whose release time is
    gone (assigned again, or no longer free). A writer that keeps the stored document as
    entries applies it in work proportional to the change, not to the pool. (A named
    tuple: one is made for every commit.)"""

    put: tuple[tuple[Allocation, str], ...] = ()
    removed: tuple[AllocationKey, ...] = ()
    released: tuple[tuple[str, float], ...] = ()
    unreleased: tuple[str, ...] = ()

    def shifted(self, seconds: float) -> CheckpointChange:
        """This change with every time moved by ``seconds`` (monotonic <-> wall)."""
        if not seconds:
            return self
        return CheckpointChange(
            put=tuple(
                (a._replace(allocated_at=a.allocated_at + seconds), netns) for a, netns in self.put
            ),
            removed=self.removed,
            released=tuple((address, t + seconds) for address, t in self.released),
            unreleased=self.unreleased,
        )

    def apply_to(self, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` with this change made (O(checkpoint): for tests and tools)."""
        gone = set(self.removed) | {a.key for a, _ in self.put}
        allocations = [a for a in checkpoint.allocations if a.key not in gone]
        allocations += [a for a, _ in self.put]
        netns = dict(checkpoint.netns)
        for key in gone:
            netns.pop(key, None)
        netns.update((a.key, path) for a, path in self.put if path)
        cleared = set(self.unreleased) | {address for address, _ in self.released}
        released = [r for r in checkpoint.released_at if r[0] not in cleared]
        released += self.released
        return Checkpoint(
            allocations=tuple(sorted(allocations, key=lambda a: str(a.key))),
            released_at=tuple(sorted(released)),
            netns=tuple(netns.items()),
            from_upstream=checkpoint.from_upstream,
            preserved=checkpoint.preserved,
        )


class ChangeSource(Protocol):
    """What :class:`ChangeTracker` reads the current values from (an
    :class:`~ipamcore.ipam.Ipam`)."""

    def get(self, key: AllocationKey) -> Allocation | None:
        """The allocation of ``key`` now, or None."""
        ...

    def released_time(self, address: str) -> float | None:
        """The release time the checkpoint holds for ``address`` now, or None."""
        ...


class ChangeTracker:
    """Which allocation keys and addresses a writer has touched since its last
    :meth:`cut`, so the next checkpoint write carries only them (a
    :class:`CheckpointChange`). Whoever changes the state in any other way calls
    :meth:`touch_all`: the next cut is then None, which means "write the whole checkpoint".
    It starts that way (nothing is known written yet). Insertion-ordered, so a change is
    deterministic (the node's commands are replayed and compared)."""

    __slots__ = ("_addresses", "_keys", "full")

    def __init__(self) -> None:
        self._keys: dict[AllocationKey, None] = {}
        self._addresses: dict[str, None] = {}
        self.full = True

    def touch(self, key: AllocationKey, allocation: Allocation | None = None) -> None:
        """``key``'s allocation (and the address of ``allocation``, the one it had or has
        now) may have changed."""
        self._keys[key] = None
        if allocation is not None and allocation.ipv4:
            self._addresses[allocation.ipv4] = None

    def touch_all(self) -> None:
        """Anything may have changed: the next write is the whole checkpoint."""
        self.full = True

    def cut(
        self, source: ChangeSource, netns: Mapping[AllocationKey, str]
    ) -> CheckpointChange | None:
        """The change since the previous cut, read from ``source`` now (None: write the
        whole checkpoint); starts the next one."""
        keys, addresses = self._keys, self._addresses
        self._keys, self._addresses = {}, {}
        if self.full:
            self.full = False
            return None
        put: list[tuple[Allocation, str]] = []
        removed: list[AllocationKey] = []
        get = source.get
        for key in keys:  # (written out: a commit makes one cut per change)
            allocation = get(key)
            if allocation is None:
                removed.append(key)
            else:
                put.append((allocation, netns.get(key, "")))
        released, unreleased = _read_back(addresses, source.released_time)
        # (tuple.__new__: the named tuple's own __new__ is a Python call more)
        change = (tuple(put), tuple(removed), tuple(released), tuple(unreleased))
        return tuple.__new__(CheckpointChange, change)


def _read_back(
    addresses: Iterable[str], read: Callable[[str], float | None]
) -> tuple[list[tuple[str, float]], list[str]]:
    """``(address, time)`` of the addresses ``read`` finds a time for, and the others."""
    found: list[tuple[str, float]] = []
    missing: list[str] = []
    for address in addresses:
        at = read(address)
        if at is None:
            missing.append(address)
        else:
            found.append((address, at))
    return found, missing


def _to_ns(seconds: float) -> int:
    """Unix seconds to nanoseconds: whole seconds and the (exactly computed) fraction apart,
    so a present-day time keeps nanosecond precision. A time :func:`decode` would refuse
    (NaN, infinite, negative, past Go's int64 nanoseconds: ``now`` in milliseconds, say)
    raises :class:`CheckpointError` here, so that ``encode`` never writes what ``decode``
    rejects."""
    if type(seconds) is not float and (
        isinstance(seconds, bool) or not isinstance(seconds, int | float)
    ):
        raise CheckpointError(f"a time must be Unix seconds, got {type(seconds).__name__}")
    if not 0 <= seconds <= MAX_TIMESTAMP_S:  # also False for NaN
        raise CheckpointError(
            f"time {seconds!r} is outside 0..{MAX_TIMESTAMP_S:.0f} Unix seconds "
            "(is it in milliseconds?)"
        )
    whole = int(seconds)  # (the floor: not negative)
    # (At most MAX_TIMESTAMP_S whole seconds plus one: within Go's int64 nanoseconds.)
    return whole * NS_PER_S + round((seconds - whole) * NS_PER_S)


def _from_ns(ns: int) -> float:
    """Nanoseconds to the nearest float (int / int division is correctly rounded), so a
    present-day time survives the round trip bit for bit."""
    return ns / NS_PER_S


def _kept(a: Allocation, kept: Preserved | None) -> Preserved | None:
    """``kept`` if it is this allocation's (its timestamp matches), else None: a later
    allocation under the same key gets nothing of an earlier one."""
    if kept is None or abs(_to_ns(a.allocated_at) - kept.timestamp_ns) > _SAME_ALLOCATION_NS:
        return None
    return kept


def _allocation_json(a: Allocation, netns: str = "", kept: Preserved | None = None) -> str:
    """One allocation as upstream's entry: the text ``json.dumps(entry, separators=(",",
    ":"))`` writes, built directly when nothing unknown is kept (a commit encodes one or two
    entries; ``json.dumps`` costs several times more than the string itself)."""
    if kept is not None:
        return _allocation_json_kept(a, netns, kept)
    key, pod, q, ipv4, ipv6 = a.key, a.pod, _quote, a.ipv4, a.ipv6
    return (
        f'{{"networkName":{q(key.network_name)},"containerID":{q(key.container_id)},'
        f'"ifName":{q(key.if_name)},"ipv4":{q(ipv4) if ipv4 else _EMPTY},'
        f'"ipv6":{q(ipv6) if ipv6 else _EMPTY},'
        f'"allocationTimestamp":{_to_ns(a.allocated_at)},'
        f'"metadata":{{"k8sPodNamespace":{q(pod.namespace)},"k8sPodName":{q(pod.name)}}}'
        + (f',"netns":{q(netns)}}}' if netns else "}")
    )


def _allocation_json_kept(a: Allocation, netns: str, kept: Preserved) -> str:
    metadata: dict[str, object] = {"k8sPodNamespace": a.pod.namespace, "k8sPodName": a.pod.name}
    entry: dict[str, object] = {
        "networkName": a.key.network_name,
        "containerID": a.key.container_id,
        "ifName": a.key.if_name,
        "ipv4": a.ipv4 or "",
        "ipv6": a.ipv6 or "",
        "allocationTimestamp": kept.timestamp_ns,
        "metadata": metadata,
    }
    if netns:
        entry["netns"] = netns
    metadata.update((k, json.loads(v)) for k, v in kept.metadata)
    entry.update((k, json.loads(v)) for k, v in kept.fields)
    return json.dumps(entry, separators=(",", ":"))


def _released_json(released: tuple[str, float]) -> str:
    address, at = released
    return f'{{"address":{_quote(address)},"releasedAt":{_to_ns(at)}}}'


def _document(allocations: list[str], released: list[str]) -> bytes:
    """The compact JSON document ``json.dumps`` would write, from its entries' JSON."""
    return (
        f'{{"version":{json.dumps(CHECKPOINT_VERSION)},'
        f'"allocations":[{",".join(allocations)}],'
        f'"releasedAddresses":[{",".join(released)}]}}'
    ).encode()


def encode(checkpoint: Checkpoint) -> bytes:
    """The upstream JSON document (with our extra field), as UTF-8 bytes."""
    paths, kept = dict(checkpoint.netns), dict(checkpoint.preserved)
    return _document(
        [
            _allocation_json(a, paths.get(a.key, ""), _kept(a, kept.get(a.key)))
            for a in checkpoint.allocations
        ],
        [_released_json(r) for r in checkpoint.released_at],
    )


class CheckpointEncoder:
    """:func:`encode` with a memory: the JSON of each allocation and each release is kept
    from the previous call, so a writer that saves after every change (the daemon, once
    per commit batch) encodes only the entries that changed. The bytes are exactly
    :func:`encode`'s. The memory holds the entries of the last checkpoint only."""

    def __init__(self) -> None:
        self._allocations: dict[tuple[object, ...], str] = {}
        self._released: dict[tuple[str, float], str] = {}
        self._preserved: dict[AllocationKey, Preserved] = {}

    def preserve(self, checkpoint: Checkpoint) -> None:
        """Remember what a decoded ``checkpoint`` keeps (:attr:`Checkpoint.preserved`), so
        checkpoints built from memory (which carry none of it) write it back."""
        self._preserved = dict(checkpoint.preserved)

    def encode(self, checkpoint: Checkpoint) -> bytes:
        """The checkpoint's bytes, reusing the encoded form of allocations seen before."""
        allocations: dict[tuple[object, ...], str] = {}
        parts: list[str] = []
        paths = dict(checkpoint.netns)
        preserved = {**self._preserved, **dict(checkpoint.preserved)}
        for a in checkpoint.allocations:
            netns = paths.get(a.key, "")
            kept = _kept(a, preserved.get(a.key)) if preserved else None
            # Every field the JSON shows (a plain tuple hashes faster than the Allocation).
            fields = (a.key.network_name, a.key.container_id, a.key.if_name, a.ipv4, a.ipv6,
                      a.allocated_at, a.pod.namespace, a.pod.name, netns, kept)  # fmt: skip
            part = self._allocations.get(fields) or _allocation_json(a, netns, kept)
            allocations[fields] = part
            parts.append(part)
        released = {r: self._released.get(r) or _released_json(r) for r in checkpoint.released_at}
        self._allocations, self._released = allocations, released
        return _document(parts, [released[r] for r in checkpoint.released_at])


def _str_field(entry: Mapping[str, Any], name: str, required: bool = True) -> str:
    value = entry.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise CheckpointError(f"field {name!r} must be a string, got {type(value).__name__}")
    if required and not value:
        raise CheckpointError(f"field {name!r} is missing or empty")
    return value


def _address_field(
    entry: Mapping[str, Any], name: str, family: type[IPv4Address | IPv6Address] | None
) -> str | None:
    """An IP address of ``family`` (either family for None) in canonical text, or None when
    empty; anything else is malformed (it would fail later, when the pool is rebuilt)."""
    value = _str_field(entry, name, required=False)
    if not value:
        return None
    try:
        address = ip_address(value) if family is None else family(value)
    except ValueError:
        kind = "IP " if family is None else family.__name__[:4] + " "
        raise CheckpointError(f"field {name!r} is not an {kind}address: {value[:60]!r}") from None
    if isinstance(address, IPv6Address) and address.scope_id:
        raise CheckpointError(f"field {name!r} has a scope: {value[:60]!r}")
    return str(address)


def _timestamp_field(entry: Mapping[str, Any], name: str) -> int:
    """Unix nanoseconds: an integer in Go's ``int64`` range, not negative."""
    value = entry.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"field {name!r} must be an integer")
    if not 0 <= value <= MAX_TIMESTAMP_NS:
        raise CheckpointError(f"field {name!r} is outside 0..{MAX_TIMESTAMP_NS}")
    return value


def _decode_allocation(entry: object) -> Allocation:
    if not isinstance(entry, dict):
        raise CheckpointError("an allocation must be a JSON object")
    meta = entry.get("metadata") or {}
    if not isinstance(meta, dict):
        raise CheckpointError("field 'metadata' must be an object")
    ipv4 = _address_field(entry, "ipv4", IPv4Address)
    ipv6 = _address_field(entry, "ipv6", IPv6Address)
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
        allocated_at=_from_ns(_timestamp_field(entry, "allocationTimestamp")),
    )


def _no_constants(name: str) -> object:
    raise CheckpointError(f"not valid JSON: {name} is not a JSON number")


def decode(data: bytes | str) -> Checkpoint:
    """Parse a checkpoint written by this project or by the upstream daemon."""
    try:
        doc = json.loads(data, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise CheckpointError("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise CheckpointError("the checkpoint must be a JSON object")
    if "version" not in doc:
        raise CheckpointError(
            f"not a checkpoint: no 'version' field (expected {CHECKPOINT_VERSION!r})"
        )
    version = doc.get("version")
    if version != CHECKPOINT_VERSION:
        raise UnsupportedCheckpointVersion(version)
    raw_allocs = doc.get("allocations")
    if raw_allocs is None:
        raw_allocs = []
    if not isinstance(raw_allocs, list):
        raise CheckpointError("field 'allocations' must be a list")
    allocations = tuple(_decode_allocation(e) for e in raw_allocs)
    netns = tuple(
        (a.key, path)
        for a, e in zip(allocations, raw_allocs, strict=True)
        if (path := _str_field(e, "netns", required=False))
    )
    preserved = tuple((a.key, _preserved(e)) for a, e in zip(allocations, raw_allocs, strict=True))
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
        address = _address_field(entry, "address", None)
        if address is None:
            raise CheckpointError("field 'address' is missing or empty")
        released.append((address, _from_ns(_timestamp_field(entry, "releasedAt"))))
    return Checkpoint(
        allocations=allocations,
        released_at=tuple(released),
        netns=netns,
        from_upstream=from_upstream,
        preserved=preserved,
    )


def _preserved(entry: Mapping[str, Any]) -> Preserved:
    meta = entry.get("metadata") or {}
    return Preserved(
        timestamp_ns=_timestamp_field(entry, "allocationTimestamp"),
        fields=tuple((k, _compact(v)) for k, v in entry.items() if k not in _KNOWN_ENTRY),
        metadata=tuple((k, _compact(v)) for k, v in meta.items() if k not in _KNOWN_METADATA),
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def upstream_stale(checkpoint: Checkpoint, host_links: Iterable[str]) -> tuple[Allocation, ...]:
    """Upstream's rule at restore (``normalizeCheckpointDataByPodVethExistence``): an
    allocation of an upstream checkpoint that names its pod (namespace and name both set)
    and for which no host link's name ends in that pod's veth suffix is stale (the pod was
    deleted while no daemon ran). Empty for this project's checkpoints, whose veth names
    do not derive from the pod's name (the restart asks the datapath about each pod)."""
    if not checkpoint.from_upstream:
        return ()
    names = tuple(host_links)
    return tuple(
        a
        for a in checkpoint.allocations
        if a.pod.namespace
        and a.pod.name
        and not any(n.endswith(legacy_veth_suffix(a.pod.namespace, a.pod.name)) for n in names)
    )
