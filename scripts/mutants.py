#!/usr/bin/env python3
"""`make mutants`: mutation testing of charrnn's core modules with mutmut, and its survivors.

mutmut (configured in pyproject.toml, [tool.mutmut]) makes small changes to the code, one at a
time ("mutants": `<` for `<=`, 1 for 0, a string for another...), and runs the fast tests that
cover the changed function against each. A mutant that no test notices "survived": either the
tests miss a behaviour, or the change is equivalent (the code does the same thing). The
equivalent ones are listed, with why, in scripts/mutants_equivalent.txt; this script prints the
other survivors, per module, with the line each changed. A "timeout" is a mutant that made a test
hang (training that never ends): noticed, as a hanging test would be, but listed.

    python scripts/mutants.py                 # every core module (about an hour on 2 cores)
    python scripts/mutants.py schedule step   # some of them (MODULES= in make)
    python scripts/mutants.py --show NAME     # the diff of one mutant (mutmut show NAME)
    python scripts/mutants.py --report        # the results of the last run again (also after Ctrl-C)

Each run starts afresh (mutants/ is deleted first), so what it prints is for the code as it is.
mutmut's own output goes to mutants/run.log. Exit status: 0 when no mutant survives but the
equivalent ones (timeouts count as caught), 1 otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = str(Path(sys.executable).parent / "mutmut")

# module -> (its file, the mutmut names of the functions to mutate)
MODULES = {
    "cells": ("charrnn/cells.py", ["charrnn.cells.*"]),
    "model": ("charrnn/model.py", ["charrnn.model.*"]),
    "batches": ("charrnn/data/batches.py", ["charrnn.data.batches.*"]),
    "vocab": ("charrnn/data/vocab.py", ["charrnn.data.vocab.*"]),
    # the pure sampling filters of generation (the generator itself is tested through the
    # engines and the CLI, too slow for this)
    "generate": (
        "charrnn/sample/generate.py",
        [f"charrnn.sample.generate.x_{f}__mutmut_*" for f in ("probabilities", "greedy", "draw")],
    ),
    "step": (  # one training step: in trainer.py since the mixins went
        "charrnn/training/trainer.py",
        [f"charrnn.training.trainer.xǁTrainerǁ{f}__mutmut_*" for f in ("train_step", "gradients")],
    ),
    "schedule": ("charrnn/training/schedule.py", ["charrnn.training.schedule.*"]),
    "checkpoint": ("charrnn/store/checkpoint.py", ["charrnn.store.checkpoint.*"]),
}
STATUS = {
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    None: "not checked",
}
EQUIVALENT = ROOT / "scripts" / "mutants_equivalent.txt"


def equivalents() -> dict[str, tuple[str, str]]:
    """name -> (the mutated line, why it is equivalent), from scripts/mutants_equivalent.txt:
    blocks of 'NAME', '    + LINE' and '    why: REASON'."""
    found, name, line = {}, None, None
    for raw in EQUIVALENT.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        if not raw.startswith(" "):
            name, line = raw.strip(), None
        elif raw.strip().startswith("+ "):
            line = raw.strip()[2:]
        elif raw.strip().startswith("why: ") and name:
            found[name] = (line or "", raw.strip()[5:])
    return found


def changed_line(name: str, path: str) -> str:
    """The line a mutant puts in (the first '+' line of its diff, as `mutmut show` prints it)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    shown = get_diff_for_mutant(name, path=path)
    plus = [line[1:].strip() for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return plus[0] if plus else "(a line removed)"


def results(path: str) -> dict[str, int | None]:
    meta = ROOT / "mutants" / (path + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def main() -> int:
    os.chdir(ROOT)  # (mutmut reads its files relative to the project)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(MODULES)} (default: all)")
    parser.add_argument("--show", metavar="NAME", help="print the diff of one mutant and stop")
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the results of the last run again (or of a run interrupted with Ctrl-C) without running",
    )
    args = parser.parse_args()
    if args.show:
        return subprocess.run([MUTMUT, "show", args.show], cwd=ROOT).returncode
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}: choose among {', '.join(MODULES)}")
    chosen = args.modules or list(MODULES)
    patterns = [p for m in chosen for p in MODULES[m][1]]

    started = time.monotonic()
    if not args.report:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        (ROOT / "mutants").mkdir()
        print(f"mutmut: {', '.join(chosen)} (log: mutants/run.log) ...", flush=True)
        with open(ROOT / "mutants" / "run.log", "w") as log:
            code = subprocess.run([MUTMUT, "run", *patterns], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            print(
                f"mutmut run failed (exit {code}); the end of mutants/run.log:\n"
                + (ROOT / "mutants" / "run.log").read_text()[-3000:]
            )
            return 2
    minutes = (time.monotonic() - started) / 60

    known = equivalents()

    left = 0
    print(f"{'module':<11} {'mutants':>7} {'killed':>7} {'timeout':>7} {'equivalent':>10} {'survived':>8} {'other':>6}")
    report = []
    for module in chosen:
        path, names = MODULES[module]
        ours = {k: v for k, v in results(path).items() if any(fnmatch.fnmatch(k, p) for p in names)}
        counts = {"killed": 0, "timeout": 0, "equivalent": 0, "survived": 0, "other": 0}
        for name, code in sorted(ours.items(), key=lambda kv: (kv[0].rsplit("_", 1)[0], int(kv[0].rsplit("_", 1)[1]))):
            status = STATUS.get(code, "suspicious")
            if status == "killed":
                counts["killed"] += 1
                continue
            line = changed_line(name, path)
            if status == "survived" and name in known and known[name][0] == line:
                counts["equivalent"] += 1
                continue
            kind = status if status in ("timeout", "survived") else "other"
            counts[kind] += 1
            report.append(
                f"  {status:<9} {name}\n            {line}"
                + ("   (listed as equivalent for another line: check again)" if name in known else "")
            )
        left += counts["survived"] + counts["other"]
        print(
            f"{module:<11} {len(ours):>7} {counts['killed']:>7} {counts['timeout']:>7} {counts['equivalent']:>10} "
            f"{counts['survived']:>8} {counts['other']:>6}"
        )
    if not args.report:
        print(f"({minutes:.0f} min)")
    if report:
        print(
            "\nsurvivors, timeouts and the rest, with the line each puts in; "
            "`python scripts/mutants.py --show NAME` for the diff:"
        )
        print("\n".join(report))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
