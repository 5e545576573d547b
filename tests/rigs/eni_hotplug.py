"""The hypervisor's part of a local node: ENIs attached to the instance appear as links.

On EC2, attaching an ENI hot-plugs a network device carrying the ENI's MAC address, and the
daemon finds that device by MAC. moto_server has no hypervisor, so a local node puts this
proxy between the daemon and moto: every EC2 request goes through unchanged, except an attach
at a device index already in use, which is refused as EC2 refuses it (moto accepts it), and

* after a successful ``AttachNetworkInterface`` for the node's instance, a link with the
  ENI's MAC is created in the node network namespace (named ``eth<device index>``), before
  the answer goes back, so the daemon sees the device as soon as it learns of the attachment;
* after a successful ``DetachNetworkInterface`` or ``DeleteNetworkInterface`` of such an ENI,
  its link is deleted.

The link is one end of a veth pair whose other end (``uplink<device index>``, up, without
an address) stays in the node namespace too, as the node's ``eth0`` is made: it gives the
device a carrier.

Network cards: an attach with ``NetworkCardIndex`` N > 0 plugs ``nc<N>d<device index>``
(peer ``up<N>d<device>``); device indexes count per card, as on EC2. moto ignores the card
(it reports every attachment on card 0), so this hypervisor writes the card it plugged back
into moto's answers (``networkCardIndex`` of that attachment), in the attach answer and in
every describe that goes through it; the metadata server reads EC2 through it too.

Pods on a secondary ENI reach each other and the host through the node's
main table (the "to <pod>" rules), not through the ENI's device, so nothing has to be bridged
behind it. The daemon is not told anything: it must find the device by MAC, as on EC2.

Faults: :meth:`EniHotplug.fail` answers the EC2 actions matching a pattern with an EC2 error
(``RequestLimitExceeded`` for throttling, ``InsufficientFreeAddressesInSubnet`` for a full
subnet, ...) instead of forwarding them, until :meth:`EniHotplug.clear_faults`; every refused
call is counted in :attr:`EniHotplug.refused`.
"""

from __future__ import annotations

import html
import http.client
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
_ATTACHMENT_ID = re.compile(rb"<attachmentId>([^<]+)</attachmentId>")
_CARD_OF = rb"(<attachmentId>%s</attachmentId>(?:(?!</attachment>).)*?<networkCardIndex>)0(<)"


def _ec2_error(message: str, code: str = "InvalidParameterValue") -> bytes:
    """An error answer in EC2's XML, as botocore parses it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{html.escape(message)}</Message>"
        "</Error></Errors><RequestID>hotplug</RequestID></Response>"
    ).encode()


@attrs.frozen
class HotPlugged:
    """One ENI link the hypervisor made."""

    eni_id: str
    mac: str
    link: str
    device_index: int
    network_card: int = 0


def ip_link_runner(netns: str) -> Callable[[list[str]], None]:
    """Runs ``ip -n <netns> link ...`` commands (the real hot-plug)."""

    def run(args: list[str]) -> None:
        done = subprocess.run(["ip", "-n", netns, "link", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"ip -n {netns} link {' '.join(args)}: {done.stderr.strip()}")

    return run


class EniHotplug:
    """The proxy and its bookkeeping. ``describe_mac(eni_id)`` asks moto (directly) for the
    ENI's MAC; ``ip_link(args)`` runs ``ip link`` in the node namespace."""

    def __init__(
        self,
        moto_url: str,
        instance_id: str,
        describe_mac: Callable[[str], str],
        ip_link: Callable[[list[str]], None],
    ) -> None:
        target = urllib.parse.urlsplit(moto_url)
        self._moto = (target.hostname or "127.0.0.1", target.port or 80)
        self.instance_id = instance_id
        self._describe_mac = describe_mac
        self._ip_link = ip_link
        self._lock = threading.Lock()
        self.plugged: dict[str, HotPlugged] = {}  # eni id -> link
        self._attachments: dict[str, str] = {}  # attachment id -> eni id
        self.events: list[tuple[str, HotPlugged]] = []  # ("plug"|"unplug", link), in order
        self._faults: list[tuple[re.Pattern[str], str, int]] = []
        self.refused: dict[str, int] = {}  # action -> calls answered by a fault
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> EniHotplug:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delete every link still plugged."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for eni_id in list(self.plugged):
                self._unplug(eni_id)

    def fail(self, actions: str, code: str, status: int = 400) -> None:
        """Answer every EC2 action matching the regular expression ``actions`` (whole name)
        with the EC2 error ``code`` and HTTP ``status`` (throttling: ``RequestLimitExceeded``,
        503), until :meth:`clear_faults`."""
        with self._lock:
            self._faults.append((re.compile(actions), code, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault(self, action: str) -> tuple[str, int] | None:
        with self._lock:
            for pattern, code, status in self._faults:
                if pattern.fullmatch(action):
                    self.refused[action] = self.refused.get(action, 0) + 1
                    return code, status
        return None

    # ----------------------------------------------------------------- the hypervisor

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One EC2 request: forwarded to moto, with the hypervisor's part around it."""
        form = body.decode("utf-8", "replace") if body else urllib.parse.urlsplit(path).query
        params = {k: v[0] for k, v in urllib.parse.parse_qs(form).items()}
        action = params.get("Action", "")
        fault = self._fault(action)
        if fault is not None:
            code, status = fault
            return status, [("Content-Type", "text/xml")], _ec2_error(f"{action}: {code}", code)
        if action == "AttachNetworkInterface" and params.get("InstanceId") == self.instance_id:
            with self._lock:  # held across the call: one attach at a time decides an index
                device = int(params.get("DeviceIndex", "0"))
                card = int(params.get("NetworkCardIndex", "0"))
                if (card, device) == (0, 0) or any(
                    (p.network_card, p.device_index) == (card, device)
                    for p in self.plugged.values()
                ):
                    # moto accepts a device index twice; EC2 (and so this node) does not
                    message = (
                        f"Instance '{self.instance_id}' already has an interface attached at "
                        f"device index '{device}'."
                    )
                    return 400, [("Content-Type", "text/xml")], _ec2_error(message)
                status, resp_headers, resp_body = self._forward(method, path, headers, body)
                if status == 200:
                    found = _ATTACHMENT_ID.search(resp_body)
                    eni_id = params["NetworkInterfaceId"]
                    if found:
                        self._attachments[found.group(1).decode()] = eni_id
                    self._plug(eni_id, device, card)
                    resp_body = self._with_cards(resp_body)
                return status, resp_headers, resp_body
        status, resp_headers, resp_body = self._forward(method, path, headers, body)
        if status == 200 and action.startswith("Describe"):
            with self._lock:
                resp_body = self._with_cards(resp_body)
        if status == 200:
            with self._lock:
                if action == "DetachNetworkInterface":
                    eni_id = self._attachments.pop(params.get("AttachmentId", ""), "")
                    if eni_id:
                        self._unplug(eni_id)
                elif action == "DeleteNetworkInterface":
                    self._unplug(params.get("NetworkInterfaceId", ""))
        return status, resp_headers, resp_body

    def _with_cards(self, body: bytes) -> bytes:
        """moto's answer with the card of every attachment plugged on a card above 0."""
        for attachment_id, eni_id in self._attachments.items():
            plugged = self.plugged.get(eni_id)
            if plugged is not None and plugged.network_card:
                pattern = _CARD_OF % re.escape(attachment_id.encode())
                body = re.sub(pattern, rb"\g<1>%d\2" % plugged.network_card, body, flags=re.S)
        return body

    def _plug(self, eni_id: str, device_index: int, network_card: int = 0) -> None:
        name = f"eth{device_index}" if not network_card else f"nc{network_card}d{device_index}"
        link = HotPlugged(eni_id, self._describe_mac(eni_id).lower(), name, device_index,
                          network_card)  # fmt: skip
        peer = f"uplink{device_index}" if not network_card else f"up{network_card}d{device_index}"
        self._ip_link(["add", link.link, "address", link.mac, "type", "veth", "peer", peer])
        self._ip_link(["set", peer, "up"])
        self.plugged[eni_id] = link
        self.events.append(("plug", link))

    def _unplug(self, eni_id: str) -> None:
        link = self.plugged.pop(eni_id, None)
        if link is None:
            return
        try:
            self._ip_link(["del", link.link])  # its peer goes with it
        except OSError:
            pass  # already gone with its namespace
        self.events.append(("unplug", link))

    # ----------------------------------------------------------------- the proxy

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self._moto, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hotplug = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _proxy(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    status, resp_headers, resp_body = hotplug.handle(
                        self.command, self.path, headers, body
                    )
                except Exception as exc:  # the node is broken: say so
                    status, resp_body = 500, _ec2_error(f"hot-plug failed: {exc}", "InternalError")
                    resp_headers = [("Content-Type", "text/xml")]
                self.send_response(status)
                for key, value in resp_headers:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp_body)))
                self.end_headers()
                self.wfile.write(resp_body)

            do_GET = do_POST = do_PUT = do_DELETE = _proxy

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
