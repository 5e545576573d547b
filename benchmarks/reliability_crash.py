"""Crash campaign: SIGKILL a real vpc-ipamd (moto cloud, real checkpoint file) ``--kills``
times at seeded random moments of mixed ADD/DEL/policy/reconcile work, restart it each time
and check the invariants (tests/rigs/reliability/invariants.py); then kill it at every step of
a checkpoint write (during an ADD and during a DEL), of the journaled store's append and
compaction (``IPAMD_CHECKPOINT_JOURNAL``, the default; the random kills run with it) and of an
ENI creation.

Progress goes to stderr; the last line of stdout is one JSON object with
``kills_survived`` (every kill after which the daemon restarted and the checks ran) and
``invariant_violations`` (must be 0), medians of the restart time and the per-kind counts.

    python benchmarks/reliability_crash.py --kills 200 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from adapters import protocol as p
from tests.rigs.crashpoints import ENI_STEPS
from tests.rigs.reliability.crash_campaign import (
    checkpoint_step_kill,
    checkpoint_steps,
    crash_node,
    eni_step_kill,
    journal_step_kill,
    journal_steps,
    median,
    random_kills,
)
from tests.rigs.reliability.invariants import Ledger

COOLDOWN_S = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="random kills (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-steps", action="store_true", help="skip the crash-point kills")
    args = parser.parse_args()

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    began = time.monotonic()
    ledger = Ledger(cooldown_s=COOLDOWN_S)
    with crash_node(cooldown_s=COOLDOWN_S) as node:
        report = random_kills(node, ledger, args.kills, args.seed, progress)
        step_kills = 0
        if not args.no_steps:
            for i, step in enumerate(checkpoint_steps()):
                for op in (p.OP_ADD, p.OP_DEL):
                    out = checkpoint_step_kill(node, ledger, step, op, f"b{i}{op}")
                    step_kills += 1
                    progress(f"{step} during {op}: took effect {out.survived}, "
                             f"violations {len(out.violations)}")  # fmt: skip
            for i, step in enumerate(journal_steps()):
                for op in (p.OP_ADD, p.OP_DEL):
                    out = journal_step_kill(node, ledger, step, op, f"b{i}{op}")
                    step_kills += 1
                    progress(f"{step} during {op}: took effect {out.survived}, "
                             f"violations {len(out.violations)}")  # fmt: skip
    eni_kills = 0
    # The ENI steps run on a node of their own, so they keep a ledger of their own: the first
    # node's pods are not on it (sharing one ledger reported them all as lost).
    eni_ledger = Ledger(cooldown_s=COOLDOWN_S)
    if not args.no_steps:
        with crash_node(
            cooldown_s=COOLDOWN_S, instance_type="c5.4xlarge", extra_env={"MAX_ENI": ""}
        ) as node:
            for step in ENI_STEPS:
                eni = eni_step_kill(node, eni_ledger, step)
                eni_kills += 1
                progress(f"{step}: left attached {len(eni.left_attached)}, available "
                         f"{len(eni.left_available)}, adopted {len(eni.adopted)}, left over "
                         f"{len(eni.still_there)}, violations {len(eni.violations)}")  # fmt: skip
    violations = [*ledger.violations, *eni_ledger.violations]
    kinds: dict[str, int] = {}
    for v in violations:
        kinds[v.kind] = kinds.get(v.kind, 0) + 1
    for v in violations[:20]:
        progress(f"VIOLATION {v.kind}: {v.detail}")
    print(f"random kills {report.kills}, checkpoint-step kills {step_kills}, ENI-step kills "
          f"{eni_kills}; restart median {median(report.restart_s):.2f}s; acked ADDs "
          f"{ledger.adds_acked}, acked DELs {ledger.dels_acked}")  # fmt: skip
    summary = {
        "kills_survived": report.kills + step_kills + eni_kills,
        "faults_injected": 0,
        "invariant_violations": len(violations),
        "random_kills": report.kills,
        "checkpoint_step_kills": step_kills,
        "eni_step_kills": eni_kills,
        "seed": args.seed,
        "restart_s_median": round(median(report.restart_s), 3),
        "kill_window_s_median": round(median(report.windows_s), 3),
        "adds_acked": ledger.adds_acked,
        "dels_acked": ledger.dels_acked,
        "violations_by_kind": kinds,
        "wall_s": round(time.monotonic() - began, 1),
    }
    print(json.dumps(summary))
    return 0 if not violations else 1


if __name__ == "__main__":
    sys.exit(main())
