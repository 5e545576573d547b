"""The checkpoint format: upstream files decode, our extras round-trip, bad input is typed."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamcore.checkpoint import Checkpoint, CheckpointEncoder, decode, encode
from ipamcore.config import PoolConfig
from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.model import Allocation, AllocationKey, PodRef
from tests.core.builders import eni, key, node, pod

UPSTREAM = b"""{"version":"vpc-cni-ipam/1","allocations":[
 {"networkName":"aws-cni","containerID":"6f1c1d2e","ifName":"eth0","ipv4":"10.0.0.10",
  "allocationTimestamp":1700000000123456789,
  "metadata":{"k8sPodNamespace":"kube-system","k8sPodName":"coredns-1"}},
 {"networkName":"aws-cni","containerID":"77aa","ifName":"eth0","ipv4":"10.0.0.11",
  "allocationTimestamp":1700000001000000000,"metadata":{}}]}"""


def test_reads_a_file_written_by_the_upstream_daemon() -> None:
    checkpoint = decode(UPSTREAM)
    first, second = checkpoint.allocations
    assert first.key == AllocationKey("aws-cni", "6f1c1d2e", "eth0")
    assert first.pod == PodRef("kube-system", "coredns-1")
    assert first.ipv4 == "10.0.0.10" and first.ipv6 is None
    assert first.allocated_at == pytest.approx(1700000000.123456789)
    assert second.pod == PodRef("", "")
    assert checkpoint.released_at == ()


def test_writes_upstream_field_names_and_keeps_release_times_in_an_extra_field() -> None:
    ipam = node(enis=(eni(0, ips=2),))
    ipam.assign(key(1), pod(1), 1700000000.5)
    ipam.assign(key(2), pod(2), 1700000000.5)
    ipam.release(key(2), 1700000010.25)
    doc = json.loads(encode(ipam.checkpoint()))
    assert doc["version"] == "vpc-cni-ipam/1"
    assert set(doc["allocations"][0]) == {
        "networkName",
        "containerID",
        "ifName",
        "ipv4",
        "ipv6",
        "allocationTimestamp",
        "metadata",
    }
    assert doc["allocations"][0]["allocationTimestamp"] == 1700000000500000000
    assert doc["releasedAddresses"] == [{"address": "10.0.0.11", "releasedAt": 1700000010250000000}]


def test_cooldowns_survive_a_restart() -> None:
    ipam = node(config=PoolConfig(cooldown_s=30), enis=(eni(0, ips=1),))
    ipam.assign(key(1), pod(1), 0.0)
    ipam.release(key(1), 100.0)
    data = encode(ipam.checkpoint())
    fresh = Ipam(PoolConfig(cooldown_s=30), limits_for("m5.large"))
    fresh.load([eni(0, ips=1)], 110.0)
    fresh.restore(decode(data), 110.0)
    assert fresh.stats(110.0).cooling == 1
    assert fresh.stats(130.0).available == 1


def test_restore_drops_allocations_whose_pod_is_gone_and_cools_their_address() -> None:
    ipam = node(enis=(eni(0, ips=3),))
    ipam.assign(key(1), pod(1), 0.0)
    ipam.assign(key(2), pod(2), 0.0)
    fresh = node(enis=(eni(0, ips=3),))
    report = fresh.restore(ipam.checkpoint(), 50.0, keep=lambda a: a.key != key(2))
    assert [a.key for a in report.restored] == [key(1)]
    assert [(a.key, why) for a, why in report.dropped] == [(key(2), "pod is gone")]
    assert fresh.stats(50.0).cooling == 1
    assert fresh.get(key(1)) is not None and fresh.get(key(1)).eni_id == "eni-0000"  # type: ignore[union-attr]


def test_restore_drops_an_address_no_longer_on_any_eni() -> None:
    checkpoint = Checkpoint(allocations=(Allocation(key(1), pod(1), "10.9.9.9", None, 0.0),))
    report = node(enis=(eni(0, ips=1),)).restore(checkpoint, 0.0)
    assert report.dropped[0][1] == "address is on no ENI"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"version":"vpc-cni-ipam/1","allocations":{}}',
        b'{"version":"vpc-cni-ipam/1","allocations":[1]}',
        b'{"version":"vpc-cni-ipam/1","allocations":[{"ipv4":"10.0.0.1"}]}',
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"a","ipv4":5}]}',
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"a"}]}',
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"a","ipv4":"1.1.1.1",'
        b'"allocationTimestamp":"x"}]}',
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"a","ipv4":"1.1.1.1",'
        b'"netns":5}]}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_malformed_content_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(CheckpointError):
        decode(data)


def test_unknown_version_is_a_typed_error_naming_it() -> None:
    with pytest.raises(UnsupportedCheckpointVersion, match="vpc-cni-ipam/2"):
        decode(b'{"version":"vpc-cni-ipam/2","allocations":[]}')


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_decoder_never_raises_anything_but_checkpoint_error(data: bytes) -> None:
    try:
        decode(data)
    except CheckpointError:
        pass


names = st.text(st.characters(codec="utf-8"), max_size=20)


@given(
    st.lists(
        st.tuples(names, names, names, st.floats(1.5e9, 4e9), names, names, names),
        max_size=5,
        unique_by=lambda t: t[:3],
    ).filter(lambda rows: all(r[1] for r in rows))
)
def test_round_trip_of_arbitrary_allocations(
    rows: list[tuple[str, str, str, float, str, str, str]],
) -> None:
    allocations = tuple(
        Allocation(AllocationKey(n, c, i), PodRef(ns, p), f"10.0.0.{k}", None, t)
        for k, (n, c, i, t, ns, p, _) in enumerate(rows)
    )
    netns = tuple((a.key, row[6]) for a, row in zip(allocations, rows, strict=True) if row[6])
    checkpoint = Checkpoint(allocations=allocations, netns=netns)
    assert decode(encode(checkpoint)) == checkpoint


def test_pod_netns_paths_ride_in_an_extra_field_of_their_allocation() -> None:
    a1 = Allocation(AllocationKey("aws-cni", "c1", "eth0"), PodRef("ns", "a"), "10.0.0.1",
                    None, 1.7e9)  # fmt: skip
    a2 = a1._replace(key=AllocationKey("aws-cni", "c2", "eth0"), ipv4="10.0.0.2")
    checkpoint = Checkpoint(allocations=(a1, a2), netns=((a2.key, "/var/run/netns/cni-2"),))
    doc = json.loads(encode(checkpoint))
    assert "netns" not in doc["allocations"][0]
    assert doc["allocations"][1]["netns"] == "/var/run/netns/cni-2"
    assert decode(encode(checkpoint)).netns == ((a2.key, "/var/run/netns/cni-2"),)
    assert decode(UPSTREAM).netns == ()  # upstream's files carry none


def ns(seconds: float) -> int:
    whole = int(seconds // 1)
    return whole * 1_000_000_000 + round((seconds - whole) * 1_000_000_000)


def reference_encode(checkpoint: Checkpoint) -> bytes:
    """The document as one ``json.dumps`` writes it (what ``encode`` must equal)."""
    paths = dict(checkpoint.netns)
    return json.dumps(
        {
            "version": "vpc-cni-ipam/1",
            "allocations": [
                {
                    "networkName": a.key.network_name,
                    "containerID": a.key.container_id,
                    "ifName": a.key.if_name,
                    "ipv4": a.ipv4 or "",
                    "ipv6": a.ipv6 or "",
                    "allocationTimestamp": ns(a.allocated_at),
                    "metadata": {"k8sPodNamespace": a.pod.namespace, "k8sPodName": a.pod.name},
                    **({"netns": paths[a.key]} if paths.get(a.key) else {}),
                }
                for a in checkpoint.allocations
            ],
            "releasedAddresses": [
                {"address": address, "releasedAt": ns(at)} for address, at in checkpoint.released_at
            ],
        },
        separators=(",", ":"),
    ).encode()


allocation_rows = st.lists(
    st.tuples(names, names, names, st.floats(1.5e9, 4e9), names, names,
              st.sampled_from(["10.0.0.1", "10.0.0.2", None]), st.sampled_from(["fd00::1", None]),
              st.sampled_from(["", "/var/run/netns/a", "/var/run/netns/b"])),
    max_size=6,
)  # fmt: skip
released_rows = st.lists(
    st.tuples(st.sampled_from(["10.0.1.1", "10.0.1.2", "10.0.1.3"]), st.floats(1.5e9, 4e9)),
    max_size=6,
)


def checkpoints() -> st.SearchStrategy[Checkpoint]:
    return st.builds(
        lambda rows, released: Checkpoint(
            allocations=tuple(
                Allocation(AllocationKey(n, c, i), PodRef(ns, p), v4, v6, t)
                for n, c, i, t, ns, p, v4, v6, _ in rows
            ),
            released_at=tuple(released),
            netns=tuple((AllocationKey(*r[:3]), r[8]) for r in rows if r[8]),
        ),
        allocation_rows,
        released_rows,
    )


CHANGES = {
    "network_name": lambda a: a._replace(key=a.key._replace(network_name="other")),
    "container_id": lambda a: a._replace(key=a.key._replace(container_id="other")),
    "if_name": lambda a: a._replace(key=a.key._replace(if_name="eth9")),
    "ipv4": lambda a: a._replace(ipv4="10.9.9.9" if a.ipv4 != "10.9.9.9" else None),
    "ipv6": lambda a: a._replace(ipv6="fd00::9" if a.ipv6 != "fd00::9" else None),
    "allocated_at": lambda a: a._replace(allocated_at=a.allocated_at + 0.5),
    "namespace": lambda a: a._replace(pod=attrs.evolve(a.pod, namespace="other")),
    "name": lambda a: a._replace(pod=attrs.evolve(a.pod, name="other")),
}


@st.composite
def checkpoint_sequences(draw: st.DrawFn) -> list[Checkpoint]:
    """A checkpoint, then versions of it where each allocation is kept, dropped or has one
    field changed, and the releases change: what a writer sees between saves."""
    sequence = [draw(checkpoints())]
    for _ in range(draw(st.integers(1, 4))):
        allocations = []
        paths = dict(sequence[-1].netns)
        netns = []
        for a in sequence[-1].allocations:
            change = draw(st.sampled_from(["keep", "drop", "netns", *CHANGES]))
            if change == "drop":
                continue
            b = CHANGES[change](a) if change in CHANGES else a
            allocations.append(b)
            path = paths.get(a.key, "")
            if change == "netns":
                path = draw(st.sampled_from(["", "/var/run/netns/a", "/var/run/netns/c"]))
            if path:
                netns.append((b.key, path))
        sequence.append(
            Checkpoint(tuple(allocations), tuple(draw(released_rows)), netns=tuple(netns))
        )
    return sequence


@given(checkpoint_sequences())
def test_encoder_with_memory_writes_exactly_what_encode_writes(
    sequence: list[Checkpoint],
) -> None:
    """Any sequence of checkpoints (entries kept, changed, dropped, repeated) through one
    CheckpointEncoder gives, each time, the bytes of a fresh encode and of json.dumps."""
    encoder = CheckpointEncoder()
    for checkpoint in sequence:
        expected = reference_encode(checkpoint)
        assert encode(checkpoint) == expected
        assert encoder.encode(checkpoint) == expected


def test_encoder_forgets_entries_that_left_the_checkpoint() -> None:
    encoder = CheckpointEncoder()
    first = Allocation(AllocationKey("aws-cni", "c1", "eth0"), PodRef("ns", "a"), "10.0.0.1",
                       None, 1.7e9)  # fmt: skip
    moved = first._replace(ipv4="10.0.0.2")  # same pod, another address
    encoder.encode(Checkpoint(allocations=(first,), released_at=(("10.0.0.9", 1.7e9),)))
    data = encoder.encode(Checkpoint(allocations=(moved,)))
    assert decode(data) == Checkpoint(allocations=(moved,))
    assert len(encoder._allocations) == 1 and not encoder._released


# ------------------------------------------------------------------ issue 16, item 5

UPSTREAM_WITH_EXTRAS = (
    '{"version":"vpc-cni-ipam/1","allocations":[{"networkName":"aws-cni",'
    '"containerID":"c1","ifName":"eth0","ipv4":"10.0.1.5","allocationTimestamp":'
    '1733580000123456789,"metadata":{"k8sPodNamespace":"default","k8sPodName":"web-0",'
    '"interfacesCount":2},"futureField":{"a":[1,2]}}]}'
)


def test_a_rewrite_keeps_unknown_fields_and_the_exact_timestamp() -> None:
    from ipamcore.checkpoint import CheckpointEncoder

    decoded = decode(UPSTREAM_WITH_EXTRAS)
    entry = json.loads(encode(decoded))["allocations"][0]
    assert entry["allocationTimestamp"] == 1733580000123456789
    assert entry["metadata"]["interfacesCount"] == 2
    assert entry["futureField"] == {"a": [1, 2]}
    # A checkpoint built from memory (the daemon's) carries none of it: the encoder that
    # saw the decoded file writes it back, for as long as the allocation lives.
    from_memory = attrs.evolve(decoded, preserved=())
    encoder = CheckpointEncoder()
    encoder.preserve(decoded)
    assert json.loads(encoder.encode(from_memory))["allocations"][0] == entry
    # A later allocation under the same key gets nothing of the earlier one.
    (a,) = decoded.allocations
    later = attrs.evolve(
        from_memory, allocations=(a._replace(allocated_at=a.allocated_at + 60),)
    )
    again = json.loads(encoder.encode(later))["allocations"][0]
    assert "futureField" not in again and "interfacesCount" not in again["metadata"]


def test_upstream_stale_is_upstreams_veth_rule() -> None:
    from ipamcore.checkpoint import upstream_stale
    from ipamcore.netspec import legacy_host_veth_name

    doc = json.loads(UPSTREAM_WITH_EXTRAS)
    doc["allocations"].append(
        {"networkName": "aws-cni", "containerID": "c2", "ifName": "eth0", "ipv4": "10.0.1.6",
         "allocationTimestamp": 1, "metadata": {"k8sPodNamespace": "default", "k8sPodName": "db"}}
    )  # fmt: skip
    doc["allocations"].append(
        {"networkName": "aws-cni", "containerID": "c3", "ifName": "eth0", "ipv4": "10.0.1.7",
         "allocationTimestamp": 1, "metadata": {}}
    )  # fmt: skip
    checkpoint = decode(json.dumps(doc))
    links = ["lo", "eth0", legacy_host_veth_name("default", "web-0", prefix="abc")]
    stale = upstream_stale(checkpoint, links)
    assert [a.key.container_id for a in stale] == ["c2"]  # no veth; c3 names no pod: kept
    ours = attrs.evolve(checkpoint, from_upstream=False)
    assert upstream_stale(ours, links) == ()
