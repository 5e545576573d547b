"""The cluster simulator: determinism, trace replay, waits, shared throttling, trace errors,
and the ``ipamctl simulate`` command."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from adapters.ipamctl.simulate import add_simulate_parser, run_simulate
from adapters.simulator import (
    SCENARIOS,
    Cluster,
    PodEvent,
    SimConfig,
    TraceError,
    load_trace,
    parse_trace,
    simulate,
)
from adapters.simulator.clock import SimClock
from adapters.simulator.workload import dump_csv
from ipamcore.config import PoolConfig
from ipamcore.node import inputs as i

TINY_TRACE = """\
# a tiny trace: three pods on node 0, one leaves
time,node,event,pod
30,0,add,a
31,0,add,b
32,0,add,c
100,0,del,b
"""


def parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ipamctl")
    parser.add_argument("--json", action="store_true")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_simulate(parse_cli(argv), out)
    return code, out.getvalue()


def burst_trace(pods: int, at: float, node: int = 0) -> list[PodEvent]:
    return [PodEvent(at + i * 0.01, node, "add", f"p{i}") for i in range(pods)]


# ------------------------------------------------------------------------- the clock
def test_clock_runs_events_in_time_then_schedule_order() -> None:
    clock = SimClock(100.0)
    seen: list[tuple[float, str]] = []
    clock.at(105.0, lambda a: seen.append((clock.now, a)), "late")
    clock.at(101.0, lambda a: seen.append((clock.now, a)), "first")
    clock.at(101.0, lambda a: seen.append((clock.now, a)), "second")
    clock.at(50.0, lambda a: seen.append((clock.now, a)), "past runs now")
    clock.run_until(102.0)
    assert seen == [(100.0, "past runs now"), (101.0, "first"), (101.0, "second")]
    assert clock.now == 102.0 and len(clock) == 1


# ---------------------------------------------------------------------- determinism
def test_same_inputs_and_seed_give_byte_identical_json() -> None:
    argv = ["simulate", "--scenario", "steady", "--nodes", "4", "--duration", "900",
            "--seed", "7", "--json", "--no-progress"]  # fmt: skip
    first, second = cli(argv), cli(argv)
    assert first[0] == 0
    assert first[1] == second[1]
    doc = json.loads(first[1])
    assert doc["measures"]["pods_served"] > 0


def test_a_different_seed_gives_a_different_workload() -> None:
    steady = SCENARIOS["steady"]
    assert steady.events(3, 900, 1) == steady.events(3, 900, 1)
    assert steady.events(3, 900, 1) != steady.events(3, 900, 2)


# ---------------------------------------------------------------------- trace replay
def test_tiny_trace_replay_gives_expected_allocations() -> None:
    cluster = Cluster(SimConfig(nodes=1, duration_s=200), parse_trace(TINY_TRACE))
    m = cluster.run()
    ipam = cluster.nodes[0].ipam
    assert m.pod_events == 4
    assert m.pods_served == 3 and m.pods_unserved == 0
    assert sorted(a.pod.name for a in ipam.allocations()) == ["a", "c"]
    # m5.xlarge (4 ENIs x 14 secondary IPs), WARM_ENI_TARGET=1: the primary ENI is filled
    # and one warm ENI is created, nothing more for three pods.
    assert ipam.stats(cluster.clock.now).total == 28
    assert m.enis_created == 1 and m.enis_freed == 0
    assert m.mutating_calls["AssignPrivateIpAddresses"] == 1
    assert m.mutating_calls["CreateNetworkInterface"] == 1
    assert m.peak_assigned == 3


def test_a_simulated_node_is_called_when_it_asks_not_on_a_fixed_beat() -> None:
    cluster = Cluster(SimConfig(nodes=1, duration_s=3600), parse_trace(TINY_TRACE))
    node = cluster.nodes[0]
    asked: list[float | None] = []
    ticks: list[float] = []

    def observe(inp: i.Input, _commands: object) -> None:
        if isinstance(inp, i.Tick):
            assert inp.now in asked  # the executor ticks only at a time the node asked for
            ticks.append(inp.now)
        asked.append(node.node.wake_at)

    node.observe = observe
    m = cluster.run()
    assert m.pods_served == 3
    # Reconciliation every minute (a tick to start it, one for the policy pass it asks for)
    # and the passes the pods and their cooldowns need: not a pass every 5 s (720 an hour).
    assert 60 <= len(ticks) <= 200, len(ticks)


def test_csv_dump_reads_back() -> None:
    events = SCENARIOS["batch"].events(2, 1300, 3)
    assert parse_trace(dump_csv(events)) == events


# ------------------------------------------------------------------------------ waits
def test_waits_are_zero_when_the_pool_is_warm() -> None:
    m = simulate(SimConfig(nodes=1, duration_s=300), burst_trace(10, at=60.0))
    assert m.pods_served == 10
    assert m.wait_max_s == 0.0 and m.pods_over_threshold == 0


def test_waits_are_positive_in_a_burst_beyond_the_warm_pool() -> None:
    # WARM_ENI_TARGET=1 on an idle m5.xlarge keeps one ENI's worth (14) of addresses warm;
    # 45 pods within half a second: 31 wait for CreateEni calls (in flight ~1.2 s each).
    m = simulate(SimConfig(nodes=1, duration_s=300), burst_trace(45, at=60.0))
    assert m.pods_served == 45 and m.pods_unserved == 0
    assert sum(1 for _t, w in m.waits if w == 0) == 14
    assert sum(1 for _t, w in m.waits if w > 0) == 45 - 14
    assert 0.0 < m.wait_max_s < 5.0 and m.pods_over_threshold == 0


def test_pods_booting_before_the_node_wait_for_it() -> None:
    events = [PodEvent(0.0, 0, "add", "early")]
    m = simulate(SimConfig(nodes=1, duration_s=60), events)
    assert m.pods_served == 1 and m.wait_max_s > 0.0


def test_a_pod_deleted_while_waiting_is_counted_apart() -> None:
    events = [PodEvent(0.0, 0, "add", "x"), PodEvent(0.0, 0, "del", "x")]
    m = simulate(SimConfig(nodes=1, duration_s=30), events)
    assert m.pods_abandoned == 1 and m.pods_served == 0


# ------------------------------------------------------------------------- throttling
def test_many_nodes_bursting_at_once_are_throttled_by_shared_buckets() -> None:
    nodes = 150  # > the 100-token buckets, all booting at the same instant
    events = [e for n in range(nodes) for e in burst_trace(30, at=20.0, node=n)]
    events.sort(key=lambda e: e.time)
    throttled = simulate(SimConfig(nodes=nodes, duration_s=120), events)
    calm = simulate(SimConfig(nodes=nodes, duration_s=120, throttling=False), events)
    assert throttled.throttled_total > 0
    assert throttled.failed_effects.get("throttled", 0) > 0
    assert calm.throttled_total == 0 and calm.failed_effects == {}
    assert throttled.wait_max_s > calm.wait_max_s


def test_one_node_alone_is_not_throttled() -> None:
    m = simulate(SimConfig(nodes=1, duration_s=300), burst_trace(45, at=60.0))
    assert m.throttled_total == 0


# ----------------------------------------------------------------------- trace errors
@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("time,node,event,pod\n1,0,add,a\nsoon,0,add,b\n", 3, "time 'soon' is not a number"),
        ("1,0,add,a\n2,0,start,b\n", 2, "neither 'add' nor 'del'"),
        ("1,0,add\n", 1, "expected 4 fields"),
        ("1,-1,add,a\n", 1, "node '-1'"),
        ("1,0,add,a\n\n2,0,add,a\n", 3, "already on node 0"),
        ("1,0,del,a\n", 1, "no live add"),
        ("-5,0,add,a\n", 1, "must be a finite number >= 0"),
        ('{"time": 1, "node": 0, "event": "add", "pod": "a"}\n{"time": 2,\n', 2, "not valid JSON"),
        ('{"time": 1, "node": 0, "event": "add"}\n', 1, "missing key(s) pod"),
        ('{"time": 1, "node": 0, "event": "add", "pod": ""}\n', 1, "pod name is empty"),
    ],
)
def test_trace_parser_rejects_bad_lines_naming_the_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(text, "t.trace")
    assert info.value.line == line
    assert f"t.trace line {line}:" in str(info.value)
    assert needle in str(info.value)


def test_json_lines_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "pods.jsonl"
    path.write_text(
        '{"time": 0.5, "node": 1, "event": "add", "pod": "a"}\n'
        "# comment\n"
        '{"time": 9, "node": 1, "event": "del", "pod": "a"}\n'
    )
    assert load_trace(path) == [PodEvent(0.5, 1, "add", "a"), PodEvent(9.0, 1, "del", "a")]


# ------------------------------------------------------------------------ scenarios
def test_upstream_scaleup_is_500_nodes_and_23000_pods() -> None:
    s = SCENARIOS["upstream-scaleup"]
    events = s.events(s.nodes, s.duration_s, 0)
    assert s.nodes == 500
    assert len(events) == 23_000 and all(e.event == "add" for e in events)
    per_node = {e.node for e in events}
    assert per_node == set(range(500))


# ------------------------------------------------------------------------------ CLI
def test_cli_table_replays_a_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text(TINY_TRACE)
    code, out = cli(["simulate", "--trace", str(path), "--no-progress"])
    assert code == 0
    assert "pods served / unserved / deleted waiting  3 / 0 / 0" in out
    assert "ENIs created / freed" in out


def test_cli_bad_trace_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("1,0,add,a\n2,0,oops,b\n")
    code, _out = cli(["simulate", "--trace", str(path), "--no-progress"])
    assert code == 2
    assert "bad.csv line 2:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "knob", ["NOPE=1", "WARM_IP_TARGET=many", "ENABLE_PREFIX_DELEGATION=maybe", "WARM_ENI_TARGET"]
)
def test_cli_rejects_bad_knobs(knob: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out = cli(["simulate", "--scenario", "burst", "--set", knob, "--no-progress"])
    assert code == 2
    assert "--set" in capsys.readouterr().err


def test_cli_knobs_policy_progress_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "run.png"
    code, out = cli([
        "--json", "simulate", "--scenario", "burst", "--nodes", "2", "--duration", "600",
        "--policy", "upstream-faithful", "--set", "WARM_IP_TARGET=5",
        "--set", "IP_COOLDOWN_PERIOD=10", "--plot", str(png),
    ])  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["pool"]["policy"] == "upstream-faithful"
    assert doc["pool"]["warm_ip_target"] == 5 and doc["pool"]["cooldown_s"] == 10.0
    assert doc["measures"]["nodes"] == 2
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "100%" in capsys.readouterr().err


def test_warm_ip_target_holds_fewer_idle_addresses_than_warm_eni() -> None:
    events = SCENARIOS["burst"].events(2, 900, 0)
    eni = simulate(SimConfig(nodes=2, duration_s=900), events)
    ip = simulate(SimConfig(nodes=2, duration_s=900, pool=PoolConfig(warm_ip_target=3)), events)
    assert ip.idle_address_hours < eni.idle_address_hours
    assert ip.pods_served == eni.pods_served
