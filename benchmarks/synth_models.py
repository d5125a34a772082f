"""The mask-to-image models on this machine: training speed of their presets, a real run on jtsc_tecom through the
CLI (synth train, select, synth masks, synth generate), how much pix2pix's noise input changes its outputs, and a
picture of masks beside each model's images per epoch and per pix2pixHD style cluster.

pix2pixHD's two options beyond the global generator run here too: the local enhancer in its two stages (a global run
at half the scale, then `--init-from` it with `n_local_enhancers=1`, the global part frozen for the first epoch, as
the reference's `niter_fix_global`) and the perceptual loss from the features of a classifier the benchmark trains on
the domain first (no VGG19 file is on this machine).

    python benchmarks/synth_models.py              # -> benchmarks/results/synth_models.{md,json,jpg}
    python benchmarks/synth_models.py --quick --allow-dirty   # smoke run under /tmp

The runs live in benchmarks/runs/synth_models/ (not in git); the project file there names jtsc_tecom with its masks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from provenance import record, require_clean

from stainshift.atomic import atomic_write_text
from stainshift.cli.main import main as cli
from stainshift.models.registry import build_model, load_epoch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
EPOCH_IMAGES = 150
JTSC_DIAMETER = 74.6  # px, jtsc_tecom's cells (cell_diameters.md)
SPEED = [  # label, model, preset, overrides
    ("pix2pix cpu (U-Net 5, ngf 32, 96 px, batch 4)", "pix2pix", "cpu", {}),
    ("pix2pix cpu-noise-global (+2 noise channels, global D)", "pix2pix", "cpu-noise-global", {}),
    ("pix2pix paper @128 (U-Net 7, ngf 64, batch 1)", "pix2pix", "paper", {"crop_size": 128, "load_size": 143,
                                                                            "num_downs": 7}),
    ("pix2pixhd cpu", "pix2pixhd", "cpu", {}),
    ("pix2pixhd paper @128", "pix2pixhd", "paper", {"crop_size": 128, "load_size": 143}),
    ("pix2pixhd cpu + local enhancer (global part at 48 px)", "pix2pixhd", "cpu", {"n_local_enhancers": 1}),
    ("pix2pixhd cpu + perceptual loss (classifier features)", "pix2pixhd", "cpu", {"perceptual": "CLASSIFIER"}),
    ("maskcyclegan cpu (unpaired masks and images)", "maskcyclegan", "cpu", {}),
]
MODELS = [  # run id, model, preset
    ("p2p", "pix2pix", "cpu"),
    ("p2p-noise", "pix2pix", "cpu-noise-global"),
    ("hd", "pix2pixhd", "cpu"),
    ("mcg", "maskcyclegan", "cpu"),  # unpaired: jtsc's masks and jtsc's images drawn independently
    ("hd-half", "pix2pixhd", "cpu"),  # the local enhancer's first stage: the global generator at half the scale
    ("hd-local", "pix2pixhd", "cpu"),  # its second stage, from hd-half
    ("hd-perc", "pix2pixhd", "cpu"),  # with the perceptual loss of the benchmark's classifier
]
LOCAL_FROZEN_EPOCHS = 1  # niter_fix_global of hd-local
HALF_SCALE = {"hd-half"}  # runs trained and scored from half_scale.toml (cells of half the diameter)
TRAIN_FLAGS = {  # a run's `synth train` flags beyond its model and preset (placeholders: see fill_paths)
    "hd-half": ["--set", "crop_size=48"],
    "hd-local": ["--set", "n_local_enhancers=1", "--set", f"niter_fix_global={LOCAL_FROZEN_EPOCHS}",
                 "--init-from", "RUN:hd-half"],
    "hd-perc": ["--set", "perceptual=CLASSIFIER"],
}


def unpaired(name: str) -> list[str]:
    return ["--masks-from", "jtsc"] if name == "maskcyclegan" else []


def fill_paths(flags: list[str], runs: dict[str, Path], classifier: Path) -> list[str]:
    """TRAIN_FLAGS with their placeholders replaced: RUN:<id> by that run's folder, CLASSIFIER by the classifier."""
    return [str(runs[f.removeprefix("RUN:")]) if f.startswith("RUN:") else f.replace("CLASSIFIER", str(classifier))
            for f in flags]


def speed(iters: int, classifier: Path) -> list[dict]:
    rows = []
    for label, name, preset, overrides in SPEED:
        torch.manual_seed(0)
        overrides = {k: str(classifier) if v == "CLASSIFIER" else v for k, v in overrides.items()}
        model = build_model(name, preset, **overrides)
        o = model.options
        gen = torch.Generator().manual_seed(0)
        shape = (o.batch_size, 1, o.crop_size, o.crop_size)
        batch = {"image": torch.rand((o.batch_size, 3, o.crop_size, o.crop_size), generator=gen),
                 "mask": torch.randint(0, 3, shape, generator=gen).float() * 127.5}
        model.train_step(batch)  # warm-up
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model.train_step(batch)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append({"label": label, "model": name, "preset": preset, "crop": o.crop_size, "batch": o.batch_size,
                     "s_per_iter_min": round(min(times), 3), "s_per_iter_median": round(median, 3),
                     "epoch_s_150": round(median * -(-EPOCH_IMAGES // o.batch_size), 1),
                     "generator_params_M": round(sum(p.numel() for p in model.translator().parameters()) / 1e6, 2)})
        print(f"  {label}: {median:.2f} s / iter", flush=True)
    return rows


def write_project(folder: Path, data: Path, name: str = "stainshift.toml", cell_diameter: float = JTSC_DIAMETER
                  ) -> Path:
    """The project file; another ``cell_diameter`` (same runs folder) trains at another scale."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"""[project]
runs = "runs"
tracking_uri = "sqlite:///runs/mlflow.db"
cell_diameter = {cell_diameter}
split = [0.6, 0.2, 0.2]
seed = 0

[domains.jtsc]
path = "{data / 'jtsc_tecom'}"
masks = "{data / 'jtsc_tecom' / 'masks'}"
classes = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]
cell_diameter = {JTSC_DIAMETER}
""")
    return path


def noise_effect(translator, masks: list[np.ndarray], draws: int) -> dict:
    """Per-pixel SD over noise draws (same mask) vs per-pixel SD over masks (same draw), in 0-255 grey levels."""
    outs = []
    with torch.no_grad():
        for d in range(draws):
            torch.manual_seed(1000 + d)
            outs.append(torch.cat([translator(torch.from_numpy(m.astype(np.float32))[None, None]) for m in masks]))
    stack = torch.stack(outs) * 255  # draws x masks x 3 x H x W
    within = float(stack.std(0).mean())
    between = float(stack.std(1).mean())
    return {"sd_over_noise": round(within, 3), "sd_over_masks": round(between, 3),
            "ratio": round(within / max(between, 1e-9), 4), "draws": draws, "masks": len(masks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--speed-iters", type=int, default=5)
    parser.add_argument("--n-masks", type=int, default=8)
    parser.add_argument("--classifier-epochs", type=int, default=3, help="epochs of the perceptual loss's classifier")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.speed_iters, args.n_masks, args.classifier_epochs = 1, 1, 3, 1
    require_clean(args.allow_dirty or args.quick, "synth_models.py")
    prov = record(vars(args))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    data = Path(os.environ.get("STAINSHIFT_DATA", HERE.parents[1] / "shared" / "data")).resolve()
    out = Path("/tmp/synth_models_quick") if args.quick else RESULTS
    work = Path("/tmp/synth_models_quick_runs") if args.quick else HERE / "runs" / "synth_models"
    out.mkdir(parents=True, exist_ok=True)

    project_file = write_project(work, data)
    flags = ["--project", str(project_file), "--quiet"]
    # the local enhancer's first stage at half the scale: cells of half the diameter, the same runs folder
    half_flags = ["--project", str(write_project(work, data, "half_scale.toml", JTSC_DIAMETER / 2)), "--quiet"]
    classifier = work / "runs" / "classifiers" / "perceptual" / "model.pt"
    if not classifier.exists():  # the perceptual loss network: the domain's own classifier, as a user without VGG19
        code = cli(["classify", "train", "--domain", "jtsc", "--epochs", str(args.classifier_epochs), "--name",
                    "perceptual", "--no-track", *flags])
        if code != 0:
            raise SystemExit("classify train failed")
    print("speed", flush=True)
    speed_rows = speed(args.speed_iters, classifier)
    keep = ",".join(str(e) for e in range(1, args.epochs + 1))
    runs, selections = {}, {}
    for run_id, name, preset in MODELS:
        t0 = time.time()
        project_flags = half_flags if run_id in HALF_SCALE else flags
        code = cli(["synth", "train", name, "--domain", "jtsc", *unpaired(name),
                    *fill_paths(TRAIN_FLAGS.get(run_id, []), runs, classifier),
                    "--preset", preset, "--epochs", str(args.epochs), "--epochs-decay", "0", "--keep-epochs", keep,
                    "--run-id", run_id, "--no-track", *project_flags])
        if code != 0:
            raise SystemExit(f"synth train {name} failed")
        runs[run_id] = work / "runs" / "jtsc_to_jtsc" / name / run_id
        manifest = json.loads((runs[run_id] / "manifest.json").read_text())["epochs"]
        print(f"  trained {run_id}: {time.time() - t0:.0f} s", flush=True)
        cli(["select", "--src", "jtsc", "--dst", "jtsc", "--method", name, "--run-id", run_id, "--rule", "label-free",
             "--no-track", *project_flags])
        selections[run_id] = {"record": json.loads((runs[run_id] / "selected.json").read_text()),
                              "epoch_seconds": [e["seconds"] for e in manifest]}
    masks_dir = work / "masks"
    if not (masks_dir / "manifest.json").exists():
        cli(["synth", "masks", "--domain", "jtsc", "--n", str(args.n_masks), "--size", "120x120", "--crop",
             "--out", str(masks_dir), *flags])
    generated = {}
    for run_id, name, _ in MODELS:
        if run_id in HALF_SCALE:  # a stage, and the synthetic masks are drawn at the full scale
            continue
        target = work / f"generated_{run_id}"
        cli(["synth", "generate", "--domain", "jtsc", *unpaired(name), "--method", name, "--run-id", run_id,
             "--masks", str(masks_dir), "--out", str(target), *flags])
        generated[run_id] = json.loads((target / "manifest.json").read_text())

    # noise: does pix2pix use it?
    from stainshift.synth.generate import read_masks

    items, _ = read_masks(masks_dir)
    masks = [i.values for i in items]
    noise_model, _ = load_epoch(runs["p2p-noise"] / "epochs" / f"epoch_{args.epochs:03d}.pt")
    noise = noise_effect(noise_model.eval(), masks, 6)
    print(f"  noise: {noise}", flush=True)

    picture(runs, items, args.epochs, out / "synth_models.jpg")
    payload = {"provenance": prov, "speed": speed_rows, "selections": selections, "noise": noise,
               "generated": {k: v["config"] for k, v in generated.items()}}
    atomic_write_text(out / "synth_models.json", json.dumps(payload, indent=1, default=str))
    atomic_write_text(out / "synth_models.md", markdown(payload, args.epochs))
    print((out / "synth_models.md").read_text())


def _tile(image: np.ndarray, size: int = 96) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def picture(runs: dict, items, epochs: int, path: Path) -> None:
    """Rows: masks. Columns: the mask, pix2pix at each epoch, the noise model under 3 noise draws, pix2pixHD at each
    epoch (styles sampled), at its last epoch under every style cluster, then maskcyclegan, pix2pixHD's local
    enhancer and pix2pixHD with the perceptual loss at each epoch."""
    colours = np.array([[255, 255, 255], [120, 170, 240], [90, 20, 120]], np.uint8)
    columns: list[tuple[str, list[np.ndarray]]] = []
    from stainshift.synth.encoding import regions

    labels = [torch.from_numpy(i.values.astype(np.float32))[None, None] for i in items]
    columns.append(("mask", [colours[regions(x)[0].numpy()] for x in labels]))

    def run(translator, seed: int = 0) -> list[np.ndarray]:
        out = []
        with torch.no_grad():
            for x in labels:
                torch.manual_seed(seed)
                out.append(translator(x)[0].permute(1, 2, 0).mul(255).round().byte().numpy())
        return out

    for e in range(1, epochs + 1):
        columns.append((f"p2p e{e}", run(load_epoch(runs["p2p"] / "epochs" / f"epoch_{e:03d}.pt")[0])))
    noisy = load_epoch(runs["p2p-noise"] / "epochs" / f"epoch_{epochs:03d}.pt")[0]
    for s in range(3):
        columns.append((f"noise z{s}", run(noisy, s)))
    for e in range(1, epochs + 1):
        columns.append((f"hd e{e}", run(load_epoch(runs["hd"] / "epochs" / f"epoch_{e:03d}.pt")[0], 1)))
    hd = load_epoch(runs["hd"] / "epochs" / f"epoch_{epochs:03d}.pt")[0]
    for k in range(getattr(hd, "n_styles", 0)):
        hd.style = k
        columns.append((f"hd e{epochs} st{k}", run(hd)))
    hd.style = None
    for run_id, short in (("mcg", "mcg"), ("hd-local", "local"), ("hd-perc", "perc")):
        for e in range(1, epochs + 1):
            columns.append((f"{short} e{e}", run(load_epoch(runs[run_id] / "epochs" / f"epoch_{e:03d}.pt")[0], 1)))
    size = 96
    header = np.full((18, size * len(columns), 3), 255, np.uint8)
    for c, (name, _) in enumerate(columns):
        cv2.putText(header, name, (c * size + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    rows = [np.concatenate([_tile(col[1][r], size) for col in columns], axis=1) for r in range(len(labels))]
    grid = np.concatenate([header, *rows], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def markdown(p: dict, epochs: int) -> str:
    prov = p["provenance"]
    lines = ["# Mask-to-image models: speed, a real run on jtsc_tecom, the noise input", "",
             f"Commit {prov['commit']} (dirty: {prov['dirty']}), started {prov['started']}, {prov['machine']}.",
             f"Command: `{prov['command']}`.", "", "## Training speed (random batches, 1 warm-up step)", "",
             "| configuration | crop | batch | G params (M) | s / iter min | s / iter median | s / epoch of 150 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in p["speed"]:
        lines.append(f"| {r['label']} | {r['crop']} | {r['batch']} | {r['generator_params_M']} | "
                     f"{r['s_per_iter_min']:.2f} | {r['s_per_iter_median']:.2f} | {r['epoch_s_150']:.0f} |")
    lines += ["", f"## `synth train` on jtsc_tecom ({epochs} epochs each, `select` label-free)", "",
              "`stainshift synth train MODEL --domain jtsc --epochs N` (maskcyclegan: `--masks-from jtsc`, so its "
              "masks and images are drawn apart), then `stainshift select --src jtsc --dst jtsc "
              "--method MODEL --rule label-free` (no classifier: colour distance of the validation images "
              "generated from their masks to the real train images; epoch 0 = the real validation images, the "
              "floor), then `stainshift synth generate` on synthetic masks of the domain's shapes.", "",
              "| run | model | s / epoch | selected epoch | colour distance by epoch (0 = real floor) | SSIM to the "
              "real image of the mask, by epoch |", "|---|---|---|---|---|---|"]
    model_of = {run_id: f"{name} `{preset}`" for run_id, name, preset in MODELS}
    model_of["hd-half"] += (" at half the scale (cells 37 px), 48 px crops: the local enhancer's first stage, "
                            "scored at that scale")
    model_of["hd-local"] += (f" + local enhancer, `--init-from` hd-half, its global part frozen for "
                             f"{LOCAL_FROZEN_EPOCHS} epoch")
    model_of["hd-perc"] += " + perceptual loss of a jtsc classifier (`classify train`, ResNet18 from scratch)"
    for run_id, s in p["selections"].items():
        rec = s["record"]
        scores = rec["scores"]
        colour = " / ".join(f"{r['color']:.2f}" for r in scores)
        ssim = " / ".join(f"{r['ssim']:.3f}" for r in scores[1:])
        lines.append(f"| {run_id} | {model_of.get(run_id, run_id)} | {statistics.median(s['epoch_seconds']):.0f} | "
                     f"{rec['epoch']} | {colour} | {ssim} |")
    n = p["noise"]
    lines += ["", "## Does pix2pix use its noise input? (`cpu-noise-global`, 2 noise channels, global D)", "",
              f"Per-pixel SD of the generated images over {n['draws']} noise draws of the same mask: "
              f"{n['sd_over_noise']:.2f} grey levels; over {n['masks']} different masks under the same draw: "
              f"{n['sd_over_masks']:.2f}; ratio {n['ratio']:.3f}. (Without noise channels the translator is "
              "deterministic: SD 0.)", "", "![masks and generated images](synth_models.jpg)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
