"""Issue 16, "the first thing a new user runs": ``./dev`` and the demo."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.rigs import demo
from tests.rigs.cni_runtime import CniError
from tests.rigs.localnode import Pod, local_node

ROOT = Path(__file__).resolve().parents[2]


def test_dev_with_an_unknown_command_fails_with_the_usage() -> None:
    done = subprocess.run([str(ROOT / "dev"), "nonsense"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown command" in done.stderr and "usage: ./dev" in done.stderr


def test_dev_test_runs_the_ci_profile_and_ci_venv_is_ignored() -> None:
    dev = (ROOT / "dev").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}" in dev
    assert "HYPOTHESIS_PROFILE=ci" in ci
    assert ".ci-venv/" in (ROOT / ".gitignore").read_text().splitlines()


class FakeNode:
    """What the demo uses of a LocalNode, scripted."""

    def __init__(self, answers: list[Any], ping: bool = True) -> None:
        self.answers = answers
        self.instance_id, self.real, self.hotplug = "i-1", True, None
        self.pods: dict[str, Pod] = {}
        self.forgotten: list[str] = []
        self._ping = ping

    def add_pod(self, name: str) -> Pod:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        pod = Pod(name, f"c{name}", f"/var/run/netns/{name}", {"ips": [{"address": answer}]})
        self.pods[name] = pod
        return pod

    def forget_netns(self, name: str) -> None:
        self.forgotten.append(name)

    def ipamctl(self, *_args: str) -> str:
        return ""

    def ping(self, _pod: Pod, _ip: str) -> bool:
        return self._ping

    def del_pod(self, name: str) -> None:
        self.pods.pop(name)


def try_again() -> CniError:
    return CniError("ADD", "p", {"code": 11, "msg": "add: ipamd: pool_empty", "details": "wait"})


def test_the_demo_retries_try_again_later_like_a_runtime() -> None:
    node = FakeNode([try_again(), try_again(), "10.0.0.9/32"])
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    pod = demo.add_like_a_runtime(node, "p", 60, sleep=sleep, now=lambda: clock[0])  # type: ignore[arg-type]
    assert pod.ip == "10.0.0.9" and slept == [0.5, 1.0] and node.forgotten == ["p", "p"]
    other = CniError("ADD", "p", {"code": 999, "msg": "boom"})
    with pytest.raises(demo.DemoFailed, match="boom"):
        demo.add_like_a_runtime(FakeNode([other]), "p", 60, sleep=sleep)  # type: ignore[arg-type]
    with pytest.raises(demo.DemoFailed):  # past the deadline
        demo.add_like_a_runtime(
            FakeNode([try_again()] * 10),
            "p",
            2,
            sleep=sleep,
            now=lambda: clock[0],  # type: ignore[arg-type]
        )


def test_a_failed_ping_fails_the_demo() -> None:
    node = FakeNode(["10.0.0.5/32", "10.0.0.6/32"], ping=False)
    args = argparse.Namespace(pods=2, add_deadline=10.0)
    with pytest.raises(demo.DemoFailed, match="ping"):
        demo.run(node, args)  # type: ignore[arg-type]


def test_the_work_directory_is_kept_when_something_fails() -> None:
    workdir = ""
    with pytest.raises(RuntimeError), local_node(real=False, keep_workdir_on_error=True) as node:
        workdir = node.workdir
        raise RuntimeError("boom")
    try:
        assert os.path.isdir(workdir) and os.path.exists(os.path.join(workdir, "ipamd.log"))
    finally:
        subprocess.run(["rm", "-rf", workdir], check=False)
    with local_node(real=False, keep_workdir_on_error=True) as node:
        workdir = node.workdir
    assert not os.path.exists(workdir)
