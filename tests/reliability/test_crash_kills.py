"""SIGKILL a real vpc-ipamd (moto cloud, real checkpoint file) and restart it: random kills
during mixed work, kills at every step of a checkpoint write and of an ENI creation. The
full campaign (200+ kills) is ``benchmarks/reliability_crash.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from adapters import protocol as p
from backends.steps import CHECKPOINT_STEPS, ENI_STEPS, JOURNAL_STEPS
from tests.rigs.localnode import LocalNode
from tests.rigs.reliability.crash_campaign import (
    checkpoint_step_kill,
    crash_node,
    eni_step_kill,
    journal_step_kill,
    random_kills,
)
from tests.rigs.reliability.invariants import Ledger

COOLDOWN_S = 8
RANDOM_KILLS = int(os.environ.get("CRASH_KILLS", "8"))
SEED = int(os.environ.get("CRASH_SEED", "7"))


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with crash_node(cooldown_s=COOLDOWN_S) as n:
        yield n


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger(cooldown_s=COOLDOWN_S)


def test_random_kills_keep_every_invariant(node: LocalNode, ledger: Ledger) -> None:
    report = random_kills(node, ledger, RANDOM_KILLS, SEED)
    assert report.kills == RANDOM_KILLS
    assert report.violations == []
    assert ledger.adds_acked > RANDOM_KILLS, "too little work between kills to mean much"


@pytest.mark.parametrize("op", [p.OP_ADD, p.OP_DEL])
@pytest.mark.parametrize("step", CHECKPOINT_STEPS)
def test_kill_at_each_checkpoint_step(node: LocalNode, ledger: Ledger, step: str, op: str) -> None:
    out = checkpoint_step_kill(node, ledger, step, op, f"{CHECKPOINT_STEPS.index(step)}{op}")
    # Before the rename the old file is the checkpoint; from the rename on, the new one.
    took_effect = CHECKPOINT_STEPS.index(step) >= CHECKPOINT_STEPS.index("checkpoint.renamed")
    assert out.survived is took_effect
    assert out.stale_temps == [], "the restart must remove the temporary file"
    assert out.violations == []


@pytest.mark.parametrize("op", [p.OP_ADD, p.OP_DEL])
@pytest.mark.parametrize("step", JOURNAL_STEPS)
def test_kill_at_each_journal_step(node: LocalNode, ledger: Ledger, step: str, op: str) -> None:
    out = journal_step_kill(node, ledger, step, op, f"{JOURNAL_STEPS.index(step)}{op}")
    # Which commit the kill hits depends on whether the start-up wrote a record: what must
    # hold is the ledger (acknowledged ADDs kept, nothing twice, nothing unknown held).
    assert out.stale_temps == [], "the restart must remove the temporary file"
    assert out.violations == []


@pytest.fixture(scope="module")
def big_node() -> Iterator[LocalNode]:
    # room for an ENI more at every step (c5.4xlarge: 8 ENIs)
    with crash_node(
        cooldown_s=COOLDOWN_S, instance_type="c5.4xlarge", extra_env={"MAX_ENI": ""}
    ) as n:
        yield n


@pytest.fixture(scope="module")
def big_node_without_delete_on_termination() -> Iterator[LocalNode]:
    env = {"MAX_ENI": "", "ENI_DELETE_ON_TERMINATION": "false"}
    with crash_node(cooldown_s=COOLDOWN_S, instance_type="c5.4xlarge", extra_env=env) as n:
        yield n


@pytest.mark.parametrize("step", ENI_STEPS)
def test_kill_at_each_eni_creation_step(big_node: LocalNode, step: str) -> None:
    check_eni_step_kill(big_node, step)


@pytest.mark.parametrize("step", ENI_STEPS)
def test_kill_at_each_eni_creation_step_without_delete_on_termination(
    big_node_without_delete_on_termination: LocalNode, step: str
) -> None:
    """Without the Modify call "eni.configured" follows the attach at once; a kill between
    create and attach leaves an unattached ENI tagged for this instance either way, which
    the start sweep frees."""
    check_eni_step_kill(big_node_without_delete_on_termination, step)


def check_eni_step_kill(node: LocalNode, step: str) -> None:
    ledger = Ledger(cooldown_s=COOLDOWN_S)
    out = eni_step_kill(node, ledger, step)
    assert out.violations == []
    assert out.still_there == [], "an ENI left available after the restart leaked"
    if step == "eni.created":
        assert out.left_available, "the kill should have left an unattached ENI"
        assert "leaked ENI freed at start" in out.log
    else:
        assert out.left_attached, "the kill should have left an attached ENI"
        assert out.adopted == out.left_attached
