"""Wall time of ``stainshift demo --quick`` and ``stainshift demo`` as a user runs them (targets: 2 and 10 minutes).

    python benchmarks/demo_time.py          # -> benchmarks/results/demo.md (+ the full demo's before/after grid)

Each demo runs in a fresh temporary folder through the installed console script, so start-up, simulation, the
CycleGAN, the classifier, selection, harmonization and the benchmark table are all inside the time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from provenance import git_commit, machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = {"--quick": 120, "full": 600}


def run(flag: str, workdir: Path) -> tuple[float, str]:
    command = [str(Path(sys.executable).parent / "stainshift"), "demo", "--quiet", "--workdir", str(workdir)]
    if flag != "full":
        command.append(flag)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    lines = ["# `stainshift demo`: wall time as a user runs it", "",
             f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit: {git_commit()}; machine: {info['cpu']}, "
             f"{info['cores']} cores, CPU only; load (1 min) at start {info['load_1min']:.2f}; "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             "- command: `python benchmarks/demo_time.py` (runs the console script in a fresh folder each time)", "",
             "| command | wall time (s) | target (s) | within target |", "|---|---:|---:|---|"]
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flag, target in TARGETS.items():
            workdir = Path(tmp) / flag.strip("-")
            seconds, outputs[flag] = run(flag, workdir)
            summary = json.loads((workdir / "summary.json").read_text())
            label = "stainshift demo" + ("" if flag == "full" else f" {flag}")
            lines.append(f"| `{label}` | {seconds:.0f} | {target} | {'yes' if seconds <= target else 'NO'} |")
            outputs[flag] += "\nstages (s): " + json.dumps(summary["stage_seconds"])
            if flag == "full":
                shutil.copy(workdir / "before_after.png", RESULTS / "demo_before_after.png")
    for flag, text in outputs.items():
        lines += ["", f"## `stainshift demo{'' if flag == 'full' else ' ' + flag}` output", "", "```",
                  text.rstrip().replace(tmp, "$TMP"), "```"]
    lines += ["", "![demo before/after](demo_before_after.png)", ""]
    (RESULTS / "demo.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
