"""Inference speed of every harmonization method, and the GAN's achieved GFLOP/s against this machine's matmul.

    python benchmarks/harmonize_speed.py            # -> benchmarks/results/harmonize_speed.md (+ .json)

For each method and size (128^2, 256^2) and batch (1, 8): images/s and megapixels/s through the same call that
``stainshift harmonize`` makes (classical normalizers fitted on simulated clinic images, one call per batch; GAN
translators with random weights - speed does not depend on them - through ``translate_batch``, which splits a
batch into chunks of at most 65k pixels). For the GAN generators: FLOPs per image (torch's
FlopCounterMode), achieved GFLOP/s, and the ratio to a float32 matmul measured in the same run; channels_last
against the default layout. Batch 1 and batch 8 are timed in turn (best of 5 rounds) because this shared
machine's speed drifts by +-20% over seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from provenance import cpu_model, git_commit
from torch.utils.flop_counter import FlopCounterMode

from stainshift.data.simulate import render_cells
from stainshift.harmonize import translate_batch
from stainshift.models.registry import build_model
from stainshift.normalize import build

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def interleaved(calls: dict[int, object], rounds: int = 5, min_seconds: float = 0.5) -> dict[int, float]:
    """Fastest seconds per call of each entry, timing them in turn so that machine noise hits them alike."""
    for call in calls.values():
        call()  # warm-up
    best = {k: float("inf") for k in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start, n = time.perf_counter(), 0
            while n == 0 or time.perf_counter() - start < min_seconds / rounds:
                call()
                n += 1
            best[key] = min(best[key], (time.perf_counter() - start) / n)
    return best


def matmul_gflops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / interleaved({0: lambda: a @ b}, rounds=10)[0] / 1e9


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--out", type=Path, default=RESULTS / "harmonize_speed.md")
    args = parser.parse_args()
    torch.manual_seed(0)

    clinic = render_cells(8, hospitals=["clinic"], size=128, seed=0).images["clinic"]
    methods: dict[str, torch.nn.Module] = {}
    for name in ("reinhard", "macenko", "histogram"):
        methods[name] = build(name).fit(list(clinic)).eval()
    for name, preset in (("cyclegan", "cpu"), ("cyclegan", "paper"), ("colorization", "cpu"),
                         ("colorization", "paper")):
        methods[f"{name} ({preset})"] = build_model(name, preset).translator().eval()

    peak = matmul_gflops()
    rows = []
    for label, module in methods.items():
        learned = "(" in label
        run = translate_batch if learned else (lambda m, images: m(images))
        for size in args.sizes:
            flops = flops_per_image(module, size) if learned else None
            for layout in ("default", "channels_last") if learned else ("default",):
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                module.to(memory_format=fmt)
                inputs = {b: torch.rand(b, 3, size, size).contiguous(memory_format=fmt) for b in (1, 8)}
                with torch.inference_mode():
                    seconds = interleaved({b: (lambda x=x, m=module, f=run: f(m, x)) for b, x in inputs.items()})
                for batch, sec in seconds.items():
                    ips = batch / sec
                    row = {"method": label, "size": size, "batch": batch, "layout": layout,
                           "images_per_s": ips, "megapixels_per_s": ips * size * size / 1e6}
                    if flops:
                        row["gflop_per_image"] = flops / 1e9
                        row["achieved_gflops"] = flops * ips / 1e9
                        row["fraction_of_matmul"] = flops * ips / 1e9 / peak
                    rows.append(row)
                    print(json.dumps(row))
            module.to(memory_format=torch.contiguous_format)

    header = [
        "# Harmonization inference speed", "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}", f"- commit: {git_commit()}",
        f"- machine: {machine()}", "- command: `python benchmarks/harmonize_speed.py`",
        f"- float32 matmul (1024^3) measured in the same run: **{peak:.1f} GFLOP/s**", "",
        "| method | size | batch | layout | images/s | MP/s | GFLOP/image | achieved GFLOP/s | vs matmul |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines = [f"| {r['method']} | {r['size']} | {r['batch']} | {r['layout']} | {r['images_per_s']:.1f} | "
             f"{r['megapixels_per_s']:.2f} | {r.get('gflop_per_image', float('nan')):.2f} | "
             f"{r.get('achieved_gflops', float('nan')):.1f} | {r.get('fraction_of_matmul', float('nan')):.0%} |"
             for r in rows]
    per_image = {}
    for r in rows:
        if r["layout"] == "default":
            per_image.setdefault((r["method"], r["size"]), {})[r["batch"]] = r["images_per_s"]
    ratio_lines = ["", "Batch 8 vs batch 1 (images/s ratio, default layout; >= 1: batching not slower per image):", ""]
    ratio_lines += [f"- {m} @ {s}: {v[8] / v[1]:.2f}x" for (m, s), v in per_image.items()]
    args.out.write_text("\n".join(header + lines + ratio_lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"matmul_gflops": peak, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
