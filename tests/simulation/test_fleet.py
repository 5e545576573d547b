"""Nodes that join and leave (autoscaling), mixed instance types, and metadata lag in the
simulator: traces, the cluster, the autoscale scenario, ``ipamctl simulate`` and
``ipamctl recommend``."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from adapters.ipamctl.recommend import judge
from adapters.ipamctl.simulate import add_simulate_parser, run_simulate
from adapters.simulator import SCENARIOS, Cluster, PodEvent, SimConfig, TraceError, parse_trace
from adapters.simulator.workload import JOIN, LEAVE
from ipamcore.errors import CloudError
from ipamcore.limits import limits_for
from ipamcore.node import commands as c
from ipamcore.node import inputs as i


def cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ipamctl")
    parser.add_argument("--json", action="store_true")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    code = run_simulate(parser.parse_args(argv), out)
    return code, out.getvalue()


def pods(node: int, count: int, at: float, prefix: str = "p") -> list[PodEvent]:
    return [PodEvent(at + k * 0.01, node, "add", f"{prefix}{k}") for k in range(count)]


# ----------------------------------------------------------------------- trace format
def test_join_and_leave_lines_in_csv_and_json_lines() -> None:
    csv = ("time,node,event,pod\n0,a,add,x\n100,b,join,c5.4xlarge\n130,b,add,y\n"
           "400,b,leave,\n500,c,join,\n510,c,leave\n")  # fmt: skip
    assert parse_trace(csv) == [
        PodEvent(0.0, 0, "add", "x"), PodEvent(100.0, 1, JOIN, "c5.4xlarge"),
        PodEvent(130.0, 1, "add", "y"), PodEvent(400.0, 1, LEAVE, ""),
        PodEvent(500.0, 2, JOIN, ""), PodEvent(510.0, 2, LEAVE, ""),
    ]  # fmt: skip
    jsonl = ('{"time": 5, "node": "b", "event": "join", "instance_type": "m5.large"}\n'
             '{"time": 9, "node": "b", "event": "add", "pod": "y"}\n'
             '{"time": 20, "node": "b", "event": "leave"}\n')  # fmt: skip
    assert parse_trace(jsonl) == [PodEvent(5.0, 0, JOIN, "m5.large"),
                                  PodEvent(9.0, 0, "add", "y"), PodEvent(20.0, 0, LEAVE, "")]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("1,a,join,\n2,a,join,\n", 2, "joins twice"),
        ("1,a,add,x\n2,a,join,\n", 2, "joins after events of its own"),
        ("1,a,add,x\n2,a,leave,\n3,a,add,y\n", 3, "has an event after it left"),
        ("1,a,leave,\n2,a,leave,\n", 2, "has an event after it left"),
        ("1,a,leave,x\n", 1, "a leave has no fourth field"),
        ("1,a,join,not a type\n", 1, "is not a type name"),
        ("1,a,start,x\n", 1, "neither 'add' nor 'del' (nor 'join', 'leave')"),
    ],
)
def test_bad_node_events_name_the_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(text, "fleet.csv")
    assert info.value.line == line and needle in str(info.value)


def test_the_cluster_refuses_a_workload_with_pods_after_their_node_left() -> None:
    events = [PodEvent(10.0, 0, LEAVE, ""), PodEvent(20.0, 0, "add", "late")]
    with pytest.raises(TraceError, match="after it left"):
        Cluster(SimConfig(nodes=1, duration_s=60), events)


# ------------------------------------------------------------------- join and leave
def test_a_node_joining_late_is_launched_then_and_serves_its_pods() -> None:
    events = [*pods(0, 3, 20.0), PodEvent(300.0, 1, JOIN, ""), *pods(1, 10, 340.0, "q")]
    cluster = Cluster(SimConfig(nodes=2, duration_s=600), events)
    assert not cluster.nodes[1].launched and cluster.nodes[1].ipam is None
    cluster.clock.run_until(cluster.config.start + 299.0)
    assert not cluster.nodes[1].launched  # no instance, no subnet address yet
    used_before = cluster.recorder.samples[-1].subnet_used
    m = cluster.run()
    node = cluster.nodes[1]
    assert node.launched and node.ipam is not None
    assert sorted(a.pod.name for a in node.ipam.allocations()) == [f"q{k}" for k in range(10)]
    assert m.nodes_joined == 1 and m.nodes_left == 0 and m.pods_served == 13
    assert [s.nodes for s in m.samples if s.t < 299] == [1] * 30
    assert m.samples[-1].nodes == 2 and m.samples[-1].subnet_used > used_before


def leaving_cluster(drain: str) -> tuple[Cluster, list[tuple[float, str]]]:
    """Node 1 holds 20 pods and leaves at 400 s (2 of them already gone); node 0 stays."""
    events = [*pods(0, 5, 20.0), *pods(1, 20, 20.0, "q"),
              PodEvent(200.0, 1, "del", "q0"), PodEvent(201.0, 1, "del", "q1"),
              PodEvent(400.0, 1, LEAVE, "")]  # fmt: skip
    cluster = Cluster(SimConfig(nodes=2, duration_s=900, drain=drain), events)
    fed: list[tuple[float, str]] = []

    def observe(inp: i.Input, _commands: list[c.Command]) -> None:
        fed.append((cluster.clock.now, type(inp).__name__))

    cluster.nodes[1].observe = observe
    return cluster, fed


def test_a_leaving_node_is_drained_rescheduled_and_its_enis_deleted() -> None:
    cluster, fed = leaving_cluster("reschedule")
    start = cluster.config.start
    cluster.clock.run_until(start + 399.0)
    gone = cluster.nodes[1]
    enis = [e.eni_id for e in cluster.cloud.enis_of(gone.instance_id)]
    assert len(enis) >= 2  # the primary and the ENIs the agent created
    m = cluster.run()
    assert m.nodes_left == 1 and m.pods_drained == 18 and m.pods_rescheduled == 18
    assert m.enis_terminated == len(enis)
    for eni in enis:  # DeleteOnTermination: every ENI went with the instance
        with pytest.raises(CloudError, match="does not exist"):
            cluster.cloud.eni(eni)
    assert gone.gone and not gone.pods and not gone.waiting
    stay = cluster.nodes[0]
    assert stay.ipam is not None
    names = sorted(a.pod.name for a in stay.ipam.allocations())
    assert len(names) == 5 + 18 and sum(n.endswith("~1") for n in names) == 18
    assert m.pods_served == 25 + 18 and m.pods_unserved == 0 and m.pods_abandoned == 0
    # the agent ran until its instance was terminated (30 s after the drain), not after
    assert max(t for t, _ in fed) <= start + 400.0 + 30.0
    assert sum(1 for t, kind in fed if kind == "Del" and t == start + 400.0) == 18
    # the subnet got the leaving node's addresses back
    assert m.samples[-1].subnet_used < max(s.subnet_used for s in m.samples)
    assert m.samples[-1].nodes == 1


def test_drain_count_evicts_without_rescheduling() -> None:
    cluster, _ = leaving_cluster("count")
    m = cluster.run()
    assert m.pods_drained == 18 and m.pods_rescheduled == 0
    assert cluster.nodes[0].ipam is not None
    assert len(cluster.nodes[0].ipam.allocations()) == 5


def test_pods_with_no_node_left_are_counted() -> None:
    events = [*pods(0, 4, 20.0), PodEvent(100.0, 0, LEAVE, "")]
    m = Cluster(SimConfig(nodes=1, duration_s=300), events).run()
    assert m.pods_drained == 4 and m.pods_rescheduled == 0 and m.pods_not_rescheduled == 4


def test_the_autoscale_scenario_grows_and_shrinks_the_fleet() -> None:
    s = SCENARIOS["autoscale"]
    events = s.events(6, s.duration_s, 0)
    assert sorted(e.node for e in events if e.event == JOIN) == [3, 4, 5]
    assert sorted(e.node for e in events if e.event == LEAVE) == [3, 4, 5]
    config = SimConfig(nodes=6, duration_s=s.duration_s, boot_spread_s=s.boot_spread_s(6),
                       metadata_lag_s=1.5)  # fmt: skip
    m = Cluster(config, events).run()
    counts = [x.nodes for x in m.samples]
    assert counts[0] == 3 and max(counts) == 6 and counts[-1] == 3
    assert m.nodes_joined == 3 and m.nodes_left == 3
    # 3 pods stay on each new node; they go to the first nodes, which stay
    assert m.pods_drained == 9 and m.pods_rescheduled == 9 and m.pods_unserved == 0
    assert m.enis_terminated >= 6
    peak = max(x.subnet_used for x in m.samples)
    assert m.samples[-1].subnet_used < peak / 2  # the new nodes' ENIs went with them


def test_cli_autoscale_reports_the_fleet() -> None:
    code, out = cli(["simulate", "--scenario", "autoscale", "--nodes", "4", "--no-progress"])
    assert code == 0
    assert "nodes joined / left                       2 / 2" in out
    assert "pods drained / rescheduled / not          6 / 6 / 0" in out


# ------------------------------------------------------------------ instance types
def test_each_node_gets_its_type_and_waits_are_reported_by_type() -> None:
    # 40 pods at once on each node: m5.large (3 ENIs x 9) cannot hold them, c5.4xlarge can
    events = sorted([*pods(0, 40, 60.0), *pods(1, 40, 60.0)], key=lambda e: e.time)
    config = SimConfig(nodes=2, duration_s=300, instance_types=("m5.large", "c5.4xlarge"))
    cluster = Cluster(config, events)
    m = cluster.run()
    kinds = [cluster.cloud.vpc.instance(n.instance_id).limits.instance_type
             for n in cluster.nodes]  # fmt: skip
    assert kinds == ["m5.large", "c5.4xlarge"]
    small, big = m.by_type["m5.large"], m.by_type["c5.4xlarge"]
    assert small["nodes"] == 1 and big["nodes"] == 1
    assert big["pods_served"] == 40 and big["pods_unserved"] == 0
    assert small["pods_served"] == 27 and small["pods_unserved"] == 13
    assert m.pods_unserved == 13
    assert small["wait_max_s"] > big["wait_max_s"]
    assert small["idle_address_hours"] >= 0 and big["idle_address_hours"] > 0


def test_a_join_names_its_own_type() -> None:
    events = [PodEvent(10.0, 1, JOIN, "c5.4xlarge"), *pods(1, 3, 50.0)]
    cluster = Cluster(SimConfig(nodes=2, duration_s=120), events)
    m = cluster.run()
    assert cluster.nodes[1].instance_type == "c5.4xlarge"
    assert set(m.by_type) == {"m5.xlarge", "c5.4xlarge"}


def test_one_type_reports_nothing_by_type() -> None:
    m = Cluster(SimConfig(nodes=2, duration_s=120), pods(0, 3, 50.0)).run()
    assert m.by_type == {} and all(k != "m5.xlarge (2 nodes)" for k, _ in m.rows())


def test_cli_mixed_instance_types(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(["--json", "simulate", "--scenario", "burst",
                     "--instance-type", "m5.large:2,c5.4xlarge", "--nodes", "3",
                     "--duration", "600", "--no-progress"])  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["instance_types"] == {"m5.large": 2, "c5.4xlarge": 1}
    by_type = doc["measures"]["by_type"]
    assert by_type["m5.large"]["nodes"] == 2 and by_type["c5.4xlarge"]["nodes"] == 1
    # the burst's 35 pods a node overflow m5.large's 27 addresses, not c5.4xlarge's
    assert by_type["m5.large"]["pods_unserved"] > 0 == by_type["c5.4xlarge"]["pods_unserved"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("m5.large:2,c5.4xlarge:2", "add up to 4 nodes; the cluster has 3"),
        ("m5.large,c5.4xlarge:1", "needs a count"),
        ("m5.large:0", "whole number >= 1"),
        ("m5.large:1,m5.large", "given twice"),
        ("m5.large:1,x9.nothing", "unknown instance type 'x9.nothing'"),
    ],
)
def test_cli_bad_instance_type_mix(
    value: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(["simulate", "--scenario", "burst", "--nodes", "3", "--instance-type", value,
                   "--no-progress"])  # fmt: skip
    assert code == 2 and needle in capsys.readouterr().err


def test_a_setting_impossible_on_one_type_of_the_mix_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = cli(["simulate", "--scenario", "burst", "--nodes", "2", "--instance-type",
                   "c5.4xlarge:1,t2.medium", "--set", "ENABLE_PREFIX_DELEGATION=true",
                   "--no-progress"])  # fmt: skip
    assert code == 2 and "t2.medium is not a Nitro instance type" in capsys.readouterr().err


def test_recommend_judges_nodes_full_by_the_nodes_own_type() -> None:
    from adapters.ipamctl.recommend import Candidate

    # node 1 (t2.medium: 15 pod addresses) has 20 pods; node 0 (c5.4xlarge) has 20 too
    events = sorted([*pods(0, 20, 30.0), *pods(1, 20, 30.0)], key=lambda e: (e.node == 0,))
    config = SimConfig(nodes=2, duration_s=200, instance_types=("c5.4xlarge", "t2.medium"))
    m = Cluster(config, events).run()
    assert m.pods_unserved == 5
    cand = Candidate("WARM_ENI_TARGET=1", "upstream", (), m)
    node_limits = [limits_for("c5.4xlarge"), limits_for("t2.medium")]
    verdict = judge([cand], 1.0, events, limits_for("c5.4xlarge"), ("big", "small"),
                    node_limits=node_limits)  # fmt: skip
    assert not verdict.met
    assert any("nodes full: node small has up to 20 pods" in r and "t2.medium" in r
               for r in verdict.reasons)  # fmt: skip


def test_recommend_cli_on_a_mixed_autoscaling_cluster() -> None:
    from adapters.ipamctl.main import main as ipamctl_main

    out = io.StringIO()
    code = ipamctl_main(["recommend", "--scenario", "autoscale", "--nodes", "4",
                         "--instance-type", "m5.xlarge:2,c5.4xlarge", "--no-progress",
                         "--candidate", "WARM_IP_TARGET=2", "--json"], out)  # fmt: skip
    doc = json.loads(out.getvalue())
    assert code == 0 and doc["met"] and doc["nodes"] == 4
    assert doc["instance_types"] == {"m5.xlarge": 2, "c5.4xlarge": 2}
    assert [c["label"] for c in doc["candidates"]] == ["WARM_ENI_TARGET=1", "WARM_IP_TARGET=2"]


# ------------------------------------------------------------------- metadata lag
def lag_waits(at: float, lag: float) -> tuple[float, float, int]:
    """45 pods at once on an idle m5.xlarge at ``at`` s: (p99, max wait, pods over 5 s)."""
    m = Cluster(SimConfig(nodes=1, duration_s=300, metadata_lag_s=lag), pods(0, 45, at)).run()
    assert m.pods_served == 45
    return m.wait_p99_s, m.wait_max_s, m.pods_over_threshold


def test_metadata_lag_changes_pod_waits_in_a_simulation() -> None:
    # 14 warm addresses; the other 31 pods wait for new ENIs, which the node uses only once
    # instance metadata lists them (the Node's wait, in the simulator as in the daemon)
    no_lag, lag, long_lag = lag_waits(30.0, 0.0), lag_waits(30.0, 1.5), lag_waits(30.0, 8.0)
    assert 0 < no_lag[1] < lag[1] < long_lag[1]
    assert no_lag[0] < lag[0] < long_lag[0]
    assert long_lag[1] >= 8.0 > no_lag[1] + 5.0
    assert no_lag[2] == 0 and long_lag[2] == 31  # a long lag makes them wait past 5 s


def test_metadata_lag_matters_when_a_reconcile_coincides_with_the_burst() -> None:
    # At 60 s the node's reconciliation describes its ENIs while the burst's CreateEni calls
    # are in flight. EC2 calls take effect when their latency has passed (as against the
    # daemon's fake), so the describe cannot see those ENIs yet and the node still waits for
    # metadata; when calls took effect at once, it adopted them early and the lag vanished.
    assert lag_waits(60.0, 8.0)[1] >= 8.0
    early = Cluster(SimConfig(nodes=1, duration_s=300, metadata_lag_s=8.0,
                              calls_take_effect_late=False), pods(0, 45, 60.0)).run()
    assert early.wait_max_s < 1.0  # the old behaviour, kept behind the flag


def test_simconfig_mixes_must_name_every_node() -> None:
    with pytest.raises(ValueError, match="instance_types names 1 nodes; the cluster has 2"):
        SimConfig(nodes=2, duration_s=10, instance_types=("m5.large",))
    with pytest.raises(ValueError):
        SimConfig(nodes=1, duration_s=10, drain="evaporate")


def test_written_trace_round_trips_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("0,a,add,x\n60,b,join,c5.4xlarge\n100,b,add,y\n300,b,leave\n")
    code, out = cli(["--json", "simulate", "--trace", str(path), "--no-progress"])
    assert code == 0
    m = json.loads(out)["measures"]
    assert m["nodes_joined"] == 1 and m["nodes_left"] == 1 and m["pods_rescheduled"] == 1
    assert set(m["by_type"]) == {"m5.xlarge", "c5.4xlarge"}


def test_recommend_table_shows_the_recommendation_by_type_and_the_fleet() -> None:
    from adapters.ipamctl.main import main as ipamctl_main

    out = io.StringIO()
    code = ipamctl_main(["recommend", "--scenario", "autoscale", "--nodes", "4",
                         "--instance-type", "m5.xlarge:2,c5.4xlarge", "--no-progress",
                         "--candidate", "WARM_IP_TARGET=2"], out)  # fmt: skip
    text = out.getvalue()
    assert code == 0 and "scenario autoscale, 2 x m5.xlarge + 2 x c5.4xlarge" in text
    assert "    nodes joined / left: 2 / 2" in text
    assert "    c5.4xlarge (2 nodes): p50 / p99 / max wait" in text
    assert "    m5.xlarge (2 nodes): p50 / p99 / max wait" in text
