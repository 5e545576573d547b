"""The daemon with ENABLE_MULTI_NIC on a two-card type (c6in.32xlarge) against the fake cloud:
multi-NIC ADDs that find card 1 dry wait and are served once the card grows (as a
single-card ADD waits on card 0), upstream's pool gauges carry a ``network_card`` label, and
introspection and ``ipamctl enis`` show each ENI's card."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.ipamctl.main import main as ipamctl_main
from adapters.ipamd.daemon import Daemon
from tests.adapters.harness import World, add_request, call, eventually
from tests.adapters.harness import until as virtual_until
from tests.adapters.test_economy_node import scrape, value


@pytest.fixture
def world() -> Iterator[World]:
    w = World.create("c6in.32xlarge")
    yield w
    w.cleanup()


@pytest.fixture
async def daemon(world: World) -> AsyncIterator[Daemon]:
    d = world.daemon(ENABLE_MULTI_NIC="true", WARM_ENI_TARGET="0", WARM_IP_TARGET="1")
    await d.start()
    yield d
    await d.stop()


def card_enis(world: World, card: int) -> list[str]:
    return [e.eni_id for e in world.cloud.enis_of(world.instance_id) if e.network_card == card]


async def test_multi_nic_adds_wait_for_card_1_and_the_gauges_show_each_card(
    world: World, daemon: Daemon
) -> None:
    executor = daemon.executor
    await virtual_until(lambda: card_enis(world, 1) != [], world.clock)
    await eventually(lambda: executor.effects_in_flight == 0)
    # Card 1 holds one warm address: of three multi-NIC ADDs at once, two find it dry. They
    # wait (counted as waiting on card 1, which grows), none is refused.
    replies = await asyncio.gather(
        *(call(world.socket_path, add_request(n, multi_nic=True)) for n in (1, 2, 3))
    )
    assert all(r.ok and r.result is not None for r in replies), [r.error_message for r in replies]
    extras = [r.result["attachments"][0]["eni_id"] for r in replies if r.result is not None]
    assert set(extras) <= set(card_enis(world, 1))
    text = await scrape(daemon)
    assert value(text, "awscni_no_available_ip_addresses") >= 1  # some waited
    assert value(text, "awscni_ip_wait_seconds_count") >= 1
    await eventually(lambda: executor.effects_in_flight == 0)
    text = await scrape(daemon)
    for name in ("awscni_eni_allocated", "awscni_assigned_ip_addresses", "awscni_eni_max"):
        assert f'{name}{{network_card="0"}}' in text and f'{name}{{network_card="1"}}' in text
    assert value(text, 'awscni_assigned_ip_addresses{network_card="1"}') == 3
    assert value(text, 'awscni_assigned_ip_addresses{network_card="0"}') == 3
    assert value(text, 'awscni_eni_max{network_card="1"}') == 8  # card 1's own limit
    assert value(text, 'awscni_eni_allocated{network_card="1"}') == len(card_enis(world, 1))
    card_eni = card_enis(world, 1)[0]
    subnet = world.subnet_id
    assert value(
        text, f'awscni_assigned_ip_per_eni{{eni="{card_eni}",subnet="{subnet}",network_card="1"}}'
    ) == extras.count(card_eni)  # fmt: skip
    # Introspection and ipamctl enis show the card.
    assert daemon.introspection is not None
    url = f"http://127.0.0.1:{daemon.introspection.port}"
    out = io.StringIO()
    code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "--json", "enis"], out)
    assert code == 0
    assert json.loads(out.getvalue())["ENIs"][card_eni]["NetworkCard"] == 1
    out = io.StringIO()
    code = await asyncio.to_thread(ipamctl_main, ["--introspection", url, "enis"], out)
    rows = {line.split()[0]: line.split() for line in out.getvalue().splitlines()[1:-1]}
    assert code == 0 and rows[card_eni][1] == "1"  # the CARD column
