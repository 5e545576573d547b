"""The boundary's address checks agree with :mod:`ipaddress` on what is a canonical IPv4
address and /28 prefix (they no longer call it for the addresses they accept)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from ipamcore.errors import DataError
from ipamcore.validation import check_blocks

PIECES = ["0", "00", "1", "16", "255", "256", "012", "99", "", "a", "1e1", "\u0663", "+1", " 1"]


def _reference_address(text: object) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def _reference_prefix(text: object) -> bool:
    try:
        net = ipaddress.IPv4Network(text)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return net.prefixlen == 28 and str(net) == text


def _accepted(addresses: tuple[object, ...], prefixes: tuple[object, ...]) -> bool:
    try:
        check_blocks(addresses, prefixes, "test")  # type: ignore[arg-type]
    except DataError:
        return False
    return True


def _candidates(seed: int) -> list[object]:
    rng = random.Random(seed)
    out: list[object] = ["1.2.3.4", "01.2.3.4", "1.2.3.04", "0.0.0.0", "255.255.255.255", 5, None]
    for _ in range(3000):
        octets = [
            rng.choice(PIECES) if rng.random() < 0.3 else str(rng.randrange(256))
            for _ in range(rng.choice((3, 4, 4, 4, 5)))
        ]
        text = ".".join(octets)
        out.append(text)
        out.append(f"{text}/{rng.choice(['28', '24', '028', '32', '', 'x', '28/1'])}")
    return out


@pytest.mark.parametrize("seed", range(3))
def test_addresses_and_prefixes_are_accepted_exactly_when_ipaddress_finds_them_canonical(
    seed: int,
) -> None:
    for text in _candidates(seed):
        assert _accepted((text,), ()) == _reference_address(text), text
        assert _accepted((), (text,)) == _reference_prefix(text), text


def test_the_errors_say_which_rule_failed() -> None:
    with pytest.raises(DataError, match="not an IPv4 address"):
        check_blocks(("10.0.0.256",), (), "x")
    with pytest.raises(DataError, match="not in canonical form"):
        check_blocks((167772161,), (), "x")  # type: ignore[arg-type]  # (10.0.0.1 as an int)
    with pytest.raises(DataError, match="not an IPv4 /28 prefix"):
        check_blocks((), ("10.0.0.1/28",), "x")
    with pytest.raises(DataError, match="not a canonical IPv4 /28 prefix"):
        check_blocks((), ("10.0.0.0/24",), "x")
