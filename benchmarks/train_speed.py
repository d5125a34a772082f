"""Training speed and peak memory of the translation models on this machine (CPU).

Each configuration runs in its own Python process (so peak memory is its own): build the model with
``build_model(model, preset, **overrides)``, one warm-up ``train_step`` (not timed), then ``--iters`` timed steps on
random batches of the configured crop and batch size. Reported: median and mean seconds per iteration, images per
second, seconds per epoch of 150 source images (one iteration per ``batch_size`` source images, as in the training
loop), and peak resident memory from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process (which includes
the ~0.3-0.4 GB of the Python + torch import itself; "after build" is the same figure before the first step).

    /work/venv/bin/python benchmarks/train_speed.py            # writes benchmarks/results/train_speed.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parents[1]

# (label, model, preset, overrides, timed iterations)
CONFIGS: list[tuple[str, str, str, dict, int]] = [
    ("cyclegan paper @128", "cyclegan", "paper", {"crop_size": 128, "load_size": 143}, 3),
    ("cyclegan cpu (ngf 32, 6 blocks, 96 px)", "cyclegan", "cpu", {}, 8),
    ("cyclegan cpu, 1 torch thread", "cyclegan", "cpu", {"_threads": 1}, 8),
    ("cyclegan ngf 16, 6 blocks, 96 px", "cyclegan", "cpu", {"ngf": 16}, 8),
    ("cyclegan ngf 32, 9 blocks, 96 px", "cyclegan", "cpu", {"n_blocks": 9}, 8),
    ("cyclegan ngf 32, 6 blocks, 64 px", "cyclegan", "cpu", {"crop_size": 64, "load_size": 72}, 8),
    ("cyclegan ngf 32, 6 blocks, 128 px", "cyclegan", "cpu", {"crop_size": 128, "load_size": 143}, 6),
    ("colorization cpu (U-Net 5, ngf 32, 96 px, batch 4)", "colorization", "cpu", {}, 8),
    ("colorization paper @128 (U-Net 7, ngf 64, batch 1)", "colorization", "paper",
     {"crop_size": 128, "load_size": 143, "num_downs": 7}, 4),
]
EPOCH_IMAGES = 150


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(model_name: str, preset: str, overrides: dict, iters: int) -> dict:
    import torch

    from stainshift.models import build_model

    overrides = dict(overrides)
    if "_threads" in overrides:  # not a model option: the number of torch intra-op threads
        torch.set_num_threads(overrides.pop("_threads"))
    torch.manual_seed(0)
    model = build_model(model_name, preset, **overrides)
    o = model.options
    gen = torch.Generator().manual_seed(0)
    shape = (o.batch_size, 3, o.crop_size, o.crop_size)
    batches = [{"src": torch.rand(shape, generator=gen), "dst": torch.rand(shape, generator=gen)}
               for _ in range(min(iters + 1, 4))]
    rss_build = _rss_mb()
    model.train_step(batches[0])  # warm-up (allocator, oneDNN primitives)
    times = []
    for i in range(iters):
        start = time.perf_counter()
        model.train_step(batches[(i + 1) % len(batches)])
        times.append(time.perf_counter() - start)
    translator = model.translator()
    median = statistics.median(times)
    return {
        "options": {k: getattr(o, k) for k in ("ngf", "n_blocks", "num_downs", "ndf", "crop_size", "batch_size")
                    if hasattr(o, k)},
        "iters": iters, "times_s": [round(t, 3) for t in times],
        "s_per_iter_median": round(median, 3), "s_per_iter_min": round(min(times), 3),
        "s_per_iter_mean": round(statistics.fmean(times), 3),
        "images_per_s": round(o.batch_size / median, 2),
        "epoch_s_150": round(median * -(-EPOCH_IMAGES // o.batch_size), 1),
        "epoch_s_150_min": round(min(times) * -(-EPOCH_IMAGES // o.batch_size), 1),
        "generator_params_M": round(sum(p.numel() for p in translator.parameters()) / 1e6, 2),
        "all_params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "rss_after_build_mb": round(rss_build), "peak_rss_mb": round(_rss_mb()),
        "torch_threads": torch.get_num_threads(),
    }


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "commit": git_commit(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "load_avg_start": os.getloadavg()}


def markdown(info: dict, rows: list[dict]) -> str:
    by = {r["label"]: r for r in rows}
    lines = [
        "# Translation-model training speed (CPU)", "",
        f"- date: {info['date']}", f"- commit: {info['commit']}", f"- command: `{info['command']}`",
        f"- machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']} (unless the row says "
        "otherwise), "
        f"torch {info['torch']}, Python {info['python']}",
        f"- load average at start / end: {info['load_avg_start'][0]:.2f} / {info['load_avg_end'][0]:.2f} "
        "(the 2 cores are shared with other jobs: expect +-30 % between runs)",
        "- method: each row in a fresh process; random batches at the crop and batch size shown; 1 warm-up step, then "
        "the timed steps (min and median reported; the min is the least disturbed by other jobs). "
        "Memory: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of that process "
        "(peak RSS including the Python + torch import; 'after build' is the same before the first step).",
        f"- epoch = {EPOCH_IMAGES} source images (one iteration per `batch_size` images, as in the training loop).",
        "",
        "| configuration | crop | batch | G params (M) | s / iter min | s / iter median | images / s (median) "
        "| s / epoch of 150 (min - median) | peak RSS (MB) | RSS after build (MB) | timed iters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | | | | failed: {r['error']} | | | | | | |")
            continue
        o = r["options"]
        lines.append(f"| {r['label']} | {o['crop_size']} | {o['batch_size']} | {r['generator_params_M']} | "
                     f"{r['s_per_iter_min']:.2f} | {r['s_per_iter_median']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['epoch_s_150_min']:.0f} - {r['epoch_s_150']:.0f} | "
                     f"{r['peak_rss_mb']} | {r['rss_after_build_mb']} | {r['iters']} |")
    cpu, paper, col = (by.get(CONFIGS[i][0], {}) for i in (1, 0, 7))

    def span(r: dict, key: str = "s_per_iter", scale: float = 1.0, fmt: str = ".2f") -> str:
        if key == "epoch":
            lo, hi = r["epoch_s_150_min"] * scale, r["epoch_s_150"] * scale
        else:
            lo, hi = r[f"{key}_min"] * scale, r[f"{key}_median"] * scale
        a, b = f"{lo:{fmt}}", f"{hi:{fmt}}"
        return a if a == b else f"{a}-{b}"

    if "s_per_iter_median" in cpu and "s_per_iter_median" in paper:
        # 256 px has 4x the pixels of 128 px; the convolutions' cost scales with pixels
        lines += [
            "", "## Reading (ranges are min-median)", "",
            f"- CycleGAN `paper` settings cost {span(paper, fmt='.1f')} s per iteration at 128 px here, so about "
            f"{span(paper, scale=4, fmt='.0f')} s at the paper's 256 px (pixel-count scaling): one epoch of "
            f"{EPOCH_IMAGES} images would take {span(paper, 'epoch', 4 / 3600, '.1f')} h and the paper's 200 epochs "
            f"{span(paper, 'epoch', 4 * 200 / 86400, '.0f')} days. It is a GPU preset.",
            f"- The `cpu` preset (ngf 32, 6 residual blocks, 96 px crops, batch 1) takes {span(cpu)} s per iteration, "
            f"{span(cpu, 'epoch', fmt='.0f')} s per epoch of {EPOCH_IMAGES} images; its 10 epochs (small-data runs "
            f"peak at epochs 1-3, DESIGN.md section 6) take {span(cpu, 'epoch', 10 / 60, '.0f')} min.",
        ]
    alternatives = [r for r in rows if r.get("model") == "cyclegan" and r is not cpu and r is not paper
                    and "s_per_iter_min" in r]
    if "s_per_iter_min" in cpu and alternatives:
        parts = [f"{r['label'].removeprefix('cyclegan ')} {r['s_per_iter_min'] / cpu['s_per_iter_min']:.2f}x"
                 for r in alternatives]
        lines.append("- Alternatives, min s / iter relative to the `cpu` preset: " + "; ".join(parts) + ". "
                     "ngf 16 is cheaper but halves the generator's width; 9 blocks or 128 px crops cost more per "
                     "epoch in a small-data regime whose best epoch comes early; 64 px crops are cheap but leave no "
                     "margin around a cell harmonized to a 64 px diameter (and each 70x70 PatchGAN window then covers "
                     "the whole crop). 96 px keeps the whole cell plus background at < 1 s per iteration.")
    lines.append("- Spikes: single iterations of 5-25x the minimum appear when other jobs take the cores (two "
                 "OpenMP threads then wait on each other); the min is the undisturbed cost, the median what a "
                 "shared machine gives. On a busy machine `torch.set_num_threads(1)` trades peak speed for "
                 "fewer such stalls (row '1 torch thread').")
    if "s_per_iter_median" in col:
        lines.append(f"- ColorizationGAN `cpu` (U-Net depth 5, ngf 32, 96 px, batch 4): {span(col)} s per iteration "
                     f"of 4 images, {span(col, 'epoch', fmt='.0f')} s per epoch of {EPOCH_IMAGES} target images; "
                     f"its 10 + 10 epochs take {span(col, 'epoch', 20 / 60, '.0f')} min.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", type=int, nargs="*", help="indices of CONFIGS to run (default: all)")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        model_name, preset, overrides, iters = json.loads(args.one)
        print(json.dumps(run_one(model_name, preset, overrides, iters)))
        return
    if args.render:
        saved = json.loads((args.out / "train_speed.json").read_text())
        (args.out / "train_speed.md").write_text(markdown(saved["machine"], saved["results"]))
        return
    info = machine()
    info["command"] = " ".join([Path(sys.executable).as_posix(), "benchmarks/train_speed.py", *sys.argv[1:]])
    rows = []
    for index, (label, model_name, preset, overrides, iters) in enumerate(CONFIGS):
        if args.only is not None and index not in args.only:
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps([model_name, preset, overrides, iters])],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            row = {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        row.update(label=label, model=model_name, preset=preset, overrides=overrides,
                   wall_s=round(time.perf_counter() - start, 1))
        rows.append(row)
        print(f"{label}: {row.get('s_per_iter_median', row.get('error'))} s/iter, "
              f"peak {row.get('peak_rss_mb')} MB ({row['wall_s']} s)", flush=True)
    info["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps({"machine": info, "results": rows}, indent=2) + "\n")
    (args.out / "train_speed.md").write_text(markdown(info, rows))
    print(f"wrote {args.out / 'train_speed.md'}")


if __name__ == "__main__":
    main()
