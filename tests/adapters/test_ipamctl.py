"""ipamctl: tables, --json, exit codes (0 ok, 1 problem/unreachable, 2 usage)."""

from __future__ import annotations

import asyncio
import io
import json
import os

import pytest

from adapters.ipamctl.doctor import check_versions
from adapters.ipamctl.main import main
from adapters.ipamd.daemon import Daemon
from tests.adapters.harness import World, add_request, call


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def arun(*argv: str) -> tuple[int, str]:
    return await asyncio.to_thread(run, *argv)


@pytest.mark.parametrize(("itype", "figure"), [("m5.large", 29), ("c5.4xlarge", 234)])
def test_max_pods(itype: str, figure: int) -> None:
    assert run("max-pods", itype) == (0, f"{figure}\n")


def test_max_pods_prefix_delegation_and_json() -> None:
    code, out = run("--json", "max-pods", "m5.large", "--prefix-delegation")
    assert code == 0 and json.loads(out)["max_pods"] == 3 * 9 * 16 + 2


def test_max_pods_unknown_type_is_a_problem() -> None:
    assert run("max-pods", "z9.huge")[0] == 1


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        run("frobnicate")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        run("max-pods")
    assert info.value.code == 2


def test_unreachable_daemon_exits_1() -> None:
    assert run("--introspection", "http://127.0.0.1:9", "--timeout", "0.5", "stats")[0] == 1


async def test_checkpoint_reads_the_file(world: World, daemon: Daemon) -> None:
    await call(world.socket_path, add_request(1))
    code, out = await arun("--json", "checkpoint", "--path", world.checkpoint_path)
    assert code == 0
    assert [a["containerID"] for a in json.loads(out)["allocations"]] == ["c0001"]
    code, out = await arun("checkpoint", "--path", world.checkpoint_path)
    assert code == 0 and "pod-1" in out and "1 allocations" in out


def test_checkpoint_corrupt_or_missing_is_a_problem(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "ipam.json")
    assert run("checkpoint", "--path", path)[0] == 1
    with open(path, "w") as f:
        f.write("{")
    assert run("checkpoint", "--path", path)[0] == 1
    with open(path) as f:
        assert f.read() == "{"  # read-only: never moved aside


async def test_enis_pods_stats_env(world: World, daemon: Daemon) -> None:
    await call(world.socket_path, add_request(1))
    assert daemon.introspection is not None
    url = f"http://127.0.0.1:{daemon.introspection.port}"
    code, out = await arun("--introspection", url, "enis")
    assert code == 0 and out.startswith("ENI") and "1 assigned" in out
    code, out = await arun("--introspection", url, "pods")
    assert code == 0 and "pod-1" in out
    code, out = await arun("--introspection", url, "--json", "stats")
    assert code == 0 and json.loads(out)["assigned"] == 1
    code, out = await arun("--introspection", url, "env")
    assert code == 0 and "IPAMD_CLOUD" in out


async def test_doctor(world: World, daemon: Daemon, tmp_path: object) -> None:
    assert daemon.introspection is not None
    proc = os.path.join(str(tmp_path), "proc")
    os.makedirs(os.path.join(proc, "sys/net/ipv4/conf/all"))
    with open(os.path.join(proc, "sys/net/ipv4/ip_forward"), "w") as f:
        f.write("1\n")
    with open(os.path.join(proc, "sys/net/ipv4/conf/all/rp_filter"), "w") as f:
        f.write("2\n")
    common = ["--introspection", f"http://127.0.0.1:{daemon.introspection.port}", "--json",
              "doctor", "--socket", world.socket_path, "--checkpoint", world.checkpoint_path,
              "--proc-root", proc]  # fmt: skip
    code, out = await arun(*common)
    assert code == 0, out
    assert {c["name"]: c["status"] for c in json.loads(out)["checks"]}["socket"] == "ok"
    with open(os.path.join(proc, "sys/net/ipv4/ip_forward"), "w") as f:
        f.write("0\n")
    code, out = await arun(*common)
    assert code == 1
    assert {c["name"]: c["status"] for c in json.loads(out)["checks"]}["ip_forward"] == "fail"
    with open(os.path.join(proc, "sys/net/ipv4/ip_forward"), "w") as f:
        f.write("1\n")
    code, out = await arun(*common, "--socket", "/nonexistent.sock")
    assert code == 1
    assert {c["name"]: c["status"] for c in json.loads(out)["checks"]}["socket"] == "fail"


def test_version_table() -> None:
    assert check_versions("1.31", "v1.21.1-eksbuild.8").status == "ok"
    assert check_versions("v1.35.0", "v1.21.1-eksbuild.7").status == "fail"
    assert check_versions("1.29", "v1.20.4").status == "fail"
    assert check_versions("1.29", "v1.22.0").status == "ok"
    assert check_versions("1.28", "v1.18.0").status == "warn"


# ---------------------------------------------------------------- issue 16, smaller things


async def test_pods_shows_every_allocation_with_a_container_tag(
    world: World, daemon: Daemon
) -> None:
    assert daemon.introspection is not None
    url = f"http://127.0.0.1:{daemon.introspection.port}"
    # Two sandboxes of one pod, and a pod without Kubernetes names: three rows.
    for n, name in ((1, "web-0"), (2, "web-0"), (3, "")):
        reply = await call(world.socket_path, add_request(n, pod_name=name, pod_namespace=""))
        assert reply.ok
    code, out = await arun("--introspection", url, "--json", "pods")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 3
    tags = {row["Container"] for row in rows.values()}
    assert len(tags) == 3 and all(len(t) == 12 for t in tags)
    assert not any(f"c000{n}" in out for n in (1, 2, 3))  # the ids themselves stay hidden
    code, out = await arun("--introspection", url, "pods")
    assert code == 0 and out.count("web-0") == 2 and "CONTAINER" in out


async def test_a_closed_pipe_is_not_a_traceback(world: World, daemon: Daemon) -> None:
    import subprocess
    import sys

    assert daemon.introspection is not None
    read_end, write_end = os.pipe()
    os.close(read_end)  # ``| head`` that has already exited
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "adapters.ipamctl.main", "--introspection",
             f"http://127.0.0.1:{daemon.introspection.port}", "env"],
            stdout=write_end, stderr=subprocess.PIPE, timeout=30,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert b"Traceback" not in done.stderr and done.returncode == 0, done.stderr


async def test_doctor_checks_the_daemons_configured_paths(
    world: World, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert daemon.introspection is not None
    for name in ("IPAMD_SOCKET", "AWS_VPC_K8S_CNI_BACKING_STORE"):
        monkeypatch.delenv(name, raising=False)
    _code, out = await arun(
        "--introspection", f"http://127.0.0.1:{daemon.introspection.port}", "--json", "doctor"
    )
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["socket"]["status"] == "ok", checks["socket"]
    assert world.socket_path in checks["socket"]["detail"]
    assert world.checkpoint_path in checks["checkpoint"]["detail"]
