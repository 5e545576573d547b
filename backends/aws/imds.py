"""IMDSv2 client (MetadataPort) over urllib: a session token first, then token-bearing GETs.

Every failure (connection refused, timeout, HTTP error, a malformed answer) becomes
``CloudError(OTHER)``. A 401 (token expired or revoked) is retried once with a new token.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from ipamcore.errors import CloudError, FailureKind
from ipamcore.model import InstanceIdentity, ObservedEni

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MACS_PATH = "network/interfaces/macs/"


class _NotFound(Exception):
    """A 404: the key is absent (e.g. ``ipv4-prefix`` of an ENI without prefixes)."""


class ImdsClient:
    """MetadataPort over IMDSv2 at ``endpoint``.

    The token is cached and renewed ``refresh_margin_s`` before its ``token_ttl_s`` runs out
    (``clock`` is injectable). ``timeout_s`` bounds every HTTP request.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout_s: float = 2.0,
        token_ttl_s: int = 21600,
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._timeout_s = timeout_s
        self._token_ttl_s = token_ttl_s
        self._refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._token = ""
        self._token_expiry = 0.0
        self._lock = threading.Lock()

    # -- HTTP -------------------------------------------------------------------------------

    def _open(self, request: urllib.request.Request) -> str:
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body: bytes = response.read()
                return body.decode()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise _NotFound(request.full_url) from err
            raise CloudError(
                FailureKind.OTHER, f"IMDS {request.full_url}: HTTP {err.code}", f"HTTP{err.code}"
            ) from err
        except (OSError, ValueError) as err:  # URLError, timeouts, resets, bad URLs
            raise CloudError(
                FailureKind.OTHER, f"IMDS {request.full_url}: {err}", type(err).__name__
            ) from err

    def _get_token(self, force: bool = False) -> str:
        with self._lock:
            if force or not self._token or self._clock() >= self._token_expiry:
                request = urllib.request.Request(
                    self.endpoint + TOKEN_PATH,
                    method="PUT",
                    headers={TOKEN_TTL_HEADER: str(self._token_ttl_s)},
                )
                try:
                    self._token = self._open(request).strip()
                except _NotFound as err:
                    raise CloudError(FailureKind.OTHER, "IMDS has no token API", "HTTP404") from err
                self._token_expiry = self._clock() + self._token_ttl_s - self._refresh_margin_s
            return self._token

    def _get(self, path: str) -> str:
        """The text at ``/latest/meta-data/<path>``; raises _NotFound on 404."""
        url = f"{self.endpoint}/latest/meta-data/{path}"
        for attempt in range(2):
            request = urllib.request.Request(
                url, headers={TOKEN_HEADER: self._get_token(force=attempt > 0)}
            )
            try:
                return self._open(request)
            except CloudError as err:
                if err.code != "HTTP401" or attempt > 0:
                    raise
        raise AssertionError("unreachable")

    def _get_required(self, path: str) -> str:
        try:
            return self._get(path).strip()
        except _NotFound as err:
            raise CloudError(FailureKind.OTHER, f"IMDS: no {path}", "HTTP404") from err

    def _get_lines(self, path: str) -> tuple[str, ...]:
        """A newline-separated list; empty when the key is absent."""
        try:
            text = self._get(path)
        except _NotFound:
            return ()
        return tuple(line.strip() for line in text.splitlines() if line.strip())

    # -- MetadataPort -----------------------------------------------------------------------

    def identity(self) -> InstanceIdentity:
        zone = self._get_required("placement/availability-zone")
        mac = self._get_required("mac")
        return InstanceIdentity(
            instance_id=self._get_required("instance-id"),
            instance_type=self._get_required("instance-type"),
            availability_zone=zone,
            primary_mac=mac,
            vpc_cidrs=self._get_lines(f"{MACS_PATH}{mac}/vpc-ipv4-cidr-blocks"),
            region=zone[:-1] if zone and zone[-1].isalpha() else zone,
            subnet_ipv6_cidrs=self._get_lines(f"{MACS_PATH}{mac}/subnet-ipv6-cidr-blocks"),
            ipv6_address=next(iter(self._get_lines(f"{MACS_PATH}{mac}/ipv6s")), ""),
        )

    def macs(self) -> list[str]:
        return [line.rstrip("/") for line in self._get_lines(MACS_PATH)]

    def eni(self, mac: str) -> ObservedEni:
        """The ENI with ``mac`` as IMDS sees it (no tags: IMDS does not serve them)."""
        base = f"{MACS_PATH}{mac}/"
        try:
            device = int(self._get_required(base + "device-number"))
            card_lines = self._get_lines(base + "network-card")
            card = int(card_lines[0]) if card_lines else 0
        except ValueError as err:
            raise CloudError(FailureKind.OTHER, f"IMDS: bad number for {mac}: {err}") from err
        local = self._get_lines(base + "local-ipv4s")
        return ObservedEni(
            eni_id=self._get_required(base + "interface-id"),
            mac=mac,
            device_index=device,
            subnet_id=self._get_required(base + "subnet-id"),
            subnet_cidr=self._get_required(base + "subnet-ipv4-cidr-block"),
            primary_ip=local[0] if local else "",
            network_card=card,
            ipv4_addresses=local[1:],
            ipv4_prefixes=self._get_lines(base + "ipv4-prefix"),
            ipv6_prefixes=self._get_lines(base + "ipv6-prefix"),
            is_primary=device == 0 and card == 0,
            security_groups=self._get_lines(base + "security-group-ids"),
        )

    def enis(self) -> list[ObservedEni]:
        enis = [self.eni(mac) for mac in self.macs()]
        return sorted(enis, key=lambda e: (e.network_card, e.device_index))
