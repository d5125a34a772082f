"""Is the demo's CycleGAN robust or lucky? The full demo for 3 seeds, with the default and the stable training.

Each run is ``stainshift demo --seed S`` as a user runs it (Python API, the full preset); the ``stable`` variant adds
to the CycleGAN `demo` preset a weight average of the generator (``ema_decay`` 0.995), resize-convolution upsampling
(``upsample=resize``) and class-balanced sampling of both hospitals. For each variant and seed it reports the clinic
classifier on its own test split, the accuracy of every kept epoch on hgtp's test split, the spread (standard
deviation over a seed's kept epochs; over the seeds at each epoch), and the gap closed by each rule's selected epoch.
Aim (issue 14): the selected epoch closes >= 50% of the gap on every seed.

    python benchmarks/demo_spread.py [--seeds 0,1,2] [--variants default,stable]   # about 10 min per run here
    python benchmarks/demo_spread.py --report-only                                 # tables from the runs made

Runs go to ``runs/demo_spread/<variant>-s<seed>/`` (a finished run is reused, not repeated). Writes
``results/demo_spread.md``, ``demo_spread.json`` and ``demo_spread.png``. It refuses a tree with uncommitted
changes (``--allow-dirty`` to override).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from stainshift.atomic import atomic_write_text
from stainshift.demo import DemoSettings, run_demo
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs" / "demo_spread"
STABLE = (("ema_decay", 0.995), ("upsample", "resize"))
VARIANTS = {"default": "CycleGAN `demo` preset (the demo's default)",
            "stable": "+ EMA of G (0.995), resize-convolution upsampling, class-balanced sampling"}
EPOCH = re.compile(r"^cyclegan e(\d+)$")
AIM = 0.5


def settings_for(variant: str, seed: int) -> DemoSettings:
    base = DemoSettings.preset(quick=False, seed=seed)
    if variant == "stable":
        return replace(base, gan_options=(*base.gan_options, *STABLE), gan_balanced=True)
    return base


def run_one(variant: str, seed: int) -> dict:
    workdir = RUNS / f"{variant}-s{seed}"
    summary_file = workdir / "summary.json"
    settings = settings_for(variant, seed)
    if summary_file.exists():
        done = json.loads(summary_file.read_text())
        if {k: v for k, v in done["settings"].items() if k != "tracking_uri"} == json.loads(json.dumps(
                asdict(settings))):
            return done
    print(f"demo {variant} seed {seed} ...", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(workdir / "provenance.json", json.dumps(record(), indent=2))  # read before the run
    return asdict(run_demo(workdir, progress=False, settings=settings))


def rechosen(summary: dict, rule: str) -> int | None:
    """The epoch ``rule`` picks now (the current class guard) from the run's saved selection scores: runs made
    before a rule changed are reported with the pick they made, and this one next to it."""
    from dataclasses import fields

    import pandas as pd

    from stainshift.select import EpochScores, choose_epoch

    found = sorted((Path(summary["workdir"]) / "runs" / "hgtp_to_clinic" / "benchmark").glob(
        "selection_cyclegan_*.csv"))
    if not found:
        return None
    names = {f.name for f in fields(EpochScores)}
    rows = []
    for row in pd.read_csv(found[-1]).to_dict("records"):
        kw = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items() if k in names}
        if isinstance(kw.get("recalls"), str):  # "lymphocyte 0.900; monocyte 0.100"
            kw["recalls"] = {n: float(v) for n, v in (part.rsplit(" ", 1) for part in kw["recalls"].split("; "))}
        rows.append(EpochScores(**kw))
    return choose_epoch(rows, rule).epoch


def seed_row(summary: dict, provenance: dict) -> dict:
    """One run's figures: the kept epochs and each rule's selected epoch (gap closed = fraction of the
    original-to-fine-tuned gap, as in the demo's own table)."""
    rows = {t["condition"]: t for t in summary["table"]}
    epochs = {int(m[1]): rows[c]["accuracy"] for c in rows if (m := EPOCH.match(c))}
    own = Path(summary["workdir"]) / "provenance.json"  # runs made before runs kept their own: the variant's
    commit = json.loads(own.read_text())["commit"] if own.exists() else provenance["commit"]
    out = {"seed": summary["settings"]["seed"], "commit": commit, "clinic": summary["accuracy"]["clinic"],
           "original": rows["original"]["accuracy"], "upper": rows["fine-tuned on source (upper bound)"]["accuracy"],
           "best_classical": max(rows[c]["accuracy"] for c in ("reinhard", "macenko", "histogram")),
           "epochs": epochs, "epoch_sd": float(np.std(list(epochs.values()))), "seconds": summary["seconds"]}
    for rule in ("label-free", "labelled"):
        chosen = rows[f"cyclegan selected ({rule})"]
        out[rule] = {"epoch": summary["selected"][rule], "accuracy": chosen["accuracy"],
                     "gap_closed": chosen["gap_closed"], "vs_classical": chosen.get("vs_classical"),
                     "epoch_now": rechosen(summary, rule)}
    return out


def variant_summary(rows: list[dict]) -> dict:
    epochs = sorted(set.intersection(*(set(r["epochs"]) for r in rows)))
    across = [float(np.std([r["epochs"][e] for r in rows])) for e in epochs]
    out = {"mean_epoch_sd": float(np.mean([r["epoch_sd"] for r in rows])), "mean_seed_sd": float(np.mean(across)),
           "kept_mean": float(np.mean([a for r in rows for a in r["epochs"].values()]))}
    for rule in ("label-free", "labelled"):
        gaps = [r[rule]["gap_closed"] for r in rows]
        out[rule] = {"gap_closed": gaps, "mean_accuracy": float(np.mean([r[rule]["accuracy"] for r in rows])),
                     "seeds_at_aim": sum(g >= AIM for g in gaps)}
    return out


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{v:.0%}"


def write_report(results: dict) -> None:
    lines = ["# Demo spread: default vs stable CycleGAN training, full demo, 3 seeds", ""]
    for variant, block in results["variants"].items():
        p = block["provenance"]
        lines.append(f"- {variant}: started {p['started']}, commit {p['commit']}"
                     f"{' (dirty)' if p['dirty'] else ''}, machine {p['machine']['cpu']}, "
                     f"{p['machine']['cores']} cores, load at start {p['machine']['load_1min']:.2f}")
    lines += ["- each run: `stainshift demo --seed S` (full preset: 60 simulated images per class and hospital, "
              "CycleGAN `demo` preset 5 epochs, every epoch kept, ResNet18 GroupNorm); the epoch is chosen by each "
              "rule on hgtp's validation split with the benchmark's separate selection classifier",
              "- gap closed = (selected - original) / (fine-tuned upper bound - original) on hgtp's test split; "
              f"aim: >= {AIM:.0%} on every seed", ""]
    for variant, block in results["variants"].items():
        lines += [f"## {variant}: {VARIANTS[variant]}", "",
                  "| seed (commit) | clinic classifier on clinic | original | best classical | e1 | e2 | e3 | e4 | "
                  "e5 | sd over epochs | label-free: epoch, acc, gap | labelled: epoch, acc, gap | upper bound |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
        for r in block["seeds"]:
            eps = " | ".join(f"{r['epochs'].get(e, float('nan')):.3f}" for e in range(1, 6))
            rules = " | ".join(f"e{r[k]['epoch']}, {r[k]['accuracy']:.3f}, {_pct(r[k]['gap_closed'])}"
                               + ("" if r[k].get("epoch_now") in (None, r[k]["epoch"]) else
                                  f" (the current rule: e{r[k]['epoch_now']})") for k in ("label-free", "labelled"))
            lines.append(f"| {r['seed']} ({r.get('commit', '?')}) | {r['clinic']:.3f} | {r['original']:.3f} | "
                         f"{r['best_classical']:.3f} | "
                         f"{eps} | {r['epoch_sd']:.3f} | {rules} | {r['upper']:.3f} |")
        s = block["summary"]
        lines += ["", f"- spread: sd over a seed's kept epochs {s['mean_epoch_sd']:.3f} (mean over seeds); sd over "
                      f"seeds at each epoch {s['mean_seed_sd']:.3f} (mean over epochs); mean kept-epoch accuracy "
                      f"{s['kept_mean']:.3f}"]
        for rule in ("label-free", "labelled"):
            gaps = ", ".join(_pct(g) for g in s[rule]["gap_closed"])
            lines.append(f"- {rule}: gap closed {gaps}; seeds at the aim {s[rule]['seeds_at_aim']} of "
                         f"{len(block['seeds'])}; mean selected accuracy {s[rule]['mean_accuracy']:.3f}")
        lines.append("")
    lines += ["![accuracy of every kept epoch, per seed and variant](demo_spread.png)", ""]
    atomic_write_text(RESULTS / "demo_spread.md", "\n".join(lines))
    atomic_write_text(RESULTS / "demo_spread.json", json.dumps(results, indent=2))
    plot(results)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(results["variants"])
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for i, r in enumerate(results["variants"][variant]["seeds"]):
            colour = f"C{i % 10}"
            eps = sorted(r["epochs"])
            ax.plot(eps, [r["epochs"][e] for e in eps], "o-", color=colour, label=f"seed {r['seed']}")
            ax.axhline(r["original"], color=colour, ls=":", lw=1)
            chosen = r["labelled"]["epoch"]
            ax.plot([chosen], [r["epochs"][chosen]], "*", ms=14, color=colour, mec="k")
        ax.set_title(f"{variant}", fontsize=10)
        ax.set_xlabel("CycleGAN epoch")
        ax.set_xticks(range(1, 6))
    axes[0][0].set_ylabel("accuracy on hgtp test (dotted: original)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("demo: every kept epoch (star: labelled rule's choice)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "demo_spread.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="default,stable")
    parser.add_argument("--report-only", action="store_true", help="tables from the runs already made")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"--variants {','.join(unknown)}: unknown; use {', '.join(VARIANTS)}")
    previous = RESULTS / "demo_spread.json"
    results = json.loads(previous.read_text()) if previous.exists() else {"variants": {}}
    for block in results["variants"].values():  # JSON keys are strings
        for row in block["seeds"]:
            row["epochs"] = {int(k): v for k, v in row["epochs"].items()}
    for variant in variants:
        if args.report_only:
            done = [RUNS / f"{variant}-s{s}" / "summary.json" for s in seeds]
            summaries = [json.loads(f.read_text()) for f in done if f.exists()]
            provenance = results["variants"].get(variant, {}).get("provenance") or record(vars(args))
        else:
            require_clean(args.allow_dirty, "benchmarks/demo_spread.py")
            provenance = record(vars(args))
            summaries = [run_one(variant, s) for s in seeds]
        if summaries:
            rows = [seed_row(s, provenance) for s in summaries]
            results["variants"][variant] = {"provenance": provenance, "seeds": rows,
                                            "summary": variant_summary(rows)}
        write_report(results)
    print((RESULTS / "demo_spread.md").read_text())


if __name__ == "__main__":
    main()
