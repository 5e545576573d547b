"""Start the fake API server as a process, with a self-signed certificate and a kubeconfig.

``with FakeApiServerProcess(tmpdir) as rig:`` gives ``rig.url``, ``rig.kubeconfig`` (a file
for kubectl and the backend), ``rig.token``, ``rig.ca_path``, plain helpers to seed objects
(``rig.api("POST", path, body)``) and the admin API (``rig.admin("POST", "/faults", {...})``,
``rig.requests()``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A CA-less self-signed server certificate for ``host`` (it is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-apiserver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def write_kubeconfig(path: Path, url: str, ca_path: Path, token: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "fake", "cluster": {"server": url, "certificate-authority": str(ca_path)}}
        ],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(doc))  # JSON is YAML


class FakeApiServerProcess:
    def __init__(self, directory: Path, bookmark_interval: float = 1.0, history: int = 1000):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        self.cert_path, self.key_path = self_signed(self.dir)
        self.ca_path = self.cert_path
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.kubeconfig = self.dir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, self.url, self.ca_path, self.token)
        self.args = [
            sys.executable, "-m", "tests.rigs.fake_apiserver",
            "--port", str(self.port), "--admin-port", str(self.admin_port),
            "--cert", str(self.cert_path), "--key", str(self.key_path),
            "--token", self.token,
            "--bookmark-interval", str(bookmark_interval), "--history", str(history),
        ]  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self._ssl = ssl.create_default_context(cafile=str(self.ca_path))

    def __enter__(self) -> FakeApiServerProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until READY or exit
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"fake API server did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    # ------------------------------------------------------------ helpers

    def api(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"null")
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def requests(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/requests")["requests"])

    def reset(self) -> None:
        self.admin("POST", "/reset")
