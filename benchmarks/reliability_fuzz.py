"""Fuzz the plugin's config/env parsing, the daemon's socket reading and the checkpoint decoder.

Targets and their contracts are in ``benchmarks/fuzz_targets.py``. Each target runs in a
worker process of its own: with atheris installed (``pip install atheris``) a coverage-guided
libFuzzer run over the target's seeds and a token dictionary, else the deterministic mutator
of ``fuzz_targets``. Every input runs under a hang bound (``--hang-seconds``). A finding is
counted, its input saved under ``--findings`` and the run goes on.

Progress on stderr; the last line of stdout is one JSON object::

    {"fuzz_inputs": total, "fuzz_inputs_by_target": {...}, "invariant_violations": findings,
     "engine": "atheris"|"builtin", "inputs_per_s_by_target": {...},
     "max_input_ms_by_target": {...}, "seconds": ...}

    python benchmarks/reliability_fuzz.py --inputs 1000000            # deep run
    python benchmarks/reliability_fuzz.py --inputs 20000 --engine builtin --targets checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_NAMES = ("plugin", "server", "checkpoint")
PROGRESS_EVERY = 50_000


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


class _Stats:
    """Counts inputs and findings; written to a JSON file (atheris ends the process with a
    C-level exit, so the parent reads the figures from there)."""

    def __init__(self, target: str, path: str, findings_dir: str, total: int) -> None:
        self.target, self.path, self.findings_dir, self.total = target, path, findings_dir, total
        self.inputs = self.findings = 0
        self.max_input_s = 0.0
        self.kinds: dict[str, int] = {}
        self.started = time.monotonic()

    def record(self, data: bytes, finding: str | None, elapsed: float) -> None:
        self.inputs += 1
        self.max_input_s = max(self.max_input_s, elapsed)
        if finding is not None:
            self.findings += 1
            kind = finding.split(":", 1)[0] + ":" + finding.split(":", 2)[1][:60]
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if self.kinds[kind] <= 5:
                name = f"{self.target}-{self.findings}"
                with open(os.path.join(self.findings_dir, name), "wb") as f:
                    f.write(data)
                print(f"[{self.target}] FINDING {name}: {finding[:300]}", file=sys.stderr)
        if self.inputs % PROGRESS_EVERY == 0 or self.inputs == self.total:
            self.write()
            rate = self.inputs / max(time.monotonic() - self.started, 1e-9)
            print(
                f"[{self.target}] {self.inputs}/{self.total} inputs, {rate:.0f}/s, "
                f"{self.findings} findings",
                file=sys.stderr,
                flush=True,
            )

    def write(self) -> None:
        doc = {
            "inputs": self.inputs,
            "findings": self.findings,
            "kinds": self.kinds,
            "seconds": time.monotonic() - self.started,
            "max_input_ms": round(self.max_input_s * 1000, 3),
        }
        with open(self.path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(self.path + ".tmp", self.path)


def worker(args: argparse.Namespace) -> int:
    """One target in this process."""
    sys.path.insert(0, ROOT)
    use_atheris = args.engine == "atheris"
    if use_atheris:
        import atheris

        with atheris.instrument_imports(include=["adapters", "ipamcore", "benchmarks"]):
            from benchmarks import fuzz_targets as ft
    else:
        from benchmarks import fuzz_targets as ft
    target = ft.TARGETS[args.worker]()
    stats = _Stats(args.worker, args.stats, args.findings, args.inputs)

    def one(data: bytes) -> None:
        started = time.perf_counter()
        finding = ft.run_one(target, data, args.hang_seconds)
        stats.record(data, finding, time.perf_counter() - started)

    try:
        if not use_atheris:
            for data in ft.inputs(args.worker, args.inputs, seed=args.seed):
                one(data)
            stats.write()
            return 0
        corpus = os.path.join(args.work, f"corpus-{args.worker}")  # the parent removes it
        os.makedirs(corpus, exist_ok=True)
        for i, seed in enumerate(ft.SEEDS[args.worker]()):
            with open(os.path.join(corpus, f"seed-{i}"), "wb") as f:
                f.write(seed)
        tokens = os.path.join(args.work, f"dict-{args.worker}")
        with open(tokens, "w") as f:
            for token in ft.TOKENS:
                if len(token) <= 64:
                    f.write('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n')
        atheris.Setup(
            [
                sys.argv[0], corpus, f"-dict={tokens}", f"-runs={args.inputs}",
                f"-seed={args.seed + 1}", "-max_len=8192", "-rss_limit_mb=4096",
                "-print_final_stats=1", "-reload=0",
            ],
            one,
        )  # fmt: skip
        atheris.Fuzz()  # exits the process when the runs are done
    finally:
        target.close()
    return 0


def _remove_sandboxes(pid: int) -> None:
    """The plugin target's sandbox of worker ``pid`` (atheris exits without cleaning up)."""
    for base in ("/dev/shm", tempfile.gettempdir()):
        for path in glob.glob(os.path.join(base, f"ipamcore-fuzz-{pid}-*")):
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", type=int, default=20_000, help="inputs per target")
    ap.add_argument("--targets", default=",".join(TARGET_NAMES))
    ap.add_argument("--engine", choices=("auto", "atheris", "builtin"), default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-seconds", type=float, default=2.0, help="per-input time bound")
    ap.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="targets fuzzed at once"
    )
    ap.add_argument("--findings", default="", help="where finding inputs are saved")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine == "auto":
        args.engine = "atheris" if _have_atheris() else "builtin"
    if args.worker:
        return worker(args)

    targets = [t for t in args.targets.split(",") if t]
    work = tempfile.mkdtemp(prefix="reliability-fuzz-")
    findings_dir = args.findings or os.path.join(work, "findings")
    os.makedirs(findings_dir, exist_ok=True)
    print(f"engine {args.engine}; findings saved in {findings_dir}", file=sys.stderr)
    started = time.monotonic()
    pending = list(targets)
    running: dict[str, subprocess.Popen[bytes]] = {}
    codes: dict[str, int] = {}
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            name = pending.pop(0)
            cmd = [
                sys.executable, os.path.abspath(__file__), "--worker", name,
                "--stats", os.path.join(work, f"{name}.json"), "--findings", findings_dir,
                "--work", work,
                "--inputs", str(args.inputs), "--engine", args.engine, "--seed", str(args.seed),
                "--hang-seconds", str(args.hang_seconds),
            ]  # fmt: skip
            running[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, cwd=work)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                codes[name] = proc.returncode
                del running[name]
                _remove_sandboxes(proc.pid)
        time.sleep(0.2)

    for name in targets:  # atheris' working corpus and dictionary
        shutil.rmtree(os.path.join(work, f"corpus-{name}"), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(work, f"dict-{name}"))
    by_target: dict[str, int] = {}
    rates: dict[str, float] = {}
    max_ms: dict[str, float] = {}
    kinds: dict[str, dict[str, int]] = {}
    violations = 0
    for name in targets:
        try:
            with open(os.path.join(work, f"{name}.json")) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {"inputs": 0, "findings": 0, "kinds": {}, "seconds": 0, "max_input_ms": 0}
        by_target[name] = doc["inputs"]
        rates[name] = round(doc["inputs"] / max(doc["seconds"], 1e-9))
        max_ms[name] = doc["max_input_ms"]
        kinds[name] = doc["kinds"]
        violations += doc["findings"]
        if doc["inputs"] < args.inputs:  # the worker died early: that is a finding too
            died = f"[{name}] worker exited {codes.get(name)} after {doc['inputs']} inputs"
            print(died, file=sys.stderr)
            violations += 1
    result = {
        "fuzz_inputs": sum(by_target.values()),
        "fuzz_inputs_by_target": by_target,
        "invariant_violations": violations,
        "engine": args.engine,
        "inputs_per_s_by_target": rates,
        "max_input_ms_by_target": max_ms,
        "violation_kinds": kinds,
        "hang_bound_s": args.hang_seconds,
        "seconds": round(time.monotonic() - started, 1),
    }
    if not args.findings and not os.listdir(findings_dir):
        shutil.rmtree(work, ignore_errors=True)  # nothing worth keeping
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
