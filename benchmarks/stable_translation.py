"""Is learned harmonization robust or lucky? Accuracy across kept epochs and GAN seeds, per training variant.

Reads the per-source parts that ``benchmarks/cross_site.py`` wrote (``results/cross_site_parts/``): the default
`cpu` CycleGAN runs (``cpu-sN``), a tagged variant (``--tag stable --run-prefix stable-``: CycleGAN with a weight
average of the generator, ``ema_decay`` 0.995, resize-convolution upsampling and class-balanced sampling of both
domains) and CUT (``stainshift train cut --preset cpu``, runs ``cpu-sN``), all 5 epochs, every epoch kept, 3 seeds,
scored by the same PBC ResNet18 on the source's test split. For each variant:

- the accuracy of every kept epoch of every seed (the picture);
- the spread: the standard deviation over a seed's kept epochs (mean over seeds), and over the seeds at each epoch
  (mean over epochs);
- the epoch each selection rule chose (by the separate selection classifier, never reported) per seed, its
  accuracy and gap closed, and whether it beats / ties / loses to the best classical method (paired bootstrap CI
  of the test images, from the benchmark).

    python benchmarks/stable_translation.py [--sources jtsc,cvblog,bccdf]

Writes ``results/stable_translation.md`` and ``stable_translation.png``. It measures nothing itself: the
provenance of each part (commit, start, command) is copied from the parts' own records.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = RESULTS / "cross_site_parts"
VARIANTS = (("CycleGAN cpu (default)", "", "cyclegan"), ("CycleGAN stable (EMA + resize-conv + balanced)", "@stable",
                                                          "cyclegan"), ("CUT cpu", "", "cut"))
EPOCH = re.compile(r" s(\d+) e(\d+)$")
SELECTED = re.compile(r" s(\d+) selected \((label-free|labelled)\)$")


def variant_rows(source: str, tag: str, method: str) -> tuple[pd.DataFrame, pd.DataFrame, dict] | None:
    table = PARTS / f"{source}{tag}_summary.csv"
    if not table.exists():
        return None
    frame = pd.read_csv(table)
    frame = frame[frame.method == method]
    epochs, selected = [], []
    for row in frame.itertuples():
        if m := EPOCH.search(row.condition):
            epochs.append({"seed": int(m[1]), "epoch": int(m[2]), "accuracy": row.accuracy, "macro_f1": row.macro_f1})
        elif m := SELECTED.search(row.condition):
            selected.append({"seed": int(m[1]), "rule": m[2], "accuracy": row.accuracy, "macro_f1": row.macro_f1,
                             "gap_closed": row.gap_closed, "vs_classical": row.vs_classical})
    if not epochs:
        return None
    provenance = json.loads((PARTS / f"{source}{tag}_provenance.json").read_text())
    return pd.DataFrame(epochs), pd.DataFrame(selected), provenance


def structure(source: str, tag: str, method: str) -> float | None:
    """Mean SSIM to the input (gray, 1 px blur; the selection's own measure, source validation split) over every kept
    epoch of every seed's run, from the per-epoch selection scores the benchmark copied."""
    prefix = "stable-" if tag == "@stable" else "cpu-"
    files = sorted((RESULTS / "cross_site_selection").glob(f"{source}_selection_{method}_{prefix}s*.csv"))
    if not files:
        return None
    frames = [pd.read_csv(f) for f in files]
    return float(pd.concat([f[f.epoch > 0] for f in frames]).ssim.mean())


def source_lines(source: str, ax) -> list[str]:
    found = {label: r for label, tag, method in VARIANTS if (r := variant_rows(source, tag, method))}
    summary = pd.read_csv(PARTS / f"{source}_summary.csv")
    classical = summary[summary.method.isin(["reinhard", "macenko", "histogram"])]
    best_classical = classical.loc[classical.accuracy.idxmax()]
    original = summary[summary.condition == "original"].iloc[0]
    lines = [f"## {source} -> pbc", ""]
    for label, (_, _, prov) in found.items():
        lines.append(f"- {label}: benchmark started {prov['started']}, commit {prov['commit']}"
                     f"{' (DIRTY TREE)' if prov['dirty'] else ''}, command `{prov['command']}`")
    lines += [f"- reference rows: original {original.accuracy:.3f} (macro-F1 {original.macro_f1:.3f}), best "
              f"classical ({best_classical.condition}) {best_classical.accuracy:.3f}; PBC ResNet18 (GroupNorm), "
              f"{int(original.n)} test images", "",
              "| variant | kept-epoch accuracy: mean [min-max] | sd over epochs (mean over seeds) | sd over seeds "
              "(mean over epochs) | structure: SSIM to the input, mean over kept epochs (val) | labelled pick per "
              "seed | label-free pick per seed |",
              "|---|---|---:|---:|---:|---|---|"]
    colours = dict(zip([v[0] for v in VARIANTS], ("tab:blue", "tab:green", "tab:red"), strict=False))
    for label, (epochs, selected, _) in found.items():
        over_epochs = epochs.groupby("seed").accuracy.std(ddof=0).mean()
        over_seeds = epochs.groupby("epoch").accuracy.std(ddof=0).mean()
        tag, method = next((t, m) for name, t, m in VARIANTS if name == label)
        ssim = structure(source, tag, method)

        def picks(rule: str, selected=selected) -> str:
            part = selected[selected.rule == rule].sort_values("seed")
            return ", ".join(f"s{r.seed} {r.accuracy:.3f} ({r.gap_closed:.0%}, {r.vs_classical})"
                             for r in part.itertuples()) or "-"

        lines.append(f"| {label} | {epochs.accuracy.mean():.3f} [{epochs.accuracy.min():.3f}-"
                     f"{epochs.accuracy.max():.3f}] | {over_epochs:.3f} | {over_seeds:.3f} | "
                     f"{'-' if ssim is None else f'{ssim:.3f}'} | {picks('labelled')} | {picks('label-free')} |")
        for seed, part in epochs.groupby("seed"):
            part = part.sort_values("epoch")
            ax.plot(part.epoch, part.accuracy, "o-", color=colours[label], alpha=0.8, ms=3,
                    label=label if seed == epochs.seed.min() else None)
    ax.axhline(best_classical.accuracy, color="black", ls="--", lw=1,
               label=f"best classical ({best_classical.condition})")
    ax.axhline(original.accuracy, color="gray", ls=":", lw=1, label="original")
    ax.set(xlabel="epoch", ylabel="accuracy on the source's test split", ylim=(0, 1),
           title=f"{source} -> pbc: every kept epoch of 3 seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="jtsc,cvblog,bccdf")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [s for s in args.sources.split(",") if (PARTS / f"{s}_summary.csv").exists()]
    fig, axes = plt.subplots(1, len(sources), figsize=(5.2 * len(sources), 4.0), squeeze=False)
    lines = ["# Robust or lucky: learned harmonization across epochs and seeds", ""]
    for source, ax in zip(sources, axes[0], strict=True):
        lines += source_lines(source, ax)
    fig.tight_layout()
    fig.savefig(RESULTS / "stable_translation.png", dpi=110)
    lines += ["Picks: accuracy (gap closed; vs the best classical method, paired 95% CI of the test images: "
              "better / n.s. / worse). A variant missing from a source's table was not trained there.", "",
              "![accuracy vs epoch](stable_translation.png)", ""]
    (RESULTS / "stable_translation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
