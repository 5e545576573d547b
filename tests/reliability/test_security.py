"""Security: the socket is private (mode 0600, the daemon's owner, and a peer-credential
check behind that), introspection and metrics listen only where configured, introspection
shows no container ids or secrets, and credentials never reach the logs."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters import protocol as p
from adapters.introspection import HttpServer, make_metrics_app
from adapters.ipamd.logs import make_logger, secret_values
from adapters.ipamd.settings import SettingsError, load_settings
from adapters.redact import REDACTED, redact_setting, redact_url
from tests.adapters.harness import World, add_request, base_env, call

NOBODY = 65534
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9SECRETKEY"
SESSION_TOKEN = "FQoGZXIvYXdzEDoaDzzzSESSIONTOKENzzzIwiQ1iA"
ACCESS_KEY_ID = "AKIAZZZZFUZZTESTKEY1"
CREDENTIAL_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps({"connect_errno": e.errno}))
    sys.exit(0)
s.sendall(b'{"version":1,"op":"status"}\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"reply": data.decode()}))
"""


@pytest.fixture
def world() -> Iterator[World]:
    w = World.create()
    yield w
    w.cleanup()


def client_python() -> str:
    """A system interpreter another user may execute (the venv's may live under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.stat(os.path.realpath(candidate)).st_mode & 0o001:
            return candidate
    pytest.skip("no interpreter executable by another user")


async def as_nobody(sock: str) -> dict[str, Any]:
    """STATUS over ``sock`` from a process running as uid/gid 65534 (no other groups)."""
    proc = await asyncio.create_subprocess_exec(
        client_python(), "-I", "-c", CLIENT, sock,
        user=NOBODY, group=NOBODY, extra_groups=[], cwd="/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_socket_mode_and_owner(world: World) -> None:
    d = world.daemon()
    await d.start()
    try:
        st = os.stat(world.socket_path)
        assert st.st_mode & 0o777 == 0o600
        assert st.st_uid == os.geteuid()
        assert (await call(world.socket_path, p.Request(p.OP_STATUS))).ok  # own user: allowed
    finally:
        await d.stop()


@root_only
async def test_another_user_is_refused(world: World) -> None:
    os.chmod(world.state_dir, 0o755)  # the directory is not what stops it: the socket is
    d = world.daemon()
    await d.start()
    try:
        assert await as_nobody(world.socket_path) == {"connect_errno": 13}  # EACCES
        # Even with the socket opened to everyone, the peer-credential check refuses.
        os.chmod(world.socket_path, 0o666)
        reply = p.decode_reply((await as_nobody(world.socket_path))["reply"].encode())
        assert not reply.ok and reply.error_code == p.ERR_FORBIDDEN
        assert reply.error_message == f"uid {NOBODY} may not use this socket"
        assert d.server.rejected >= 1
    finally:
        await d.stop()


@root_only
async def test_allow_listed_uid_is_served(world: World) -> None:
    os.chmod(world.state_dir, 0o755)
    d = world.daemon(IPAMD_SOCKET_ALLOWED_UIDS=str(NOBODY))
    await d.start()
    try:
        os.chmod(world.socket_path, 0o666)  # the operator opened it for that user
        reply = p.decode_reply((await as_nobody(world.socket_path))["reply"].encode())
        assert reply.ok
    finally:
        await d.stop()


@pytest.mark.parametrize("raw", ["abc", "-1", "1,x", "99999999999", "\u0661"])
def test_allowed_uids_setting_is_validated(raw: str) -> None:
    with pytest.raises(SettingsError, match="IPAMD_SOCKET_ALLOWED_UIDS"):
        load_settings({"IPAMD_SOCKET_ALLOWED_UIDS": raw})
    settings = load_settings({"IPAMD_SOCKET_ALLOWED_UIDS": "1001, 1000,1001"})
    assert settings.socket_allowed_uids == (1000, 1001)


# --------------------------------------------------------------------------- HTTP binds


def listening(port: int) -> set[tuple[str, str]]:
    """(file, hex local address) of every LISTEN socket on ``port`` (/proc/net/tcp*)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":
                found.add((name, addr))
    return found


async def test_introspection_and_metrics_listen_only_where_configured(world: World) -> None:
    d = world.daemon()  # both at 127.0.0.1:0 (base_env)
    await d.start()
    try:
        assert d.introspection is not None and d.metrics_server is not None
        for server in (d.introspection, d.metrics_server):
            assert listening(server.port) == {("tcp", "0100007F")}  # 127.0.0.1 only
    finally:
        await d.stop()


async def test_metrics_listen_on_the_configured_ipv6_loopback_only() -> None:
    server = HttpServer(make_metrics_app(lambda: (b"", "text/plain")))
    port = await server.start("::1", 0)
    try:
        assert listening(port) == {("tcp6", "00000000000000000000000001000000")}
    finally:
        await server.stop()


@pytest.mark.parametrize("address", ["0.0.0.0:61679", ":61679", "10.1.2.3:61679", "[::]:1"])
def test_introspection_refuses_non_loopback_unless_allowed(address: str) -> None:
    with pytest.raises(SettingsError, match="INTROSPECTION_BIND_ADDRESS"):
        load_settings({"INTROSPECTION_BIND_ADDRESS": address})
    allowed = load_settings(
        {"INTROSPECTION_BIND_ADDRESS": address, "INTROSPECTION_ALLOW_NON_LOOPBACK": "true"}
    )
    assert not allowed.introspection.is_loopback


async def test_http_server_refuses_non_loopback_when_not_allowed() -> None:
    server = HttpServer(make_metrics_app(lambda: (b"", "text/plain")))
    with pytest.raises(ValueError, match="non-loopback"):
        await server.start("0.0.0.0", 0, allow_non_loopback=False)


# --------------------------------------------------------------------------- what is shown


async def fetch(port: int, path: str) -> str:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_introspection_shows_no_container_ids_or_secrets(world: World) -> None:
    env = {
        **CREDENTIAL_ENV,
        "AWS_EC2_ENDPOINT": "https://svc-user:hunter2pass@ec2.example.com:8443/path",
        "IPAMD_SOCKET_TOKEN": "notreallyused",
    }
    d = world.daemon(**env)
    await d.start()
    cids = [f"feedfacecafe{n:04d}" for n in range(3)]
    try:
        for n, cid in enumerate(cids):
            reply = await call(world.socket_path, add_request(n, container_id=cid))
            assert reply.ok, reply
        assert d.introspection is not None and d.metrics_server is not None
        port = d.introspection.port
        paths = ("/v1/enis", "/v1/pods", "/stats", "/v1/ipamd-env-settings",
                 "/v1/networkutils-env-settings")  # fmt: skip
        texts = [await fetch(port, path) for path in paths]
        texts.append(await fetch(d.metrics_server.port, "/metrics"))
        shown = "\n".join(texts)
        assert '"Name": "pod-1"' in shown  # the pods are there, only their ids are not
        for secret in (*cids, SECRET_KEY, SESSION_TOKEN, ACCESS_KEY_ID, "hunter2pass"):
            assert secret not in shown, secret
        settings = json.loads(texts[3])
        assert settings["AWS_EC2_ENDPOINT"] == f"https://{REDACTED}@ec2.example.com:8443/path"
    finally:
        await d.stop()


def test_redaction_rules() -> None:
    assert redact_setting("AWS_SECRET_ACCESS_KEY", "x") == REDACTED
    assert redact_setting("some_password", "x") == REDACTED
    assert redact_setting("WARM_IP_TARGET", "5") == "5"
    assert redact_url("http://169.254.169.254") == "http://169.254.169.254"
    assert redact_url("http://a:b@h/x@y") == f"http://{REDACTED}@h/x@y"
    assert redact_url("not a url @ all") == "not a url @ all"
    settings = load_settings({"AWS_EC2_ENDPOINT": "https://u:pw@ec2.local"})
    assert "pw" not in json.dumps(settings.public())


def test_logger_blanks_known_secrets_anywhere() -> None:
    stream = io.StringIO()
    log = make_logger("DEBUG", json=True, stream=stream, secrets=secret_values(CREDENTIAL_ENV))
    log.error("call failed", error=f"token {SESSION_TOKEN} key={SECRET_KEY} id={ACCESS_KEY_ID}")
    log.debug("x", aws_session_token="short")
    text = stream.getvalue()
    assert SECRET_KEY not in text and SESSION_TOKEN not in text
    assert text.count(REDACTED) == 4
    assert ACCESS_KEY_ID not in text
    assert secret_values({"AWS_SECRET_ACCESS_KEY": "abc"}) == ()  # too short to be real


# --------------------------------------------------------------------------- logs, end to end


class _StubAws(http.server.BaseHTTPRequestHandler):
    """IMDSv2 for one m5.large with one ENI, and an EC2 that fails every call with an error
    message echoing the request's headers and the secret key (the worst an endpoint can do)."""

    MAC = "02:00:00:00:00:01"
    META = {
        "placement/availability-zone": "us-west-2a", "mac": MAC, "instance-id": "i-0fuzz",
        "instance-type": "m5.large", "network/interfaces/macs/": MAC + "/",
        f"network/interfaces/macs/{MAC}/vpc-ipv4-cidr-blocks": "10.0.0.0/16",
        f"network/interfaces/macs/{MAC}/device-number": "0",
        f"network/interfaces/macs/{MAC}/interface-id": "eni-0fuzz",
        f"network/interfaces/macs/{MAC}/subnet-id": "subnet-0fuzz",
        f"network/interfaces/macs/{MAC}/subnet-ipv4-cidr-block": "10.0.0.0/20",
        f"network/interfaces/macs/{MAC}/local-ipv4s": "10.0.0.10",
        f"network/interfaces/macs/{MAC}/security-group-ids": "sg-0fuzz",
    }  # fmt: skip

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self._send(200, "stub-imds-token")

    def do_GET(self) -> None:
        path = self.path.removeprefix("/latest/meta-data/")
        if path in self.META:
            self._send(200, self.META[path])
        else:
            self._send(404, "")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        echoed = "; ".join(f"{k}={v}" for k, v in self.headers.items())
        message = f"denied. request headers: {echoed}; your key {SECRET_KEY}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
            f"<Code>UnauthorizedOperation</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>fuzz</RequestID></Response>"
        )
        self._send(403, body, "text/xml")


def test_daemon_logs_never_contain_credentials(tmp_path: Path) -> None:
    """vpc-ipamd at DEBUG with AWS credentials in its environment, against an EC2 endpoint
    whose errors echo the credentials back: no credential reaches the log."""
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubAws)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    state = tempfile_dir()
    env = {
        **base_env(state), **CREDENTIAL_ENV, "IPAMD_CLOUD": "aws", "AWS_REGION": "us-west-2",
        "AWS_EC2_ENDPOINT": url, "AWS_EC2_METADATA_SERVICE_ENDPOINT": url,
        "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG", "IPAMD_LOG_FORMAT": "json",
        "PATH": os.environ.get("PATH", ""), "AWS_MAX_ATTEMPTS": "1",
    }  # fmt: skip
    log_path = tmp_path / "ipamd.log"
    try:
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "adapters.ipamd.main"], env=env,
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and proc.poll() is None:
                    if "denied. request headers" in log_path.read_text(errors="replace"):
                        break
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        stub.shutdown()
        stub.server_close()
        shutil.rmtree(state, ignore_errors=True)
    text = log_path.read_text(errors="replace")
    assert "denied. request headers" in text, text[-3000:]  # the EC2 errors were logged
    assert REDACTED in text
    assert '"log_level": "DEBUG"' in text  # the daemon ran at debug level
    assert "X-Amz-Security-Token=" in text and "Credential=" in text  # echoed, then blanked
    for secret in (SECRET_KEY, SESSION_TOKEN, ACCESS_KEY_ID):
        assert secret not in text


def tempfile_dir() -> str:
    return tempfile.mkdtemp(prefix="ipamd-sec-", dir="/tmp")  # short: AF_UNIX path limit


def test_deeply_nested_tags_are_a_clear_settings_error() -> None:
    with pytest.raises(SettingsError, match="ADDITIONAL_ENI_TAGS") as info:
        load_settings({"ADDITIONAL_ENI_TAGS": "[" * 100_000})
    assert len(str(info.value)) < 300
