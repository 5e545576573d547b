"""The node's decisions on what Kubernetes says: the ENIConfig places new ENIs (a missing
one pauses growth by new ENIs, never an ENI in the wrong subnet), the Node's capacity caps
max pods. Inputs in, commands out."""

from __future__ import annotations

from ipamcore.config import EniPlacement, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni
from ipamcore.node import NodeConfig
from ipamcore.node import commands as c
from ipamcore.node import inputs as i
from tests.core.test_node import PRIMARY, Drive, eni


def custom_drive(warm_eni: int = 1) -> Drive:
    pool = PoolConfig(warm_eni_target=warm_eni, placement=EniPlacement(custom_networking=True))
    return Drive(NodeConfig(pool=pool))


def effects(commands: list[c.Command]) -> list[object]:
    return [x.effect for x in commands if isinstance(x, c.PerformEffect)]


def test_the_eniconfig_given_before_start_places_the_first_new_eni() -> None:
    d = custom_drive()
    d.feed(i.EniConfigChanged(d.now, "us-east-1a", "subnet-a", ("sg-1", "sg-2")))
    d.boot()
    [create] = [e for e in effects(d.tick()) if isinstance(e, CreateEni)]
    assert (create.subnet_id, create.security_groups) == ("subnet-a", ("sg-1", "sg-2"))


def test_an_eniconfig_without_groups_uses_the_primary_enis() -> None:
    d = custom_drive()
    d.feed(i.EniConfigChanged(d.now, "default", "subnet-a", ()))
    d.boot((PRIMARY,))
    [create] = [e for e in effects(d.tick()) if isinstance(e, CreateEni)]
    assert create.subnet_id == "subnet-a"
    assert create.security_groups == PRIMARY.security_groups


def test_a_missing_eniconfig_creates_no_eni_and_says_so_then_its_arrival_resumes_growth() -> None:
    d = custom_drive()
    d.boot()
    d.feed(i.EniConfigChanged(d.now, "us-east-1b", None))
    assert any("eniconfig missing" in log.event for log in d.logs)
    assert d.node.core.eniconfig_missing
    for _ in range(3):
        assert not any(isinstance(e, CreateEni) for e in effects(d.tick(d.now + 10)))
    d.feed(i.EniConfigChanged(d.now, "us-east-1b", "subnet-b", ("sg-9",)))
    assert d.node.wake_at == d.now  # kicked: the policy runs at once
    [create] = [e for e in effects(d.tick()) if isinstance(e, CreateEni)]
    assert (create.subnet_id, create.security_groups) == ("subnet-b", ("sg-9",))


def test_a_changed_eniconfig_applies_to_new_enis_only() -> None:
    d = custom_drive(warm_eni=0)
    attached = eni(1, ("10.0.1.10",))
    d.feed(i.EniConfigChanged(d.now, "a", "subnet-a", ()))
    d.boot((PRIMARY, attached))
    d.feed(i.EniConfigChanged(d.now, "a", "subnet-c", ()))
    assert d.node.core.eni("eni-1") is not None  # existing ENIs stay where they are
    assert d.node.core._placement()[0] == "subnet-c"


def test_the_same_eniconfig_again_is_no_change() -> None:
    d = custom_drive()
    d.boot()
    d.feed(i.EniConfigChanged(d.now, "a", "subnet-a", ()))
    logs = len(d.logs)
    d.feed(i.EniConfigChanged(d.now + 5, "a", "subnet-a", ()))
    assert len(d.logs) == logs


def test_a_missing_eniconfig_still_tops_up_existing_enis() -> None:
    pool = PoolConfig(warm_ip_target=20, placement=EniPlacement(custom_networking=True))
    d = Drive(NodeConfig(pool=pool))
    d.feed(i.EniConfigChanged(d.now, "x", None))
    d.boot((PRIMARY, eni(1, ("10.0.1.10",))))
    made = effects(d.tick())
    assert made and all(isinstance(e, AssignAddresses) for e in made)


def test_node_capacity_caps_max_pods() -> None:
    d = Drive()
    d.feed(i.MaxPodsChanged(d.now, 17))
    d.boot()
    assert d.node.stats(d.now).max_pods == 17
    d.feed(i.MaxPodsChanged(d.now, 500))  # never above the instance's own limit
    assert d.node.stats(d.now).max_pods == 29  # m5.large
    d.feed(i.MaxPodsChanged(d.now, None))
    assert d.node.stats(d.now).max_pods == 29


def test_the_kubernetes_inputs_go_into_the_flight_record() -> None:
    import json

    from ipamcore.node import record

    for inp in (
        i.EniConfigChanged(1.5, "a", None),
        i.EniConfigChanged(1.5, "a", "subnet-a", ("sg-1",)),
        i.MaxPodsChanged(2.5, 17),
    ):
        assert record.decode(json.loads(json.dumps(record.encode(inp)))) == inp
