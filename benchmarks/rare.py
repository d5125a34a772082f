"""Do generated rare-class images help a classifier find the rare class? (issue 15)

    python benchmarks/rare.py                          # both data sets -> results/rare.md (+ .json, .png)
    python benchmarks/rare.py --datasets sim           # one; parts already measured are kept
    python benchmarks/rare.py --quick --allow-dirty    # smoke run, writes under /tmp

Data sets (each with a fixed test split that nothing but the final evaluation reads):

- ``sim``: the stain simulator's "clinic" hospital, 6 classes; lymphocyte -> blast (ground truth: the simulator's
  blast model);
- ``pbc``: ../shared/data/pbc_barcelona, 8 classes; lymphocyte -> erythroblast (both round dense nuclei), the
  erythroblast playing the rare class.

For each k (real rare-class training images) and draw (which k, seeded):

1. a class-pair domain is written (symlinks to the pool images; its split file is saved by hand so that all k rare
   images are training images and the "from" class keeps a validation set); ``classcyclegan`` (``small`` preset)
   is trained on it (3 + 1 epochs at lr 5e-4, every epoch kept), its epoch chosen by ``stainshift rare select``
   (morphology rule: train and val images only), and ``rare generate`` writes N images of the rare class from
   the "from" class's training images;
2. four classifiers (the project's BaselineCNN, 64 px, same seed and schedule) are trained on the common classes
   plus: ``real`` the k images; ``oversample`` the k images repeated to k + N; ``augment`` the k images plus N
   stain-jittered (HED) copies of them; ``generated`` the k images plus the N generated ones; ``oversample+generated``
   the k images repeated to k + N/2 plus N/2 generated ones (as many rare-class images as ``oversample``, so a gain
   over it is not a shift of the class prior);
3. rare-class recall, precision and F1 and the macro-F1 on the fixed test split; paired differences against
   ``oversample``, ``augment`` and ``real`` with 95% bootstrap CIs resampling both the draws and the test images
   (the same resample for both conditions).

Everything measured is saved per (data set, k, draw) under ``results/rare_parts/`` with its commit and start time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from provenance import record, require_clean
from synthesis import data_root

from stainshift.classify.baseline import predict, train_baseline
from stainshift.classify.stain_augment import HedJitter
from stainshift.data.io import read_image
from stainshift.data.splits import save_split
from stainshift.project import load_or_new_project
from stainshift.rare import ClassPair, format_table, generate, rare_request, select_epoch
from stainshift.runs import split_file
from stainshift.train.loop import train

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = RESULTS / "rare_parts"
VIEW, INPUT = 72, 64   # every image: shorter side to 72 px (the small preset's load size), centre 64 px
N_BOOT = 2000
LR = 5e-4  # the demo preset's rate: a 2-core budget allows ~600 steps per run


def view(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    f = VIEW / min(h, w)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    top, left = (small.shape[0] - INPUT) // 2, (small.shape[1] - INPUT) // 2
    return small[top:top + INPUT, left:left + INPUT]


def dataset(name: str, work: Path, quick: bool) -> dict:
    """Files per class, the pair, and the sizes of the fixed partition."""
    if name == "sim":
        from stainshift.data.simulate import simulate

        per_class = 60 if quick else 200
        out = work / "sim_images"
        if not (out / "pairs.csv").exists():
            simulate(out, hospitals=["clinic"], per_class=per_class, size=96, seed=0)
        folder = out / "clinic"
        source, target, n_test, n_common = "lymphocyte", "blast", (20 if quick else 60), (30 if quick else 110)
    else:
        folder = data_root() / "pbc_barcelona"
        if not folder.is_dir():
            raise SystemExit(f"skipped pbc: {folder} not found (set STAINSHIFT_DATA)")
        source, target, n_test, n_common = "lymphocyte", "erythroblast", (20 if quick else 100), (30 if quick else 150)
    files = {c.name: sorted(p for p in c.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
             for c in sorted(folder.iterdir()) if c.is_dir() and c.name != "masks"}
    return {"name": name, "files": files, "source": source, "target": target, "n_test": n_test,
            "n_common": n_common, "n_val": 10 if quick else 30}


def partition(ds: dict) -> dict:
    """Seed-0 fixed split per class: test (first n_test of a seeded order), then the pool."""
    parts = {}
    for i, (cls, files) in enumerate(ds["files"].items()):
        order = np.random.default_rng([0, i]).permutation(len(files))
        parts[cls] = {"test": [files[j] for j in order[:ds["n_test"]]],
                      "pool": [files[j] for j in order[ds["n_test"]:]]}
    return parts


def pair_domain(work: Path, ds: dict, parts: dict, rare: list[Path], tag: str) -> tuple:
    """A project with one domain holding the 'from' class (train + val) and the k rare images (train)."""
    root = work / tag
    if root.exists():
        shutil.rmtree(root)
    folder = root / "images"
    frm = parts[ds["source"]]["pool"]
    train_src, val_src = frm[:ds["n_common"]], frm[ds["n_common"]:ds["n_common"] + ds["n_val"]]
    rows = []
    for cls, files, split in ((ds["source"], train_src, "train"), (ds["source"], val_src, "val"),
                              (ds["target"], rare, "train")):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            (folder / cls / f.name).symlink_to(f.resolve())
            rows.append((f"{cls}/{f.name}", cls, split))
    project = load_or_new_project(root / "stainshift.toml")
    from stainshift.data.domains import add_domain

    project, _ = add_domain(project, "bench", folder)
    frame = pd.DataFrame(rows, columns=["key", "label", "split"])
    save_split(frame, split_file(project, "bench"), {"domain": "bench", "seed": 0, "fractions": "by hand",
                                                     "folder": str(folder), "n_images": len(rows), "excluded": []})
    return load_or_new_project(root / "stainshift.toml"), ClassPair("bench", ds["source"], ds["target"]), train_src


def generate_images(work: Path, ds: dict, parts: dict, rare: list[Path], tag: str, n_gen: int, epochs: int,
                    seed: int) -> tuple[list[np.ndarray], dict]:
    project, pair, _ = pair_domain(work, ds, parts, rare, tag)
    start = time.perf_counter()
    overrides = {"epochs": epochs, "epochs_decay": max(1, epochs // 3), "lr": LR,
                 "keep_epochs": tuple(range(1, epochs + max(1, epochs // 3) + 1))}
    result = train(project, rare_request(pair, preset="small", seed=seed, progress=False, track=False,
                                         overrides=overrides))
    train_s = time.perf_counter() - start
    selection = select_epoch(project, pair, max_images=ds["n_val"])
    out = work / tag / "generated"
    manifest = generate(project, pair, n_gen, out, seed=seed)
    images = [view(read_image(out / e["image"])) for e in manifest["images"]]
    info = {"train_seconds": round(train_s, 1), "run": result.run_dir.name, "selected_epoch": selection.epoch,
            "fallback": selection.fallback, "reason": selection.reason,
            "scores": [s.as_dict() for s in selection.scores], "table": format_table(selection)}
    shutil.copy(selection.files["plot"], work / f"{tag}_selection.png")
    return images, info


def rare_metrics(y_true: np.ndarray, y_pred: np.ndarray, rare: int, n_classes: int) -> dict:
    tp = int(((y_pred == rare) & (y_true == rare)).sum())
    recall = tp / max(1, int((y_true == rare).sum()))
    precision = tp / max(1, int((y_pred == rare).sum()))
    f1s = []
    for c in range(n_classes):
        t = int(((y_pred == c) & (y_true == c)).sum())
        p, r = t / max(1, int((y_pred == c).sum())), t / max(1, int((y_true == c).sum()))
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"recall": recall, "precision": precision, "f1": f1, "macro_f1": float(np.mean(f1s))}


def run_part(ds: dict, parts: dict, classes: list[str], test_x: np.ndarray, test_y: np.ndarray, k: int, draw: int,
             args, work: Path) -> dict:
    rare = parts[ds["target"]]["pool"]
    picked = [rare[i] for i in np.random.default_rng([draw, k, 11]).permutation(len(rare))[:k]]
    tag = f"{ds['name']}_k{k}_d{draw}"
    generated, gan = generate_images(work, ds, parts, picked, tag, args.n_gen, args.epochs, seed=draw)
    common_x, common_y = [], []
    for i, cls in enumerate(classes):
        if cls == ds["target"]:
            continue
        files = parts[cls]["pool"][:ds["n_common"]]
        common_x += [view(read_image(f)) for f in files]
        common_y += [i] * len(files)
    rare_i = classes.index(ds["target"])
    real = [view(read_image(f)) for f in picked]
    jitter = HedJitter()
    rng = np.random.default_rng([draw, k, 5])
    augmented = [jitter(real[j % k], rng) for j in range(args.n_gen)]
    oversampled = [real[j % k] for j in range(args.n_gen)]
    half = args.n_gen // 2
    conditions = {"real": [], "oversample": oversampled, "augment": augmented, "generated": generated,
                  "oversample+generated": oversampled[:args.n_gen - half] + generated[:half]}
    out = {"k": k, "draw": draw, "rare_files": [f.name for f in picked], "gan": gan, "conditions": {}}
    for name, extra in conditions.items():
        xs = np.stack(common_x + real + extra)
        ys = np.array(common_y + [rare_i] * (k + len(extra)))
        start = time.perf_counter()
        model = train_baseline(xs, ys, epochs=args.clf_epochs, seed=draw, class_names=classes, input_size=INPUT)
        pred = predict(model, test_x)
        out["conditions"][name] = {"pred": pred.tolist(), "seconds": round(time.perf_counter() - start, 1),
                                   **rare_metrics(test_y, pred, rare_i, len(classes))}
        print(f"  {tag} {name:20s} recall {out['conditions'][name]['recall']:.3f} precision "
              f"{out['conditions'][name]['precision']:.3f} macro-F1 {out['conditions'][name]['macro_f1']:.3f}",
              flush=True)
    return out


def paired(parts_k: list[dict], test_y: np.ndarray, rare_i: int, n_classes: int, a: str, b: str, metric: str
           ) -> dict:
    """Mean over draws of metric(a) - metric(b), with a 95% bootstrap CI that resamples both the draws (which k
    images, hence which GAN) and the test images; the same resample serves both conditions (paired)."""
    rng = np.random.default_rng(0)
    n, d = len(test_y), len(parts_k)
    preds = {c: [np.asarray(p["conditions"][c]["pred"]) for p in parts_k] for c in (a, b)}

    def diff(draws: np.ndarray, idx: np.ndarray) -> float:
        return float(np.mean([rare_metrics(test_y[idx], preds[a][j][idx], rare_i, n_classes)[metric]
                              - rare_metrics(test_y[idx], preds[b][j][idx], rare_i, n_classes)[metric]
                              for j in draws]))

    point = diff(np.arange(d), np.arange(n))
    boots = np.array([diff(rng.integers(0, d, d), rng.integers(0, n, n)) for _ in range(N_BOOT)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": point, "lo": float(lo), "hi": float(hi), "excludes_0": bool(lo > 0 or hi < 0)}


CONDITIONS = ("real", "oversample", "augment", "generated", "oversample+generated")
COMPARISONS = (("generated", "oversample"), ("generated", "augment"), ("generated", "real"),
               ("oversample+generated", "oversample"))


def summarise(name: str, results: dict, classes: list[str], test_y: np.ndarray, target: str) -> dict:
    """Per k: each condition's means over the draws that measured it, and the paired differences (on the draws
    that measured both; parts written before a condition existed lack it)."""
    rare_i = classes.index(target)
    summary = {}
    for k in sorted({p["k"] for p in results.values()}):
        parts_k = [p for p in results.values() if p["k"] == k]
        row = {"draws": len(parts_k)}
        for c in CONDITIONS:
            having = [p for p in parts_k if c in p["conditions"]]
            if having:
                row[c] = {m: float(np.mean([p["conditions"][c][m] for p in having]))
                          for m in ("recall", "precision", "f1", "macro_f1")}
                row[c]["draws"] = len(having)
        row["vs"] = {}
        for a, b in COMPARISONS:
            both = [p for p in parts_k if a in p["conditions"] and b in p["conditions"]]
            if both:
                row["vs"][f"{a}|{b}"] = {m: paired(both, test_y, rare_i, len(classes), a, b, m)
                                         for m in ("recall", "precision", "f1", "macro_f1")}
        row["selected_epochs"] = [p["gan"]["selected_epoch"] for p in parts_k]
        chosen = [next(r for r in p["gan"]["scores"] if r["epoch"] == p["gan"]["selected_epoch"]) for p in parts_k]
        row["morphology"] = {key: float(np.nanmean([c.get(key, np.nan) for c in chosen]))
                             for key in ("outline_iou", "size_change", "target_gap", "moved_nc_ratio",
                                         "moved_nucleus_L")}
        row["morphology"]["fallbacks"] = sum(bool(p["gan"]["fallback"]) for p in parts_k)
        summary[str(k)] = row
    return summary


def example_grid(work: Path, contexts: dict, path: Path, k: int, per_row: int = 8) -> Path | None:
    """Per data set: 'from' inputs, what the selected epoch made of them, and real rare images (draw 0)."""
    from stainshift.data.io import write_image
    from stainshift.grids import image_grid

    rows, labels = [], []
    for name, (ds, parts, *_rest) in contexts.items():
        manifest = work / f"{name}_k{k}_d0" / "generated" / "manifest.json"
        if not manifest.exists():
            continue
        entries = json.loads(manifest.read_text())["images"][:per_row]
        images = work / f"{name}_k{k}_d0" / "images"
        rows += [[view(read_image(images / e["source"])) for e in entries],
                 [view(read_image(manifest.parent / e["image"])) for e in entries],
                 [view(read_image(f)) for f in parts[ds["target"]]["pool"][-per_row:]]]
        labels += [f"{name} input", f"{name} gen", f"{name} real"]  # from-class, generated and real to-class
    if not rows:
        return None
    return write_image(path, image_grid(rows, cell=INPUT, row_labels=labels))


def plot(summaries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.6 * len(summaries), 3.4), squeeze=False)
    for ax, (name, summary) in zip(axes[0], summaries.items(), strict=True):
        ks = sorted(int(k) for k in summary)
        for c, style in (("real", "o:"), ("oversample", "s--"), ("augment", "^--"), ("generated", "D-"),
                         ("oversample+generated", "v-")):
            at = [k for k in ks if c in summary[str(k)]]
            if at:
                ax.plot(at, [summary[str(k)][c]["recall"] for k in at], style, label=c)
        ax.set_xticks(ks)
        ax.set_xlabel("real rare-class training images k")
        ax.set_ylabel("rare-class recall (test)")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="sim,pbc")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--n-gen", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=3, help="classcyclegan epochs at constant LR (then a third as "
                    "many decaying; every epoch kept)")
    ap.add_argument("--clf-epochs", type=int, default=15)
    ap.add_argument("--measured-only", action="store_true", help="summarise the parts already measured (each data "
                    "set with the draws it has), measure nothing new")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--allow-dirty", action="store_true")
    ap.add_argument("--work", default="/tmp/stainshift_rare_bench")
    args = ap.parse_args()
    if args.quick:
        args.ks, args.draws, args.n_gen, args.epochs, args.clf_epochs = "5", 1, 20, 2, 2
    require_clean(args.allow_dirty, "benchmarks/rare.py")
    prov = record(vars(args))
    results_dir = RESULTS if not args.quick else Path("/tmp/stainshift_rare_quick")
    parts_dir = results_dir / "rare_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ks = [int(k) for k in args.ks.split(",")]
    contexts = {}
    for name in args.datasets.split(","):
        ds = dataset(name, work, args.quick)
        parts = partition(ds)
        classes = list(ds["files"])
        test = [(f, i) for i, c in enumerate(classes) for f in parts[c]["test"]]
        test_x = np.stack([view(read_image(f)) for f, _ in test])
        contexts[name] = (ds, parts, classes, test_x, np.array([i for _, i in test]))
    results: dict[str, dict] = {name: {} for name in contexts}
    # draw by draw, so that a run stopped early still covers every data set and k
    for draw in range(args.draws):
        for name, (ds, parts, classes, test_x, test_y) in contexts.items():
            for k in ks:
                part = parts_dir / f"{name}_k{k}_d{draw}.json"
                if part.exists():
                    results[name][part.stem] = json.loads(part.read_text())
                    continue
                if args.measured_only:
                    continue
                print(f"{name}: k={k} draw {draw}", flush=True)
                start = time.perf_counter()
                result = {**run_part(ds, parts, classes, test_x, test_y, k, draw, args, work),
                          "provenance": record(vars(args)), "seconds": 0.0}
                result["seconds"] = round(time.perf_counter() - start, 1)
                part.write_text(json.dumps(result))
                results[name][part.stem] = result
    summaries, sets = {}, {}
    for name, (ds, _, classes, _, test_y) in contexts.items():
        if not results[name]:
            continue
        summaries[name] = summarise(name, results[name], classes, test_y, ds["target"])
        sets[name] = {"classes": classes, "from": ds["source"], "to": ds["target"], "n_test_per_class": ds["n_test"],
                      "n_common_train": ds["n_common"], "n_val_from": ds["n_val"]}
    (results_dir / "rare.json").write_text(json.dumps({"provenance": prov, "datasets": sets,
                                                       "summary": summaries}, indent=1))
    plot(summaries, results_dir / "rare.png")
    example_grid(work, contexts, results_dir / "rare_examples.png", ks[len(ks) // 2])
    write_markdown(results_dir / "rare.md", prov, sets, summaries, parts_dir)
    print((results_dir / "rare.md").read_text())


def write_markdown(path: Path, prov: dict, sets: dict, summaries: dict, parts_dir: Path) -> None:
    lines = ["# Rare-class generation: does a class-to-class CycleGAN help find the rare class?", "",
             f"Commit {prov['commit']} (dirty: {prov['dirty']}), started {prov['started']}, machine "
             f"{prov['machine']}. Command: `{prov['command']}`.", ""]
    for name, summary in summaries.items():
        s = sets[name]
        lines += [f"## {name}: {s['from']} -> {s['to']} ({len(s['classes'])} classes)", "",
                  f"Test: {s['n_test_per_class']} images per class (fixed). Common classes: {s['n_common_train']} "
                  f"training images each. Rare class: k real images, plus N generated / oversampled / augmented, "
                  "or N/2 oversampled + N/2 generated.", "",
                  "| k | draws | condition | rare recall | rare precision | rare F1 | macro-F1 |",
                  "|---|---|---|---|---|---|---|"]
        for k, row in summary.items():
            for c in CONDITIONS:
                if c not in row:
                    continue
                m = row[c]
                lines.append(f"| {k} | {m['draws']} | {c} | {m['recall']:.3f} | {m['precision']:.3f} | "
                             f"{m['f1']:.3f} | {m['macro_f1']:.3f} |")
        lines += ["", "Paired differences (a minus b; mean over the draws that measured both, 95% bootstrap CI "
                  "resampling draws and test images):", "",
                  "| k | a | b | recall | precision | rare F1 | macro-F1 |", "|---|---|---|---|---|---|---|"]
        for k, row in summary.items():
            for vs, ms in row["vs"].items():
                a, b = vs.split("|")
                cells = [f"{ms[m]['diff']:+.3f} [{ms[m]['lo']:+.3f}, {ms[m]['hi']:+.3f}]"
                         + (" *" if ms[m]["excludes_0"] else "") for m in ("recall", "precision", "f1", "macro_f1")]
                lines.append(f"| {k} | {a} | {b} | " + " | ".join(cells) + " |")
        lines += ["", "(* the CI excludes 0.) Selected epochs per k: "
                  + "; ".join(f"k={k}: {row['selected_epochs']}" for k, row in summary.items()), "",
                  "The selected epochs' morphology ('from'-class validation images; mean over draws; fallback = no "
                  "epoch kept the cell):", "",
                  "| k | outline IoU | size change | target gap | moved N:C | moved nucleus L* | fallbacks |",
                  "|---|---|---|---|---|---|---|"]
        for k, row in summary.items():
            m = row["morphology"]
            lines.append(f"| {k} | {m['outline_iou']:.2f} | {m['size_change']:.2f} | {m['target_gap']:.2f} | "
                         f"{m['moved_nc_ratio']:+.2f} | {m['moved_nucleus_L']:+.2f} | {m['fallbacks']} |")
        lines.append("")
        first = sorted(parts_dir.glob(f"{name}_k*_d0.json"))
        for part in first[:1]:
            data = json.loads(part.read_text())
            lines += [f"Selection table of {part.stem} (morphology rule; 'from'-class validation images):", "",
                      "```", data["gan"]["table"], "```", ""]
    lines += ["![rare-class recall vs k](rare.png)", "",
              "Per data set, rows: 'from'-class inputs, what the selected epoch made of them (draw 0, middle k), "
              "real rare-class images:", "",
              "![examples](rare_examples.png)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
