"""The local node's moto_server hands out ENI addresses the way EC2 does."""

from __future__ import annotations

import ipaddress

from tests.rigs import moto_addresses


def test_never_a_reserved_address_and_never_one_twice() -> None:
    cidr = "10.9.0.0/28"  # 16 addresses: 4 reserved at the bottom, the broadcast at the top
    net = ipaddress.IPv4Network(cidr)
    handed = []
    while True:
        try:
            handed.append(moto_addresses.private_ip(cidr))
        except RuntimeError as exc:
            assert "no address left" in str(exc)
            break
    reserved = {str(net.network_address + i) for i in range(4)} | {str(net.broadcast_address)}
    assert len(handed) == len(set(handed)) == 16 - 5
    assert not reserved & set(handed)
    assert handed[0] == "10.9.0.14"  # from the top down, away from instances' primary IPs


def test_ipv6_and_cidrless_calls_keep_motos_choice() -> None:
    assert ":" in moto_addresses.private_ip("2001:db8::/64", ipv6=True)
    assert ipaddress.IPv4Address(moto_addresses.private_ip())
