"""adapters.protocol: framing, validation of hostile input, the client, pending-DEL records."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import pending_dels as pd
from adapters import protocol as p
from tests.rigs.fake_ipamd import FakeIpamd


def add_req(**kw: Any) -> p.Request:
    fields: dict[str, Any] = dict(
        network_name="aws-cni",
        container_id="0123abcd",
        if_name="eth0",
        netns="/var/run/netns/cni-1234",
        pod_namespace="default",
        pod_name="web-0",
    )
    fields.update(kw)
    return p.Request(p.OP_ADD, **fields)


def frame(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def good_obj(**kw: Any) -> dict[str, Any]:
    d = add_req().to_dict()
    d.update(kw)
    return d


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "req",
    [
        add_req(),
        add_req(mtu=1500, prev_result={"cniVersion": "1.0.0", "ips": []}),
        p.Request(p.OP_DEL, "aws-cni", "abc", "eth0", "", prev_result={"a": [1, 2]}),
        p.Request(p.OP_CHECK, "aws-cni", "abc", "eth0", "/proc/42/ns/net", prev_result={}),
        p.Request(p.OP_STATUS),
        p.Request(p.OP_GC, "aws-cni", valid_attachments=[("abc", "eth0"), ("d.e_f-1", "net1")]),
    ],
)
def test_request_round_trip(req: p.Request) -> None:
    data = p.encode_request(req)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert p.decode_request(data) == req
    assert p.decode_request(data[:-1]) == req  # the newline is optional for decode


def test_request_wire_fields_are_exactly_the_documented_ones() -> None:
    obj = json.loads(p.encode_request(add_req(mtu=9001)))
    assert obj == {
        "version": 1,
        "op": "add",
        "network_name": "aws-cni",
        "container_id": "0123abcd",
        "if_name": "eth0",
        "netns": "/var/run/netns/cni-1234",
        "pod_namespace": "default",
        "pod_name": "web-0",
        "mtu": 9001,
    }
    gc = json.loads(p.encode_request(p.Request(p.OP_GC, "n", valid_attachments=[("c", "e")])))
    assert gc["valid_attachments"] == [{"container_id": "c", "if_name": "e"}]


def test_reply_round_trip_and_shape() -> None:
    ok = p.Reply.success({"ipv4": "10.0.0.5"})
    assert json.loads(p.encode_reply(ok)) == {
        "version": 1,
        "ok": True,
        "result": {"ipv4": "10.0.0.5"},
    }
    assert p.decode_reply(p.encode_reply(ok)) == ok
    err = p.Reply.failure(p.ERR_POOL_EMPTY, "no free address")
    assert json.loads(p.encode_reply(err)) == {
        "version": 1,
        "ok": False,
        "error": {"code": "pool_empty", "message": "no free address"},
    }
    back = p.decode_reply(p.encode_reply(err))
    assert (back.ok, back.error_code, back.error_message) == (
        False,
        "pool_empty",
        "no free address",
    )


def test_oversized_reply_becomes_internal_error() -> None:
    data = p.encode_reply(p.Reply.success({"x": "a" * p.MAX_MESSAGE_SIZE}))
    reply = p.decode_reply(data)
    assert not reply.ok and reply.error_code == p.ERR_INTERNAL


def test_add_result_round_trip() -> None:
    res = p.AddResult(
        host_veth="eni1234567890a",
        if_name="eth0",
        ipv4="10.0.0.5",
        mac="0A:58:0A:00:00:05",
        eni_id="eni-0abc",
        device_index=1,
        mtu=9001,
    )
    back = p.AddResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.ipv4 == "10.0.0.5" and back.mac == "0a:58:0a:00:00:05"
    assert back.prefix_len == 32 and back.gateway == "169.254.1.1"
    assert back.device_index == 1 and back.eni_id == "eni-0abc"


@pytest.mark.parametrize(
    "patch",
    [
        {"host_veth": "../../etc"},
        {"host_veth": "a" * 16},
        {"if_name": "eth 0"},
        {"ipv4": "10.0.0.256"},
        {"ipv4": "010.0.0.1"},
        {"ipv4": None, "ipv6": None},
        {"ipv6": "zz::1"},
        {"mac": "00:11:22:33:44"},
        {"gateway": "fe80::1"},
        {"mtu": 10},
        {"mtu": True},
        {"prefix_len": 33},
        {"device_index": -1},
        {"eni_id": 5},
    ],
)
def test_add_result_rejects_bad_fields(patch: dict[str, Any]) -> None:
    d = p.AddResult(host_veth="veth0", if_name="eth0", ipv4="10.0.0.5").to_dict()
    d.update(patch)
    with pytest.raises(p.ProtocolError) as ei:
        p.AddResult.from_dict(d)
    assert ei.value.code == p.ERR_BAD_REPLY


# --------------------------------------------------------------------------- validators


@pytest.mark.parametrize("cid", ["a", "0123abcd" * 8, "A_b.c-d", "x" * p.MAX_CONTAINER_ID_LEN])
def test_container_id_accepted(cid: str) -> None:
    assert p.validate_container_id(cid) == cid


@pytest.mark.parametrize(
    "cid",
    [
        "",
        "-abc",
        ".abc",
        "_abc",
        "a/b",
        "../../etc",
        "a b",
        "a\x00b",
        "a\nb",
        "é",
        5,
        None,
        "x" * (p.MAX_CONTAINER_ID_LEN + 1),
    ],
)
def test_container_id_rejected(cid: object) -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.validate_container_id(cid)
    assert ei.value.code == p.ERR_BAD_REQUEST and "container_id" in ei.value.message


@pytest.mark.parametrize("name", ["eth0", "net1", "e", "a" * 15, "veth-x_y.z@1"])
def test_if_name_accepted(name: str) -> None:
    assert p.validate_if_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a" * 16, "a/b", "a:b", "a b", "a\tb", "a\x00", "ä", "\x7f", None]
)
def test_if_name_rejected(name: object) -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.validate_if_name(name)
    assert "if_name" in ei.value.message


@pytest.mark.parametrize(
    "path",
    ["/proc/1234/ns/net", "/var/run/netns/cni-1-2", "/run/netns/x", "/var/run/docker/netns/ab"],
)
def test_netns_accepted(path: str) -> None:
    assert p.validate_netns(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "relative/ns",
        "../../etc/passwd",
        "/var/run/netns/../../../etc/shadow",
        "/proc/../etc",
        "/proc/./1/ns/net",
        "/proc//1/ns/net",
        "//proc/1/ns/net",
        "/proc/1/ns/net/",
        "/proc",
        "/proc/",
        "/procfoo/1",
        "/etc/passwd",
        "/tmp/netns",
        "/var/run/netns/a\x00b",
        "/var/run/netns/a\nb",
        "/var/run/netns/" + "a" * p.MAX_NETNS_LEN,
        7,
    ],
)
def test_netns_rejected(path: object) -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.validate_netns(path)
    assert ei.value.code == p.ERR_BAD_REQUEST and "netns" in ei.value.message


def test_netns_allowed_prefixes_are_configurable() -> None:
    assert p.validate_netns("/tmp/ns/x", allowed_prefixes=("/tmp/ns/",)) == "/tmp/ns/x"
    with pytest.raises(p.ProtocolError):
        p.validate_netns("/proc/1/ns/net", allowed_prefixes=("/tmp/ns/",))


@pytest.mark.parametrize("ns", ["", "default", "kube-system", "a" * 63, "a1-b2"])
def test_pod_namespace_accepted(ns: str) -> None:
    assert p.validate_pod_namespace(ns) == ns


@pytest.mark.parametrize("ns", ["Default", "-a", "a-", "a.b", "a_b", "a" * 64, "a/b", "../x"])
def test_pod_namespace_rejected(ns: str) -> None:
    with pytest.raises(p.ProtocolError, match="pod_namespace"):
        p.validate_pod_namespace(ns)


@pytest.mark.parametrize("name", ["", "web-0", "a.b.c", "coredns-5d78c9869d-abcde", "a" * 63])
def test_pod_name_accepted(name: str) -> None:
    assert p.validate_pod_name(name) == name


@pytest.mark.parametrize(
    "name", ["Web", "a..b", ".a", "a.", "a_b", "a" * 64, ".".join(["a" * 60] * 5), "a/../b"]
)
def test_pod_name_rejected(name: str) -> None:
    with pytest.raises(p.ProtocolError, match="pod_name"):
        p.validate_pod_name(name)


# --------------------------------------------------------------------------- hostile frames


def rejected(data: bytes, code: str = p.ERR_BAD_REQUEST) -> str:
    with pytest.raises(p.ProtocolError) as ei:
        p.decode_request(data)
    assert ei.value.code == code, ei.value
    assert ei.value.message
    return ei.value.message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"garbage\n", "not valid JSON"),
        (b"\xff\xfe{}\n", "UTF-8"),
        (b"[1,2]\n", "JSON object"),
        (b'"add"\n', "JSON object"),
        (b"{}\n", "version"),
        (b'{"version": 1}\n', "op"),
        (b'{"version": "1", "op": "add"}\n', "version"),
        (b'{"version": true, "op": "add"}\n', "version"),
        (b'{"version": 1, "op": "rm -rf"}\n', "unknown op"),
        (b'{"version": 1, "version": 1, "op": "add"}\n', "duplicate"),
        (b'{"version": NaN}\n', "JSON"),
        (b"[" * 50000 + b"]" * 5000, "JSON"),
        (frame(good_obj()) + frame(good_obj()), "after the terminating newline"),
        (frame(good_obj(netns="../../etc")), "netns"),
        (frame(good_obj(netns="/var/run/netns/../../etc/passwd")), "netns"),
        (frame(good_obj(container_id="../../etc")), "container_id"),
        (frame(good_obj(container_id="abc\x00def")), "container_id"),
        (frame(good_obj(if_name="eth0\x00")), "if_name"),
        (frame(good_obj(if_name=["eth0"])), "if_name"),
        (frame(good_obj(pod_name={"a": 1})), "pod_name"),
        (frame(good_obj(prev_result=[])), "prev_result"),
        (frame(good_obj(mtu="9001")), "mtu"),
        (frame(good_obj(mtu=10**9)), "mtu"),
        (frame(good_obj(op="gc")), "valid_attachments"),
        (frame(good_obj(op="gc", valid_attachments={})), "valid_attachments"),
        (frame(good_obj(op="gc", valid_attachments=[{"container_id": "a"}])), "if_name"),
        (frame(good_obj(op="gc", valid_attachments=["a"])), "valid_attachments[0]"),
    ],
)
def test_hostile_requests_are_protocol_errors(data: bytes, needle: str) -> None:
    assert needle in rejected(data)


def test_unsupported_version() -> None:
    rejected(frame(good_obj(version=2)), p.ERR_UNSUPPORTED_VERSION)


def test_oversized_request() -> None:
    big = frame(good_obj(prev_result={"x": "a" * p.MAX_MESSAGE_SIZE}))
    rejected(big, p.ERR_TOO_LARGE)
    with pytest.raises(p.ProtocolError) as ei:
        p.encode_request(add_req(prev_result={"x": "a" * p.MAX_MESSAGE_SIZE}))
    assert ei.value.code == p.ERR_TOO_LARGE


def test_every_truncation_is_a_protocol_error() -> None:
    data = p.encode_request(add_req(prev_result={"ips": [{"address": "10.0.0.5/32"}]}))
    for cut in range(len(data) - 1):
        with pytest.raises(p.ProtocolError):
            p.decode_request(data[:cut])


def test_encode_rejects_invalid_request() -> None:
    with pytest.raises(p.ProtocolError, match="netns"):
        p.encode_request(add_req(netns="/etc/passwd"))
    with pytest.raises(p.ProtocolError, match="cannot encode"):
        p.encode_request(add_req(prev_result={"x": object()}))


@given(st.binary(max_size=512))
def test_fuzz_bytes_never_escape_as_other_exceptions(data: bytes) -> None:
    for fn in (p.decode_request, p.decode_reply):
        try:
            fn(data)
        except p.ProtocolError as e:
            assert e.code and e.message


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "version",
        "op",
        "network_name",
        "container_id",
        "if_name",
        "netns",
        "pod_namespace",
        "pod_name",
        "prev_result",
        "valid_attachments",
        "mtu",
    ]
)


@given(st.dictionaries(field_names, json_values | st.sampled_from(["add", "del", "gc", 1])))
def test_fuzz_structured_requests(obj: dict[str, Any]) -> None:
    base = good_obj()
    base.update(obj)
    try:
        data = json.dumps(base).encode()
    except ValueError:
        return
    try:
        req = p.decode_request(data)
    except p.ProtocolError as e:
        assert e.code in (p.ERR_BAD_REQUEST, p.ERR_UNSUPPORTED_VERSION, p.ERR_TOO_LARGE)
        return
    # Anything accepted re-encodes to something that decodes to the same request.
    assert p.decode_request(p.encode_request(req)) == req


@given(st.text(max_size=300))
def test_fuzz_validators(s: str) -> None:
    for fn in (
        p.validate_container_id,
        p.validate_if_name,
        p.validate_netns,
        p.validate_pod_name,
        p.validate_pod_namespace,
        p.validate_network_name,
    ):
        try:
            assert fn(s) == s
        except p.ProtocolError:
            continue
        # An accepted name never carries path tricks or control characters.
        assert "\x00" not in s and "\n" not in s
        if fn is not p.validate_netns:
            assert "/" not in s and s not in (".", "..")
        else:
            assert ".." not in s.split("/")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"nope\n",
        b"{}\n",
        b'{"version": 1}\n',
        b'{"version": 1, "ok": "yes"}\n',
        b'{"version": 1, "ok": true, "result": []}\n',
        b'{"version": 1, "ok": false}\n',
        b'{"version": 1, "ok": false, "error": {"code": 3}}\n',
        b'{"version": 1, "ok": false, "error": {"code": ""}}\n',
    ],
)
def test_bad_replies(data: bytes) -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.decode_reply(data)
    assert ei.value.code == p.ERR_BAD_REPLY


def test_reply_from_newer_daemon_is_unsupported_version() -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.decode_reply(b'{"version": 2, "ok": true, "result": {}}\n')
    assert ei.value.code == p.ERR_UNSUPPORTED_VERSION


# --------------------------------------------------------------------------- socket client


def test_client_against_fake_daemon(fake_ipamd: FakeIpamd) -> None:
    reply = p.request(fake_ipamd.sock_path, add_req(), timeout=5)
    assert reply.ok
    res = p.AddResult.from_dict(reply.result)
    assert res.ipv4 == "10.0.0.5" and res.if_name == "eth0"
    assert fake_ipamd.requests == [add_req()]
    assert fake_ipamd.raw_frames[0] == p.encode_request(add_req())


def test_client_error_reply(fake_ipamd: FakeIpamd) -> None:
    fake_ipamd.replies[p.OP_ADD] = p.Reply.failure(p.ERR_POOL_EMPTY, "0 free")
    reply = p.request(fake_ipamd.sock_path, add_req(), timeout=5)
    assert (reply.ok, reply.error_code, reply.error_message) == (False, "pool_empty", "0 free")


def test_client_daemon_not_running(short_tmp: Path) -> None:
    with pytest.raises(p.ProtocolError) as ei:
        p.request(str(short_tmp / "missing.sock"), add_req(), timeout=5)
    assert ei.value.code == p.ERR_UNAVAILABLE
    stale = short_tmp / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on: ECONNREFUSED
    with pytest.raises(p.ProtocolError) as ei:
        p.request(str(stale), add_req(), timeout=5)
    assert ei.value.code == p.ERR_UNAVAILABLE
    regular = short_tmp / "file"
    regular.write_text("")
    with pytest.raises(p.ProtocolError) as ei:
        p.request(str(regular), add_req(), timeout=5)
    assert ei.value.code == p.ERR_UNAVAILABLE


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (b"", p.ERR_CONNECTION_LOST),  # closed before a complete reply: a crash mid-request
        (b'{"version": 1, "ok": true', p.ERR_CONNECTION_LOST),
        (b"not json\n", p.ERR_BAD_REPLY),
        (b"x" * (p.MAX_MESSAGE_SIZE + 10), p.ERR_TOO_LARGE),
    ],
)
def test_client_bad_replies(fake_ipamd: FakeIpamd, answer: bytes, code: str) -> None:
    fake_ipamd.replies[p.OP_ADD] = answer
    with pytest.raises(p.ProtocolError) as ei:
        p.request(fake_ipamd.sock_path, add_req(), timeout=5)
    assert ei.value.code in (code, p.ERR_BAD_REPLY if code == p.ERR_TOO_LARGE else code)


def test_client_timeout(fake_ipamd: FakeIpamd) -> None:
    release = threading.Event()

    def hang(req: p.Request) -> bytes:
        release.wait(10)
        return b""

    fake_ipamd.replies[p.OP_ADD] = hang
    try:
        with pytest.raises(p.ProtocolError) as ei:
            p.request(fake_ipamd.sock_path, add_req(), timeout=0.2)
        assert ei.value.code == p.ERR_TIMEOUT
    finally:
        release.set()


def test_server_side_recv_frame_limits(fake_ipamd: FakeIpamd) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(fake_ipamd.sock_path)
        s.sendall(b"x" * (p.MAX_MESSAGE_SIZE + 1))
        reply = p.decode_reply(p.recv_frame(s))
    assert reply.error_code == p.ERR_TOO_LARGE
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(fake_ipamd.sock_path)
        s.sendall(b'{"version": 1, "op": "add"}\n')
        reply = p.decode_reply(p.recv_frame(s))
    assert reply.error_code == p.ERR_BAD_REQUEST and "network_name" in reply.error_message


# --------------------------------------------------------------------------- pending DELs


def del_req(cid: str = "abc123", if_name: str = "eth0") -> p.Request:
    return p.Request(
        p.OP_DEL,
        "aws-cni",
        cid,
        if_name,
        "/proc/1/ns/net",
        "default",
        "web-0",
        prev_result={"interfaces": [{"name": "eni1"}]},
    )


def test_pending_del_round_trip(tmp_path: Path) -> None:
    d = str(tmp_path / "pending")
    a, b = del_req("aaa"), del_req("bbb", "net1")
    pa = pd.write_pending_del(d, a)
    pd.write_pending_del(d, b)
    pd.write_pending_del(d, a)  # rewriting the same DEL keeps one record
    assert Path(pa).parent == Path(d)
    assert sorted(os.listdir(d)) == sorted(
        [pd.pending_del_filename("aaa", "eth0"), pd.pending_del_filename("bbb", "net1")]
    )
    assert oct(os.stat(d).st_mode & 0o777) == oct(0o700)
    got = pd.read_pending_dels(d)
    assert sorted(r.container_id for r in got) == ["aaa", "bbb"]
    assert got[0].prev_result == {"interfaces": [{"name": "eni1"}]}
    assert pd.remove_pending_del(d, a) is True
    assert pd.remove_pending_del(d, a) is False
    assert pd.read_pending_dels(d) == [b]


def test_pending_del_missing_dir(tmp_path: Path) -> None:
    assert pd.read_pending_dels(str(tmp_path / "nope")) == []


def test_pending_del_filename_comes_from_validated_names_only() -> None:
    name = pd.pending_del_filename("abc", "eth0")
    assert name.startswith("del-") and name.endswith(".json") and "/" not in name
    assert name != pd.pending_del_filename("abc", "eth1")
    for cid, ifn in [("../../etc", "eth0"), ("abc", "../x"), ("a\x00", "eth0")]:
        with pytest.raises(p.ProtocolError):
            pd.pending_del_filename(cid, ifn)


def test_pending_del_only_for_del() -> None:
    with pytest.raises(p.ProtocolError, match="del"):
        pd.write_pending_del("/nonexistent", add_req())


def test_pending_del_unwritable_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(p.ProtocolError) as ei:
        pd.write_pending_del(str(blocker / "sub"), del_req())
    assert ei.value.code == p.ERR_IO


def test_read_pending_dels_skips_hostile_files(tmp_path: Path) -> None:
    d = tmp_path / "pending"
    good = del_req("good")
    pd.write_pending_del(str(d), good)
    (d / "del-garbage.json").write_bytes(b"\x00\xffnot json")
    (d / "del-huge.json").write_bytes(b"x" * (p.MAX_MESSAGE_SIZE + 5))
    # a valid request stored under a name that does not match it
    (d / "del-mismatch.json").write_bytes(p.encode_request(del_req("other")))
    # an ADD stored under the right name
    add = add_req(container_id="addy")
    (d / pd.pending_del_filename("addy", "eth0")).write_bytes(p.encode_request(add))
    # a symlink to a real request
    os.symlink(d / pd.pending_del_filename("good", "eth0"), d / "del-link.json")
    (d / "del-dir.json").mkdir()
    (d / ".tmp-1-del-x.json").write_bytes(p.encode_request(del_req("tmp")))
    (d / "unrelated.txt").write_text("hi")
    errors: list[tuple[str, p.ProtocolError]] = []
    got = pd.read_pending_dels(str(d), on_error=lambda path, e: errors.append((path, e)))
    assert got == [good]
    assert sorted(os.path.basename(path) for path, _ in errors) == sorted(
        [
            "del-garbage.json",
            "del-huge.json",
            "del-mismatch.json",
            pd.pending_del_filename("addy", "eth0"),
            "del-link.json",
            "del-dir.json",
        ]
    )
    assert all(isinstance(e, p.ProtocolError) and e.message for _, e in errors)


async def test_read_request_async(short_tmp: Path) -> None:
    import asyncio

    outcomes: list[p.Request | p.ProtocolError] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await p.read_request_async(reader)
            outcomes.append(req)
            writer.write(p.encode_reply(p.Reply.success()))
        except p.ProtocolError as e:
            outcomes.append(e)
            writer.write(p.error_reply(e.code, e.message))
        await writer.drain()
        writer.close()

    path = str(short_tmp / "a.sock")
    server = await asyncio.start_unix_server(handle, path, limit=p.MAX_MESSAGE_SIZE)
    async with server:
        for payload in [
            p.encode_request(add_req()),
            b"x" * (p.MAX_MESSAGE_SIZE + 1),
            b'{"version": 1',
            b"",
            b"{}\n",
        ]:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(payload)
            writer.write_eof()
            await reader.read()
            writer.close()
    assert outcomes[0] == add_req()
    codes = [o.code for o in outcomes[1:] if isinstance(o, p.ProtocolError)]
    assert codes == [p.ERR_TOO_LARGE, p.ERR_BAD_REQUEST, p.ERR_BAD_REQUEST, p.ERR_BAD_REQUEST]
