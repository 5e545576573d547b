"""``moto_server`` with EC2's address rules, for a local node (``python -m tests.rigs.moto_addresses
-H 127.0.0.1 -p PORT``, the same arguments as ``moto_server``).

moto picks an ENI's private addresses at random anywhere in the subnet: the network address,
the VPC router (``.1``), the DNS and reserved addresses, the broadcast address, and addresses
another ENI already holds can all come out. EC2 never hands those out, and on a local node a
pod given the subnet's router address breaks the very routes the test checks (CI caught one
pod with ``10.0.0.1``). This entry point replaces moto's choice for ENI addresses with EC2's
rules: never the first four addresses or the last of the subnet, never one already handed
out; it takes them from the top of the subnet down, away from the instances' primary
addresses, which moto allocates from the bottom up. IPv6 and other callers keep moto's own.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator

from moto import server
from moto.ec2 import utils
from moto.ec2.models import elastic_network_interfaces

_moto_choice = utils.random_private_ip
_lock = threading.Lock()
_free: dict[str, Iterator[str]] = {}

AWS_RESERVED_LOW = 4  # network address, VPC router, DNS, reserved for future use


def _addresses(cidr: str) -> Iterator[str]:
    net = ipaddress.IPv4Network(cidr, strict=False)
    low = int(net.network_address) + AWS_RESERVED_LOW
    for value in range(int(net.broadcast_address) - 1, low - 1, -1):
        yield str(ipaddress.IPv4Address(value))


def private_ip(cidr: str | None = None, ipv6: bool = False) -> str:
    """The next address of ``cidr`` that EC2 could hand out; moto's own choice otherwise."""
    if ipv6 or not cidr:
        return _moto_choice(cidr, ipv6)
    with _lock:
        free = _free.setdefault(cidr, _addresses(cidr))
        try:
            return next(free)
        except StopIteration:
            raise RuntimeError(f"subnet {cidr} has no address left") from None


def main() -> None:
    elastic_network_interfaces.random_private_ip = private_ip  # type: ignore[assignment]
    server.main()


if __name__ == "__main__":
    main()
