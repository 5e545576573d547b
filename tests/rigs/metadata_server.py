"""A small IMDSv2 server serving one moto-backed instance's metadata, read live from EC2.

The daemon's end-to-end tests and the demo run against moto_server, which has no instance
metadata service of its own; this server fills the gap with the paths the
:class:`backends.aws.imds.ImdsClient` reads (plus the ``macs/`` listing and ``network-card``).
A session token is required: ``PUT /latest/api/token`` with a TTL header, then GETs with the
``X-aws-ec2-metadata-token`` header; a GET without a valid token gets 401.

CLI: ``python -m tests.rigs.metadata_server --ec2-endpoint http://127.0.0.1:5000
--instance-id i-0123 --port 8181``. In-process: ``with MetadataServer(client, iid) as srv:``
then ``ImdsClient(srv.url)``.
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3  # type: ignore[import-untyped]

from backends.aws.imds import MACS_PATH, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER

META_PREFIX = "/latest/meta-data/"
MAX_TOKEN_TTL_S = 21600


def build_view(client: Any, instance_id: str) -> dict[str, str]:
    """Every served meta-data path (without the prefix) and its text, from EC2 describes."""
    reservations = client.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instance = reservations[0]["Instances"][0]
    flt = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
    enis = client.describe_network_interfaces(Filters=flt)["NetworkInterfaces"]
    subnet_ids = sorted({e["SubnetId"] for e in enis})
    subnets = client.describe_subnets(SubnetIds=subnet_ids)["Subnets"] if subnet_ids else []
    cidr_of = {s["SubnetId"]: s["CidrBlock"] for s in subnets}
    v6_of = {
        s["SubnetId"]: [a["Ipv6CidrBlock"] for a in s.get("Ipv6CidrBlockAssociationSet", ())]
        for s in subnets
    }
    vpc_cidrs: dict[str, list[str]] = {}
    for vpc in client.describe_vpcs(VpcIds=sorted({e["VpcId"] for e in enis}))["Vpcs"]:
        assocs = vpc.get("CidrBlockAssociationSet") or [{"CidrBlock": vpc["CidrBlock"]}]
        vpc_cidrs[vpc["VpcId"]] = [
            a["CidrBlock"]
            for a in assocs
            if a.get("CidrBlockState", {}).get("State", "associated") == "associated"
        ]
    view = {
        "instance-id": instance_id,
        "instance-type": instance["InstanceType"],
        "placement/availability-zone": instance["Placement"]["AvailabilityZone"],
    }
    macs: list[str] = []
    for eni in sorted(enis, key=_card_and_device):
        mac = eni["MacAddress"]
        macs.append(mac)
        card, device = _card_and_device(eni)
        if (card, device) == (0, 0):
            view["mac"] = mac
        addresses = sorted(eni["PrivateIpAddresses"], key=lambda a: not a.get("Primary"))
        base = f"{MACS_PATH}{mac}/"
        view[base + "interface-id"] = eni["NetworkInterfaceId"]
        view[base + "device-number"] = str(device)
        view[base + "network-card"] = str(card)
        view[base + "subnet-id"] = eni["SubnetId"]
        view[base + "subnet-ipv4-cidr-block"] = cidr_of.get(eni["SubnetId"], "")
        view[base + "local-ipv4s"] = "\n".join(a["PrivateIpAddress"] for a in addresses)
        view[base + "security-group-ids"] = "\n".join(g["GroupId"] for g in eni["Groups"])
        view[base + "vpc-ipv4-cidr-blocks"] = "\n".join(vpc_cidrs.get(eni["VpcId"], []))
        prefixes = [p["Ipv4Prefix"] for p in eni.get("Ipv4Prefixes", ())]
        if prefixes:  # real IMDS answers 404 for an ENI without prefixes
            view[base + "ipv4-prefix"] = "\n".join(prefixes)
        # IPv6 (404 when absent, like the rest): the subnet's /64, the ENI's addresses and
        # its delegated /80 prefixes
        if v6_of.get(eni["SubnetId"]):
            view[base + "subnet-ipv6-cidr-blocks"] = "\n".join(v6_of[eni["SubnetId"]])
        v6_addresses = [a["Ipv6Address"] for a in eni.get("Ipv6Addresses", ())]
        if v6_addresses:
            view[base + "ipv6s"] = "\n".join(v6_addresses)
        v6_prefixes = [p["Ipv6Prefix"] for p in eni.get("Ipv6Prefixes", ())]
        if v6_prefixes:
            view[base + "ipv6-prefix"] = "\n".join(v6_prefixes)
    view[MACS_PATH] = "\n".join(f"{m}/" for m in macs)
    return view


def _card_and_device(eni: dict[str, Any]) -> tuple[int, int]:
    att = eni.get("Attachment") or {}
    return int(att.get("NetworkCardIndex", 0) or 0), int(att.get("DeviceIndex", 0))


class _Handler(BaseHTTPRequestHandler):
    server: _ImdsHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _reply(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        if self.path != TOKEN_PATH:
            self._reply(404, "Not Found")
            return
        try:
            ttl = int(self.headers.get(TOKEN_TTL_HEADER, ""))
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL_S:
            self._reply(400, "Bad Request: token TTL missing or out of range")
            return
        self._reply(200, self.server.tokens.issue(ttl))

    def do_GET(self) -> None:
        if not self.server.tokens.valid(self.headers.get(TOKEN_HEADER, "")):
            self._reply(401, "Unauthorized")
            return
        if not self.path.startswith(META_PREFIX):
            self._reply(404, "Not Found")
            return
        key = self.path[len(META_PREFIX) :]
        try:
            view = self.server.view()
        except Exception as exc:  # EC2 unreachable or instance gone: IMDS itself is broken
            self._reply(500, f"metadata unavailable: {exc}")
            return
        text = view.get(key, view.get(key + "/"))
        if text is None:
            self._reply(404, "Not Found")
        else:
            self._reply(200, text)


class _Tokens:
    """Issued session tokens and their expiry on ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl_s: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expiry[token] = self._clock() + ttl_s
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            return self._expiry.get(token, float("-inf")) > self._clock()


class _ImdsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    tokens: _Tokens
    view: Callable[[], dict[str, str]]


class MetadataServer:
    """IMDSv2 for ``instance_id`` over ``client`` (a boto3 EC2 client, e.g. to moto).

    ``port=0`` picks a free port; :attr:`url` tells it after :meth:`start`. The view is
    rebuilt from EC2 when older than ``cache_ttl_s`` (0: on every request, so attaches show
    up at once). ``clock`` drives token expiry and the cache.
    """

    def __init__(
        self,
        client: Any,
        instance_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_ttl_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self._address = (host, port)
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cached: tuple[float, dict[str, str]] | None = None
        self._cache_lock = threading.Lock()
        self._httpd: _ImdsHttpServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def for_endpoint(
        cls, ec2_endpoint: str, instance_id: str, region: str = "us-west-2", **kwargs: Any
    ) -> MetadataServer:
        """A server reading from a moto_server EC2 endpoint (moto accepts any credentials)."""
        client = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        ).client("ec2", endpoint_url=ec2_endpoint)
        return cls(client, instance_id, **kwargs)

    def view(self) -> dict[str, str]:
        with self._cache_lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._cache_ttl_s:
                self._cached = (now, build_view(self.client, self.instance_id))
            return self._cached[1]

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("metadata server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _bind(self) -> _ImdsHttpServer:
        httpd = _ImdsHttpServer(self._address, _Handler)
        httpd.tokens = _Tokens(self._clock)
        httpd.view = self.view
        self._httpd = httpd
        return httpd

    def start(self) -> str:
        """Serve in a daemon thread; returns the base URL."""
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="imds-server", daemon=True
        )  # a short poll interval: stop() returns quickly
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI)."""
        httpd = self._bind()
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()

    def __enter__(self) -> MetadataServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="IMDSv2 for one moto-backed EC2 instance")
    parser.add_argument("--ec2-endpoint", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--region", default="us-west-2")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    args = parser.parse_args(argv)
    server = MetadataServer.for_endpoint(
        args.ec2_endpoint, args.instance_id, args.region, host=args.host, port=args.port
    )
    print(f"serving IMDSv2 for {args.instance_id} on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
