"""Issue 16 item 3, the daemon's side: an ENI the pool frees leaves no rule or route behind
(in-process daemon, fake cloud and datapath, real checkpoint file, virtual time)."""

from __future__ import annotations

from tests.adapters.harness import World, until


def eni_rules(world: World) -> set[tuple[int, str, int]]:
    return {r for r in world.datapath.rules if r[0] == 32765}


async def test_a_freed_eni_leaves_no_rule_or_route(world: World) -> None:
    d = world.daemon(WARM_ENI_TARGET="2")  # m5.large: the primary and one more ENI
    await d.start()
    try:
        await until(lambda: d.executor.stats().enis == 2, world.clock, step=0.5)
        await until(lambda: len(eni_rules(world)) == 1, world.clock, step=0.5)
        ((_, selector, table),) = eni_rules(world)
        assert any(r[0] == table for r in world.datapath.routes)
    finally:
        await d.stop()
    d2 = world.daemon(WARM_ENI_TARGET="0")  # the second ENI is now surplus: freed
    await d2.start()
    try:
        await until(lambda: d2.executor.stats().enis == 1, world.clock, step=30.0, limit=40)
        assert eni_rules(world) == set(), selector
        assert not any(r[0] == table for r in world.datapath.routes)
    finally:
        await d2.stop()
