"""``ipamctl recommend``: the frontier, the recommendation rule, the command line."""

from __future__ import annotations

import argparse
import importlib.util
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
    no_regret,
    parse_candidate,
    recommend,
    run_recommend,
    trade_off,
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
    # nothing qualifies: the closest serves every pod before it has a low p99
    assert recommend([a, unserved], max_p99_s=1.0) is a


@pytest.mark.parametrize(
    ("spec", "policy", "knobs"),
    [
        ("policy=adaptive", "adaptive", ()),
        ("WARM_IP_TARGET=5, MINIMUM_IP_TARGET=10", "upstream",
         ("WARM_IP_TARGET=5", "MINIMUM_IP_TARGET=10")),
    ],
)  # fmt: skip
def test_parse_candidate(spec: str, policy: str, knobs: tuple[str, ...]) -> None:
    label, got_policy, got_knobs = parse_candidate(spec)
    assert (got_policy, got_knobs) == (policy, knobs)
    assert " " not in label
    assert parse_candidate(label) == (label, policy, knobs)  # the label pastes back


@pytest.mark.parametrize("spec", ["policy=clever", "WARM_IP_TARGET=lots", "NOPE=1",
                                  "WARM_IP_TARGET=1,WARM_IP_TARGET=2",
                                  "policy=adaptive,policy=upstream"])  # fmt: skip
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
    # upstream's default always runs, first, as the baseline
    assert labels == ["WARM_ENI_TARGET=1", "WARM_IP_TARGET=1", "WARM_ENI_TARGET=2"]
    assert [c["default"] for c in doc["candidates"]] == [True, False, False]
    assert doc["met"] is True and doc["reasons"] == []
    assert doc["recommendation"]["label"] in labels
    assert "idle" in doc["definitions"]["idle_address_hours"]
    by = {c["label"]: c for c in doc["candidates"]}
    assert by["WARM_ENI_TARGET=1"]["trade_off"] == "the default"
    assert "vs_default" in by["WARM_IP_TARGET=1"]
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


# ------------------------------------------------------- never recommending blindly
def full_trace(nodes: int, pods: int) -> str:
    """``pods`` pods on each of ``nodes`` named nodes, all at once, living 5 minutes."""
    lines = ["time,node,event,pod"]
    for n in range(nodes):
        for p in range(pods):
            lines.append(f"{30 + p * 0.05:.2f},ip-10-0-{n}-9.ec2.internal,add,job-{p}")
            lines.append(f"{330 + p * 0.05:.2f},ip-10-0-{n}-9.ec2.internal,del,job-{p}")
    return "\n".join(lines) + "\n"


def test_full_nodes_give_no_recommendation_exit_1_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "full.csv"
    trace.write_text(full_trace(2, 20))  # 20 pods a node; a t2.medium holds 15
    code, out = cli(["recommend", "--trace", str(trace), "--instance-type", "t2.medium",
                     "--no-progress", "--candidate", "WARM_IP_TARGET=2"])  # fmt: skip
    assert code == 1
    assert "NO RECOMMENDATION" in out and "recommended:" not in out
    assert "nodes full: node ip-10-0-0-9.ec2.internal has up to 20 pods at once" in out
    assert "holds 15 pod addresses (3 ENIs x 5)" in out
    assert "prefix delegation is unsupported on t2.medium" in out
    code, out = cli(["recommend", "--trace", str(trace), "--instance-type", "t2.medium",
                     "--no-progress", "--json", "--candidate", "WARM_IP_TARGET=2"])  # fmt: skip
    doc = json.loads(out)
    assert code == 1 and doc["met"] is False and doc["recommendation"] is None
    assert doc["closest"]["label"] in {"WARM_ENI_TARGET=1", "WARM_IP_TARGET=2"}
    assert any(r.startswith("nodes full") for r in doc["reasons"])


def test_default_sweep_skips_prefix_delegation_on_a_type_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    _code, out = cli(["recommend", "--trace", str(trace), "--instance-type", "t2.medium",
                     "--no-progress", "--json"])  # fmt: skip
    doc = json.loads(out)
    labels = [c["label"] for c in doc["candidates"]]
    assert not any("PREFIX" in label for label in labels)
    assert any("not a Nitro instance type" in s for s in doc["skipped"])
    assert "skipped ENABLE_PREFIX_DELEGATION=true" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("WARM_IP_TARGET=1000", "holds at most 56 pod addresses (4 ENIs x 14)"),
        ("ENABLE_PREFIX_DELEGATION=true", "not a Nitro instance type"),
    ],
)
def test_impossible_candidates_are_refused(
    spec: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    itype = "t2.medium" if "PREFIX" in spec else "m5.xlarge"
    code, out = cli(["recommend", "--trace", str(trace), "--instance-type", itype,
                     "--no-progress", "--candidate", spec])  # fmt: skip
    assert code == 2 and out == ""
    assert needle in capsys.readouterr().err


def test_ignored_knobs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    code, out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--candidate", "policy=adaptive,WARM_ENI_TARGET=2"])  # fmt: skip
    assert code == 0
    assert "WARM_ENI_TARGET is ignored by the adaptive policy" in capsys.readouterr().err
    assert "warning: WARM_ENI_TARGET is ignored by the adaptive policy" in out


def test_duplicate_candidates_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out = cli(["recommend", "--scenario", "burst", "--candidate", "WARM_IP_TARGET=1",
                      "--candidate", "WARM_IP_TARGET=1"])  # fmt: skip
    assert code == 2 and "given twice" in capsys.readouterr().err


def test_table_sets_each_candidate_against_the_default(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    code, out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--candidate", "WARM_IP_TARGET=1"])  # fmt: skip
    assert code == 0
    assert "2 settings;" in out
    assert "AGAINST THE DEFAULT" in out and "the default" in out
    assert "default WARM_ENI_TARGET=1: idle" in out and "trade-off:" in out
    assert "idle address-hours: addresses held on the nodes' ENIs but not assigned" in out
    code, out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--candidate", "WARM_ENI_TARGET=1"])  # fmt: skip
    assert "1 setting;" in out


def test_trade_off_words() -> None:
    base = cand("WARM_ENI_TARGET=1", 100, 0.0, 80)
    lean = cand("WARM_IP_TARGET=3", 20, 0.3, 3500)
    assert trade_off(lean, base) == (
        "80% fewer idle addresses for 44x the EC2 calls, p99 wait +0.30 s"
    )
    assert trade_off(cand("x", 50, 0.0, 40), base).startswith("better: 50% fewer idle")
    assert trade_off(cand("y", 200, 0.0, 80), base) == "worse: 2.0x the idle addresses"


def test_plot_is_checked_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    ran: list[int] = []
    monkeypatch.setattr("adapters.ipamctl.recommend.sweep", lambda *a, **k: ran.append(1))
    code, _out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--plot", str(tmp_path / "nowhere" / "rec.png")])  # fmt: skip
    assert code == 2 and not ran and "does not exist" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, _out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--plot", str(tmp_path / "rec.png")])  # fmt: skip
    assert code == 2 and not ran and "needs matplotlib" in capsys.readouterr().err


def test_a_failing_picture_still_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr("adapters.ipamctl.recommend.plot", broken)
    code, out = cli(["recommend", "--trace", str(trace), "--no-progress",
                     "--candidate", "WARM_IP_TARGET=1", "--plot", str(tmp_path / "r.png")])
    assert code == 1 and "recommended: " in out
    err = capsys.readouterr().err
    assert "failed: no fonts" in err and "Traceback" not in err


def test_help_describes_the_trace_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ipamctl_main(["recommend", "--help"])
    text = capsys.readouterr().out
    assert "time,node,event,pod" in text and "Unix epoch" in text and "kubectl-pods" in text


def test_no_regret_alternative_is_better_than_the_default_on_every_measure() -> None:
    default = Candidate("WARM_ENI_TARGET=1", "upstream", (), measures(100, 0.0, 80))
    lean = cand("WARM_IP_TARGET=2", 20, 0.7, 4000)
    safe = cand("WARM_IP_TARGET=5,MINIMUM_IP_TARGET=20", 70, 0.0, 80)
    worse = cand("WARM_ENI_TARGET=2", 150, 0.0, 140)
    assert no_regret([default, lean, safe, worse], default) is safe
    assert no_regret([default, lean, worse], default) is None
