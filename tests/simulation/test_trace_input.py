"""Trace input the planner must not take blindly: absolute times, node names, duplicate or
impossible or ignored knobs, ``--plot`` checked first, progress by wall time."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from adapters.ipamctl.simulate import (
    ProgressBar,
    add_simulate_parser,
    check_settings,
    run_simulate,
)
from adapters.simulator.workload import REBASE_LEAD_S, TraceError, read_trace_text
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.limits import limits_for

EPOCH = 1_765_000_000  # 2025-12-06


def cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ipamctl")
    parser.add_argument("--json", action="store_true")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    return run_simulate(parser.parse_args(argv), out), out.getvalue()


def test_epoch_times_are_rebased_and_said() -> None:
    trace = read_trace_text(
        f"{EPOCH + 10},node-a,add,x\n{EPOCH + 70},node-a,del,x\n{EPOCH + 12},node-b,add,y\n"
    )
    assert [e.time for e in trace.events] == [REBASE_LEAD_S, REBASE_LEAD_S + 2, REBASE_LEAD_S + 60]
    assert trace.rebased_by == EPOCH + 10 - REBASE_LEAD_S


def test_small_times_are_kept() -> None:
    trace = read_trace_text("5,0,add,x\n")
    assert trace.events[0].time == 5.0 and trace.rebased_by == 0.0


def test_iso_times_and_node_names() -> None:
    trace = read_trace_text(
        '{"time": "2026-12-07T10:00:00Z", "node": "ip-10-0-1-7.ec2.internal", '
        '"event": "add", "pod": "web"}\n'
        '{"time": "2026-12-07T10:00:30+00:00", "node": "ip-10-0-2-9.ec2.internal", '
        '"event": "add", "pod": "web"}\n'
    )
    assert trace.node_names == ("ip-10-0-1-7.ec2.internal", "ip-10-0-2-9.ec2.internal")
    assert [(e.time, e.node) for e in trace.events] == [(30.0, 0), (60.0, 1)]


def test_integer_nodes_stay_indices() -> None:
    trace = read_trace_text("1,3,add,x\n")
    assert trace.events[0].node == 3 and trace.nodes == 4


@pytest.mark.parametrize("node", ["-1", ""])
def test_bad_node_is_refused(node: str) -> None:
    with pytest.raises(TraceError, match="neither an integer >= 0 nor a name"):
        read_trace_text(f"1,{node},add,x\n")


def test_cli_epoch_trace_with_node_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.csv"
    path.write_text("time,node,event,pod\n"
                    f"{EPOCH},ip-10-0-1-7.ec2.internal,add,web-1\n"
                    f"{EPOCH + 5},ip-10-0-2-9.ec2.internal,add,web-2\n"
                    f"{EPOCH + 600},ip-10-0-1-7.ec2.internal,del,web-1\n")  # fmt: skip
    code, out = cli(["--json", "simulate", "--trace", str(path), "--no-progress"])
    assert code == 0
    doc = json.loads(out)
    assert doc["measures"]["nodes"] == 2
    assert doc["measures"]["duration_s"] == 600 + REBASE_LEAD_S + 60
    assert doc["trace_rebased_by_s"] == EPOCH - REBASE_LEAD_S
    assert "times are absolute" in capsys.readouterr().err


def test_duplicate_knobs_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(["simulate", "--scenario", "burst", "--no-progress",
                   "--set", "WARM_IP_TARGET=3", "--set", "warm_ip_target=5"])  # fmt: skip
    assert code == 2 and "WARM_IP_TARGET is given twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--set", "WARM_IP_TARGET=1000"], "holds at most 56 pod addresses (4 ENIs x 14)"),
        (["--set", "MINIMUM_IP_TARGET=57"], "MINIMUM_IP_TARGET=57"),
        (["--instance-type", "t2.medium", "--set", "ENABLE_PREFIX_DELEGATION=true"],
         "t2.medium is not a Nitro instance type"),
    ],
)  # fmt: skip
def test_impossible_settings_are_refused(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(["simulate", "--scenario", "burst", "--no-progress", *argv])
    assert code == 2 and out == ""
    assert needle in capsys.readouterr().err


def test_ignored_knobs_are_warned(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(["simulate", "--scenario", "burst", "--nodes", "1", "--duration", "120",
                   "--no-progress", "--policy", "adaptive", "--set", "WARM_ENI_TARGET=2"])
    assert code == 0
    assert "warning: WARM_ENI_TARGET is ignored by the adaptive policy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pool", "given", "needle"),
    [
        (PoolConfig(warm_ip_target=3, warm_eni_target=2), {"WARM_IP_TARGET", "WARM_ENI_TARGET"},
         "WARM_ENI_TARGET is ignored when WARM_IP_TARGET"),
        (PoolConfig(warm_prefix_target=2), {"WARM_PREFIX_TARGET"},
         "WARM_PREFIX_TARGET is ignored without ENABLE_PREFIX_DELEGATION"),
        (PoolConfig(policy=PolicyName.ADAPTIVE, warm_prefix_target=2), {"WARM_PREFIX_TARGET"},
         "ignored by the adaptive policy"),
    ],
)  # fmt: skip
def test_check_settings_names_ignored_knobs(pool: PoolConfig, given: set[str],
                                            needle: str) -> None:  # fmt: skip
    impossible, ignored = check_settings(pool, given, limits_for("m5.xlarge"))
    assert impossible == [] and any(needle in w for w in ignored)


def test_plot_checked_before_the_run_and_table_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(["simulate", "--scenario", "burst", "--no-progress",
                     "--plot", str(tmp_path / "missing" / "sim.png")])  # fmt: skip
    assert code == 2 and out == "" and "does not exist" in capsys.readouterr().err
    code, out = cli(["simulate", "--scenario", "burst", "--no-progress",
                     "--plot", str(tmp_path / "sim.txt")])  # fmt: skip
    assert code == 2 and "PNG" in capsys.readouterr().err


def test_progress_is_drawn_by_wall_time_not_simulated_time() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, every_s=0.5, wall=lambda: now[0])
    for k in range(1, 1000):  # many calls within 0.1 s of wall time: nothing drawn
        bar(k * 1e6, 1.7e9, None)
    assert stream.getvalue() == ""
    now[0] = 0.6
    bar(1.0e9, 1.7e9, None)
    assert "59%" in stream.getvalue()
    now[0] = 0.7
    bar(1.7e9, 1.7e9, None)  # the end is always drawn
    assert stream.getvalue().endswith("\n") and "100%" in stream.getvalue()


def test_table_defines_idle_address_hours() -> None:
    code, out = cli(["simulate", "--scenario", "burst", "--nodes", "1", "--duration", "120",
                     "--no-progress"])  # fmt: skip
    assert code == 0 and "idle address-hours: addresses held on the nodes' ENIs" in out


def test_a_small_subnet_runs_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(["--json", "simulate", "--scenario", "burst", "--nodes", "4",
                     "--duration", "600", "--subnet-size", "/26", "--nodes-per-subnet", "4",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    m = json.loads(out)["measures"]
    assert m["failed_effects"].get("subnet_full", 0) > 0 and m["pods_over_threshold"] > 0
    assert m["subnet_peak_fraction"] > 0.7  # what the ENIs took; a whole ENI no longer fits


@pytest.mark.parametrize("size", ["/15", "/29", "big"])
def test_bad_subnet_size_is_refused(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(["simulate", "--scenario", "burst", "--subnet-size", size, "--no-progress"])
    assert code == 2 and "--subnet-size" in capsys.readouterr().err


def test_recommend_says_the_subnets_are_full() -> None:
    from adapters.ipamctl.main import main as ipamctl_main

    out = io.StringIO()
    code = ipamctl_main(["recommend", "--scenario", "burst", "--nodes", "4", "--duration",
                         "600", "--subnet-size", "/26", "--nodes-per-subnet", "4",
                         "--no-progress", "--candidate", "WARM_IP_TARGET=2"], out)  # fmt: skip
    text = out.getvalue()
    assert code == 1 and "NO RECOMMENDATION" in text
    assert "subnets full" in text and "InsufficientFreeAddressesInSubnet" in text


def test_metadata_lag_delays_a_new_enis_addresses(tmp_path: Path) -> None:
    path = tmp_path / "burst.csv"
    path.write_text("".join(f"{30 + i * 0.01:.2f},0,add,p{i}\n" for i in range(40)))

    def max_wait(lag: str) -> float:
        code, out = cli(["--json", "simulate", "--trace", str(path), "--metadata-lag", lag,
                         "--no-progress"])  # fmt: skip
        assert code == 0
        return float(json.loads(out)["measures"]["wait_max_s"])

    # 40 pods at once outgrow the warm ENIs: the last wait for a new ENI, then its metadata.
    # The fake cloud counts the lag from the ENI's creation, so the attach's own latency
    # overlaps it: a new ENI is usable at max(attached, created + lag).
    no_lag, lag = max_wait("0"), max_wait("1.5")
    assert no_lag > 0
    assert lag >= 1.5 > no_lag
