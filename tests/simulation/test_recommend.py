"""``ipamctl recommend``: the frontier, the recommendation rule, the command line."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import attrs
import pytest

from adapters.ipamctl.main import main as ipamctl_main
from adapters.ipamctl.recommend import (
    Candidate,
    add_recommend_parser,
    dominates,
    frontier,
    parse_candidate,
    recommend,
    run_recommend,
)
from adapters.ipamctl.simulate import SimulateUsageError
from adapters.simulator import Measures

TRACE = """\
time,node,event,pod
30,0,add,a
31,0,add,b
32,0,add,c
33,1,add,d
100,0,del,b
"""


def measures(idle: float, p99: float, calls: int, *, unserved: int = 0,
             throttled: int = 0) -> Measures:  # fmt: skip
    return Measures(
        nodes=1, duration_s=60.0, pod_events=1, pods_served=1, pods_unserved=unserved,
        pods_abandoned=0, wait_p50_s=0.0, wait_p99_s=p99, wait_max_s=p99,
        wait_threshold_s=5.0, pods_over_threshold=0, idle_address_hours=idle, peak_held=0,
        peak_assigned=0, mutating_calls={"AssignPrivateIpAddresses": calls},
        throttled_calls={"AssignPrivateIpAddresses": throttled} if throttled else {},
        failed_effects={}, subnet_peak_used=0, subnet_peak_fraction=0.0, enis_created=0,
        enis_freed=0, force_removed=0,
    )  # fmt: skip


def cand(label: str, idle: float, p99: float, calls: int, **kw: int) -> Candidate:
    return Candidate(label, "upstream", (), measures(idle, p99, calls, **kw))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((1, 1, 1), (2, 2, 2), True),
        ((1, 2, 1), (2, 1, 1), False),  # a trade-off: neither dominates
        ((1, 1, 1), (1, 1, 1), False),  # equal: not better on any
        ((1, 1, 1), (1, 1, 2), True),
    ],
)
def test_dominates_table(a: tuple[int, ...], b: tuple[int, ...], expected: bool) -> None:
    assert dominates(tuple(map(float, a)), tuple(map(float, b))) is expected


def test_frontier_keeps_the_trade_offs_only() -> None:
    lean = cand("lean", 5, 3.0, 100)
    fat = cand("fat", 50, 0.0, 20)
    middle = cand("middle", 10, 0.5, 60)
    worse = cand("worse", 12, 0.6, 70)  # dominated by middle
    assert frontier([lean, fat, middle, worse]) == [lean, fat, middle]


def test_recommendation_is_the_leanest_within_the_p99_budget() -> None:
    lean = cand("lean", 5, 3.0, 100)
    fat = cand("fat", 50, 0.0, 20)
    middle = cand("middle", 10, 0.5, 60)
    assert recommend([lean, fat, middle], max_p99_s=1.0) is middle
    assert recommend([lean, fat, middle], max_p99_s=5.0) is lean
    assert recommend([lean, fat, middle], max_p99_s=0.1) is fat


def test_recommendation_prefers_no_throttling_and_fewer_calls_on_near_ties() -> None:
    throttled = cand("throttled", 10, 0.2, 50, throttled=3)
    calm = cand("calm", 10.3, 0.3, 90)
    calmer = cand("calmer", 10.4, 0.3, 40)
    assert recommend([throttled, calm, calmer], max_p99_s=1.0) is calmer


def test_nothing_within_budget_recommends_the_lowest_p99() -> None:
    a, b = cand("a", 5, 3.0, 10), cand("b", 9, 2.0, 10)
    assert recommend([a, b], max_p99_s=1.0) is b
    unserved = cand("unserved", 1, 0.0, 1, unserved=2)
    assert recommend([a, unserved], max_p99_s=1.0) is unserved  # nothing qualifies


@pytest.mark.parametrize(
    ("spec", "policy", "knobs"),
    [
        ("policy=adaptive", "adaptive", ()),
        ("WARM_IP_TARGET=5, MINIMUM_IP_TARGET=10", "upstream",
         ("WARM_IP_TARGET=5", "MINIMUM_IP_TARGET=10")),
    ],
)  # fmt: skip
def test_parse_candidate(spec: str, policy: str, knobs: tuple[str, ...]) -> None:
    assert parse_candidate(spec) == (spec, policy, knobs)


@pytest.mark.parametrize("spec", ["policy=clever", "WARM_IP_TARGET=lots", "NOPE=1"])
def test_parse_candidate_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(SimulateUsageError):
        parse_candidate(spec)


# ------------------------------------------------------------------------------ CLI
def cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ipamctl")
    parser.add_argument("--json", action="store_true")
    add_recommend_parser(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    return run_recommend(parser.parse_args(argv), out), out.getvalue()


def test_cli_sweeps_a_trace_prints_the_frontier_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    png = tmp_path / "frontier.png"
    code, out = cli(["recommend", "--trace", str(trace), "--candidate", "WARM_IP_TARGET=1",
                     "--candidate", "WARM_ENI_TARGET=1", "--candidate", "policy=adaptive",
                     "--plot", str(png)])  # fmt: skip
    assert code == 0
    assert "recommended: " in out and "address-hours" in out
    assert any(line.startswith("*") for line in out.splitlines())
    assert png.read_bytes().startswith(b"\x89PNG")
    err = capsys.readouterr().err
    assert "[1/3] WARM_IP_TARGET=1" in err and "[3/3] policy=adaptive" in err


def test_cli_json_lists_every_candidate_and_the_recommendation(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    code, out = cli(["recommend", "--trace", str(trace), "--no-progress", "--json",
                     "--candidate", "WARM_IP_TARGET=1", "--candidate", "WARM_ENI_TARGET=2"])
    assert code == 0
    doc = json.loads(out)
    labels = [c["label"] for c in doc["candidates"]]
    assert labels == ["WARM_IP_TARGET=1", "WARM_ENI_TARGET=2"]
    assert doc["recommendation"]["label"] in labels
    assert any(c["frontier"] for c in doc["candidates"])
    by_label = {c["label"]: c for c in doc["candidates"]}
    assert (by_label["WARM_IP_TARGET=1"]["idle_address_hours"]
            < by_label["WARM_ENI_TARGET=2"]["idle_address_hours"])  # fmt: skip


def test_cli_bad_candidate_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(["recommend", "--scenario", "burst", "--candidate", "policy=clever"])
    assert code == 2 and out == ""
    assert "policy must be one of" in capsys.readouterr().err


def test_ipamctl_has_the_recommend_command(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    out = io.StringIO()
    code = ipamctl_main(["recommend", "--trace", str(trace), "--no-progress",
                         "--candidate", "policy=adaptive"], out)  # fmt: skip
    assert code == 0 and "recommended: policy=adaptive" in out.getvalue()


def test_candidate_summary_has_the_frontier_measures() -> None:
    c = cand("x", 1.5, 0.25, 7)
    summary = c.summary()
    assert (summary["idle_address_hours"], summary["wait_p99_s"], summary["mutating_calls"]) == (
        1.5, 0.25, 7)
    assert attrs.evolve(c, label="y").key() == c.key()
