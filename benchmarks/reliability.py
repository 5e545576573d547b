"""The reliability campaign in one run: crashes, cloud faults, fuzzing and the soak.

Runs each part as its own process (so a crash in one cannot hide in another), reads the JSON
object each prints last, and prints one JSON object last with the totals:

    {"kills_survived": N, "faults_injected": N, "fuzz_inputs": N, "soak_pairs": N,
     "invariant_violations": 0, "fault_classes": {...}, "parts": {...}}

``fault_classes``: runs and violations per class of the faults driven from outside the
daemon (``reliability_hostile.py``: disk full and read-only during ADD/DEL, a second daemon,
hostile files and paths, idle-connection floods, sandbox recreation, clock steps).

``invariant_violations`` counts every violation any part reports, plus one for each part
that fails to run or to print its figures: a part that cannot report has not proved anything.

    python benchmarks/reliability.py            # the full campaign (the issue's sizes)
    python benchmarks/reliability.py --quick    # minutes, not an hour: every part, small
    python benchmarks/reliability.py --only crash --only soak
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOTALS = ("kills_survived", "faults_injected", "fuzz_inputs", "soak_pairs", "invariant_violations")

# part -> (script, full-campaign arguments, quick arguments)
PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    "crash": ("reliability_crash.py", ["--kills", "200"], ["--kills", "20"]),
    "faults": ("reliability_faults.py", [], ["--quick"]),
    "fuzz": ("reliability_fuzz.py", ["--inputs", "1000000"], ["--inputs", "20000"]),
    "soak": ("soak.py", ["--pairs", "100000"], ["--pairs", "5000"]),
    "hostile": ("reliability_hostile.py", ["--rounds", "3"], ["--quick"]),
}


def run_part(name: str, quick: bool) -> dict[str, object]:
    script, full, short = PARTS[name]
    cmd = [sys.executable, os.path.join(HERE, script), *(short if quick else full)]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    began = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    seconds = round(time.monotonic() - began, 1)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        figures = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        figures = None
    if proc.returncode != 0 or not isinstance(figures, dict):
        print(f"== {name}: FAILED (exit {proc.returncode}, no figures)", file=sys.stderr)
        return {"ok": False, "exit": proc.returncode, "seconds": seconds,
                "invariant_violations": 1}  # fmt: skip
    print(f"== {name}: {seconds} s, {json.dumps(figures)}", file=sys.stderr, flush=True)
    return {"ok": True, "exit": 0, "seconds": seconds, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--only", action="append", choices=sorted(PARTS), help="run only these")
    args = parser.parse_args()
    parts = args.only or list(PARTS)
    results = {name: run_part(name, args.quick) for name in parts}
    totals = {key: 0 for key in TOTALS}
    for figures in results.values():
        for key in TOTALS:
            value = figures.get(key, 0)
            totals[key] += value if isinstance(value, int) else 0
    campaign = "quick" if args.quick else "full"
    classes = results.get("hostile", {}).get("classes", {})
    print(json.dumps({**totals, "campaign": campaign, "fault_classes": classes, "parts": results}))
    return 0 if totals["invariant_violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
