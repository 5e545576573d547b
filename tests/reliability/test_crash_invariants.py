"""The invariant checker itself: each check fires on the violation it names."""

from __future__ import annotations

import pytest

from backends.steps import no_step
from tests.rigs.crashpoints import CrashPoint, parse_crash_point, step_from_env
from tests.rigs.reliability.invariants import Ledger


def kinds(ledger: Ledger) -> list[str]:
    return [v.kind for v in ledger.violations]


def test_a_clean_history_has_no_violation() -> None:
    ledger = Ledger(cooldown_s=10)
    ledger.add_acked("a", "10.0.0.5", 1.0)
    ledger.del_sent("a", 2.0)
    ledger.del_acked("a")
    ledger.add_acked("b", "10.0.0.5", 12.5)
    assert ledger.check_restored({"b": "10.0.0.5"}) == []
    assert ledger.check_settled({"b": "10.0.0.5"}) == []
    assert kinds(ledger) == []


def test_reuse_within_the_cooldown_is_flagged_across_keys() -> None:
    ledger = Ledger(cooldown_s=10)
    ledger.add_acked("a", "10.0.0.5", 1.0)
    ledger.del_sent("a", 2.0)
    ledger.add_acked("b", "10.0.0.5", 11.9)
    assert kinds(ledger) == ["cooldown"]


def test_an_address_given_twice_is_flagged() -> None:
    ledger = Ledger(cooldown_s=10)
    ledger.add_acked("a", "10.0.0.5", 1.0)
    ledger.add_acked("b", "10.0.0.5", 2.0)
    assert "double" in kinds(ledger)
    assert [v.kind for v in ledger.check_restored({"a": "10.0.0.5", "b": "10.0.0.5"})] == ["double"]


def test_a_lost_acknowledged_allocation_is_flagged() -> None:
    ledger = Ledger(cooldown_s=10)
    ledger.add_acked("a", "10.0.0.5", 1.0)
    assert [v.kind for v in ledger.check_restored({})] == ["acked-lost"]
    assert [v.kind for v in ledger.check_restored({"a": "10.0.0.6"})] == ["acked-lost"]


def test_unknown_or_unsettled_allocations_are_leaks() -> None:
    ledger = Ledger(cooldown_s=10)
    ledger.in_doubt_now("x")  # an ADD that got no answer may be held after a restart
    assert ledger.check_restored({"x": "10.0.0.7"}) == []
    assert [v.kind for v in ledger.check_restored({"y": "10.0.0.8"})] == ["leaked"]
    # the runtime DELs what is in doubt; if the daemon still holds it, it leaked
    ledger.del_sent("x", 5.0, "10.0.0.7")
    ledger.del_acked("x")
    assert [v.kind for v in ledger.check_settled({"x": "10.0.0.7"})] == ["leaked"]
    assert ledger.given_back["10.0.0.7"] == 5.0


def test_eni_checks() -> None:
    ledger = Ledger(cooldown_s=10)
    found = ledger.check_enis(["eni-1"], attached=["eni-1", "eni-2"], available=["eni-3"])
    assert sorted(v.kind for v in found) == ["eni-leaked", "eni-unknown"]
    assert ledger.violations == []  # the caller records after its retries
    ledger.record(found)
    assert len(ledger.violations) == 2


def test_crash_points_parse_and_validate() -> None:
    point = parse_crash_point("checkpoint.renamed:3")
    assert (point.name, point.hit) == ("checkpoint.renamed", 3)
    assert parse_crash_point("eni.created").hit == 1
    for bad in ("nope", "checkpoint.renamed:x", "checkpoint.renamed:0"):
        with pytest.raises(ValueError):
            parse_crash_point(bad)
    point = CrashPoint("eni.attached", 2)
    point("eni.created")
    point("eni.attached")  # first hit of two: nothing happens


def test_the_crash_point_setting_names_what_it_accepts() -> None:
    point = step_from_env({"IPAMD_CRASH_POINT": "eni.recorded"})
    assert isinstance(point, CrashPoint) and point.name == "eni.recorded"
    assert step_from_env({}) is no_step
    with pytest.raises(ValueError, match=r"unknown crash point 'checkpoint\.nowhere'"):
        step_from_env({"IPAMD_CRASH_POINT": "checkpoint.nowhere"})
