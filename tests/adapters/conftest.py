from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.ipamd.daemon import Daemon
from tests.adapters.harness import World


@pytest.fixture
def world() -> Iterator[World]:
    w = World.create()
    yield w
    w.cleanup()


@pytest.fixture
async def daemon(world: World) -> AsyncIterator[Daemon]:
    d = world.daemon()
    await d.start()
    yield d
    await d.stop()
