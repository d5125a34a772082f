"""Do mask-to-image generators make synthetic data that helps a U-Net segment real cells? (issue 13)

    python benchmarks/synthesis_generators.py                       # -> results/synthesis_generators.md (+ .json, .png)
    python benchmarks/synthesis_generators.py --generators pix2pix  # one generator; parts already measured are kept
    python benchmarks/synthesis_generators.py --quick --allow-dirty # smoke run, writes under /tmp

Extends ``benchmarks/synthesis.py`` (same site loader, fixed test split, U-Net, Dice and paired bootstrap) with
SD from the registered mask-to-image generators. Site: jtsc_tecom single cells (96 px). For each number of real
training images k (RD = the first k of synthesis.py's pool order, so RD20 is inside RD60) and each seed:

- the shape database is built from the k RD masks only, and the synthetic masks (single-cell crops) from it;
- SD(sim): the stain simulator's renders of those masks (hgtp protocol), as in synthesis.py;
- SD(<generator>): the generator trained on the k RD image/mask pairs (the model's ``cpu`` preset, a fixed number
  of passes over the k pairs, so k = 60 gets three times the iterations of k = 20; no epoch chosen by any score),
  then run on the same synthetic masks;
- a U-Net per condition: RD, RD+SD(...) (half of each batch real) and SD(...) alone.

Image quality: Frechet distance on the project's own features (the penultimate pooled features of the seed's
RD-trained U-Net encoder) between 50 generated images and 50 real test images, next to the real-vs-real floor
(the other 50 real test images against the same 50). With ``--fid-model`` (``fid-helper`` after
``pip install -e '.[fid]'``, or an Inception TorchScript file) each part with synthetic images also records the
textbook Inception FID of the same 50 generated images against the same 50 real ones, next to its real-vs-real
floor; these features are fixed, so unlike FD they compare across generators and runs. Every measured part is
saved under ``results/synthesis_generators_parts/`` with its commit and start time, so a later run adds generators
or seeds without redoing the others.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from provenance import record, require_clean
from synthesis import N_TEST, data_root, jtsc_site, load_pair, split, train

from stainshift.atomic import atomic_write_text
from stainshift.data.io import cell_regions, read_image, read_mask
from stainshift.metrics import frechet_distance
from stainshift.models.kinds import DataRegime
from stainshift.models.registry import build_model, model_class, model_options
from stainshift.paired_stats import PairedBootstrap
from stainshift.synth.masks import SEMANTIC, MaskSpec, compose
from stainshift.synth.render import render_mask
from stainshift.synth.segmenter import dice_per_image, predict, to_tensor
from stainshift.synth.shapes import build_database

RESULTS = Path(__file__).resolve().parent / "results"
VALUES = np.array([0, 128, 255], np.uint8)  # region -> the value coding the generators read


def real_set(site, indices):
    xs, ys = zip(*(load_pair(read_image(site.items[i][0]), cell_regions(read_mask(site.items[i][1])), site.size)
                   for i in indices), strict=True)
    return np.stack(xs), np.stack(ys)


def synthetic_masks(site, rd: list[int], n: int, seed: int):
    """``n`` synthetic single-cell masks from the RD masks' shapes: (semantic at site.size, 3-class targets), and the
    full-size masks for the simulator."""
    db = build_database(site.name, [(site.items[i][1], site.items[i][2]) for i in rd])
    spec = MaskSpec(size=site.field, crop=site.crop)
    targets, full = [], []
    for k in range(n):
        rng = np.random.default_rng([seed, 7, k])
        mask = compose(db, spec, rng)
        target = np.zeros(mask.semantic.shape, np.uint8)
        target[mask.semantic == SEMANTIC["cytoplasm"]] = 1
        target[mask.semantic == SEMANTIC["nucleus"]] = 2
        targets.append(cv2.resize(target, site.size, interpolation=cv2.INTER_NEAREST))
        full.append((mask, rng))
    return full, np.stack(targets), db


def simulator_images(site, full, db) -> np.ndarray:
    return np.stack([cv2.resize(render_mask(mask, site.hospital, rng, white_px=db.diameter()), site.size,
                                interpolation=cv2.INTER_AREA) for mask, rng in full])


def train_generator(method: str, real_x: np.ndarray, real_y: np.ndarray, seed: int, iters: int, quiet: bool):
    """The generator's ``cpu`` preset trained on the RD pairs (random flips; an unpaired model draws its masks and
    images independently from them) for ``iters`` iterations; an epoch is one pass over the k pairs, and the
    learning-rate schedule (constant for half the epochs, then linear decay to 0, as the preset) is stretched over
    all of them."""
    torch.manual_seed(seed)
    batch = model_options(method, "cpu").batch_size
    per_epoch = max(1, len(real_x) // batch)
    total = max(2, -(-iters // per_epoch))
    model = build_model(method, "cpu", epochs=total // 2, epochs_decay=total - total // 2)
    rng = np.random.default_rng([seed, 13])
    b = model.options.batch_size
    unpaired = model_class(method).data_regime is DataRegime.UNPAIRED_MASK  # maskcyclegan: masks and images apart
    t0 = time.time()
    for step in range(iters):
        idx = rng.integers(len(real_x), size=b)
        image_idx = rng.integers(len(real_x), size=b) if unpaired else idx
        xs, ms = [], []
        for i, j in zip(idx, image_idx, strict=True):
            x, y = real_x[j], VALUES[real_y[i]]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(np.ascontiguousarray(x))
            ms.append(np.ascontiguousarray(y))
        data = {"image": torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255,
                 "mask": torch.from_numpy(np.stack(ms)).float()[:, None]}
        losses = model.train_step(data)
        if (step + 1) % per_epoch == 0 or step + 1 == iters:
            model.end_epoch()
        if not quiet and (step + 1) % 100 == 0:
            print(f"    {method} it {step + 1}/{iters} {time.time() - t0:.0f} s "
                  + f"lr {model.learning_rates()['G']:.1e} " + " ".join(f"{k} {v:.2f}" for k, v in losses.items()),
                  flush=True)
    return model, round(time.time() - t0, 1)


@torch.no_grad()
def generate(model, targets: np.ndarray) -> np.ndarray:
    translator = model.translator().eval()
    torch.manual_seed(0)
    out = []
    for i in range(0, len(targets), 16):
        m = torch.from_numpy(VALUES[targets[i:i + 16]]).float()[:, None]
        out.append(translator(m).permute(0, 2, 3, 1).mul(255).round().byte().numpy())
    return np.concatenate(out)


@torch.no_grad()
def inception_features(inception, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return torch.cat([inception(x[i:i + 16]) for i in range(0, len(x), 16)]).numpy()


@torch.no_grad()
def unet_features(unet, images: np.ndarray) -> np.ndarray:
    unet.eval()
    feats = [unet.encoder(to_tensor(images[i:i + 16]))[-1].mean((2, 3)) for i in range(0, len(images), 16)]
    return torch.cat(feats).numpy()


def fid_fields(fid: dict, images: np.ndarray) -> dict:
    """A part's FID entries: the textbook FID of the first 50 ``images`` against the second real half, its floor."""
    generated = inception_features(fid["model"], images[:N_TEST // 2])
    return {"fid": frechet_distance(generated, fid["real_b"], shrinkage=0), "fid_floor": fid["floor"],
            "fid_model": {"file": fid["file"], "hash": fid["hash"]}}


def fid_only_parts(parts: Path, k: int, seed: int, sources: list[str], sd: dict, real_x: np.ndarray,
                   real_y: np.ndarray, synth_y: np.ndarray, fid: dict, args, prov: dict) -> None:
    """A part per source whose images at (k, seed) no part has an FID for: the generator trained as for the U-Net
    parts (the same seed and iterations), run on the same synthetic masks, and the FID of its first 50 images."""
    have = {parse_condition(r["condition"])[1] for r in map(json.loads, map(Path.read_text,
                                                                           parts.glob(f"k{k}_s{seed}_*.json")))
            if "fid" in r}
    for source in sources:
        if source in have:
            continue
        row = {"k": k, "seed": seed, "condition": f"FID-SD({source})"}
        if source not in sd:
            row["generator_iterations"] = max(2, round(args.gen_iters * k / 20))
            model, row["generator_seconds"] = train_generator(source, real_x, real_y, seed,
                                                              row["generator_iterations"], args.quiet)
            sd[source] = generate(model, synth_y)
        row.update(fid_fields(fid, sd[source]), commit=prov["commit"], dirty=prov["dirty"], started=prov["started"],
                   machine=prov["machine"]["cpu"], config=prov["config"], torch_threads=torch.get_num_threads(),
                   load_1min=round(os.getloadavg()[0], 2))
        atomic_write_text(part_file(parts, k, seed, row["condition"]), json.dumps(row))
        if not args.quiet:
            print(f"  k={k} seed {seed} {source:<14} FID {row['fid']:.1f} (floor {row['fid_floor']:.1f})", flush=True)


def part_file(parts: Path, k: int, seed: int, cond: str) -> Path:
    return parts / f"k{k}_s{seed}_{cond.replace('+', '_').replace('(', '-').replace(')', '')}.json"


def parse_condition(cond: str) -> tuple[bool, str | None, bool]:
    """'RD+SD(pix2pix)+aug' -> (real images in, synthetic source 'pix2pix', augmented)."""
    synth = cond.split("SD(")[1].split(")")[0] if "SD(" in cond else None
    return cond.startswith("RD"), synth, cond.endswith("+aug")


def conditions_for(generators: list[str], aug_generators: list[str]) -> list[str]:
    plain = ["RD", "RD+SD(sim)"] + [c for g in generators for c in (f"SD({g})", f"RD+SD({g})")]
    augmented = (["RD+aug"] + [f"RD+SD({g})+aug" for g in aug_generators]) if aug_generators else []
    return plain + augmented


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", default="20", help="numbers of real training images, e.g. 20,60")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--generators", default="pix2pix,pix2pixhd")
    parser.add_argument("--aug-generators", default="pix2pix",
                        help="generators also measured with the U-Net's augmentation (RD+SD+aug vs RD+aug); '' = none")
    parser.add_argument("--gen-iters", type=int, default=600,
                        help="generator iterations per 20 real pairs: k pairs get gen_iters * k / 20, the same passes")
    parser.add_argument("--iters", type=int, default=300, help="U-Net iterations")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-synth", type=int, default=120)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--fid-model", default=None,
                        help="Inception features for FID: 'fid-helper' (pip install -e '.[fid]') or a TorchScript file")
    parser.add_argument("--fid-only", action="store_true",
                        help="no U-Net: the Inception FID of the simulator's and each generator's images at each k and "
                             "seed that no part has one for (needs --fid-model)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.k, args.seeds, args.gen_iters, args.iters, args.n_synth, args.boot = "20", "0", 4, 4, 16, 100
    require_clean(args.allow_dirty or args.quick, "synthesis_generators.py")
    if args.fid_only and not args.fid_model:
        parser.error("--fid-only needs --fid-model")
    ks = [int(v) for v in args.k.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    generators = [g for g in args.generators.split(",") if g]
    aug_generators = [g for g in args.aug_generators.split(",") if g]
    if args.fid_only:
        aug_generators = []  # no U-Net is trained, so there is nothing to augment
    if not set(aug_generators) <= set(generators):
        parser.error(f"--aug-generators {args.aug_generators}: each must also be in --generators")
    conditions = conditions_for(generators, aug_generators)
    config = {"site": "jtsc", "k": ks, "seeds": seeds, "generators": generators, "gen_iters_per_20": args.gen_iters,
              "iters": args.iters, "batch": args.batch, "n_synth": args.n_synth, "n_test": N_TEST}
    prov = record(config)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = Path("/tmp/synthesis_generators_quick") if args.quick else RESULTS
    parts = out / "synthesis_generators_parts"
    parts.mkdir(parents=True, exist_ok=True)
    site = jtsc_site(data_root())
    test_idx, pool = split(site)
    test_x, test_y = real_set(site, test_idx)
    half = N_TEST // 2
    fid = None
    if args.fid_model:  # the real halves' Inception features and their FID, the floor, are the same for every part
        from stainshift.inception import fid_helper_model, load_inception
        from stainshift.train.checkpoints import file_hash

        inception = load_inception(args.fid_model)
        fid_file = fid_helper_model() if args.fid_model == "fid-helper" else Path(args.fid_model)
        real_a, real_b = (inception_features(inception, x) for x in (test_x[:half], test_x[half:]))
        fid = {"model": inception, "real_b": real_b, "floor": frechet_distance(real_a, real_b, shrinkage=0),
               "file": fid_file.name, "hash": file_hash(fid_file)}
    pictures = {}
    for k in ks:
        rd = pool[:k]
        real_x, real_y = real_set(site, rd)
        for seed in seeds:
            full, synth_y, db = synthetic_masks(site, rd, args.n_synth, seed)
            sd = {"sim": simulator_images(site, full, db)}
            if args.fid_only:
                fid_only_parts(parts, k, seed, ["sim", *generators], sd, real_x, real_y, synth_y, fid, args,
                               {**prov, "config": config})
                continue
            gen_seconds, gen_iters = {}, {}
            for g in generators:
                if all(part_file(parts, k, seed, c).exists() for c in conditions if parse_condition(c)[1] == g):
                    continue
                gen_iters[g] = max(2, round(args.gen_iters * k / 20))
                model, gen_seconds[g] = train_generator(g, real_x, real_y, seed, gen_iters[g], args.quiet)
                sd[g] = generate(model, synth_y)
            pictures.setdefault(k, {"masks": synth_y[:6], **{g: v[:6] for g, v in sd.items()}})
            for g, v in sd.items():
                pictures[k].setdefault(g, v[:6])
            rd_unet, fids = None, {}  # fids: one per source of images, shared by its conditions
            for cond in conditions:
                path = part_file(parts, k, seed, cond)
                if path.exists() and not args.quick:
                    continue
                real, name, augmented = parse_condition(cond)
                if name is not None and name not in sd:
                    continue
                data = ([(real_x, real_y)] if real else []) + ([(sd[name], synth_y)] if name is not None else [])
                t0 = time.time()
                unet = train(data, augmented, seed, args.iters, min(96, *site.size), args.batch)
                dice = dice_per_image(predict(unet, test_x), test_y)
                row = {"k": k, "seed": seed, "condition": cond, "dice": dice.tolist(),
                       "seconds": round(time.time() - t0, 1), "commit": prov["commit"], "dirty": prov["dirty"],
                       "started": prov["started"], "machine": prov["machine"]["cpu"], "config": config,
                       "torch_threads": torch.get_num_threads(), "load_1min": round(os.getloadavg()[0], 2)}
                if cond == "RD":
                    rd_unet = unet
                wants_fd = name is not None and not augmented  # the +aug rows share their SD images' FD
                if wants_fd and rd_unet is None and part_file(parts, k, seed, "RD").exists():
                    rd_unet = train([(real_x, real_y)], False, seed, args.iters, min(96, *site.size), args.batch)
                if wants_fd and rd_unet is not None:
                    f_test_a = unet_features(rd_unet, test_x[:half])
                    f_test_b = unet_features(rd_unet, test_x[half:])
                    row["fd"] = frechet_distance(unet_features(rd_unet, sd[name][:half]), f_test_b)
                    row["fd_floor"] = frechet_distance(f_test_a, f_test_b)
                if fid is not None and name is not None:
                    if name not in fids:
                        fids[name] = fid_fields(fid, sd[name])
                    row.update(fids[name])
                if name is not None and name in gen_seconds:
                    row["generator_seconds"] = gen_seconds[name]
                    row["generator_iterations"] = gen_iters[name]
                atomic_write_text(path, json.dumps(row))  # a part cut short must not count as done
                if not args.quiet:
                    fd = f", FD {row['fd']:.2f} (floor {row['fd_floor']:.2f})" if "fd" in row else ""
                    fd += f", FID {row['fid']:.1f} (floor {row['fid_floor']:.1f})" if "fid" in row else ""
                    print(f"  k={k} seed {seed} {cond:<16} Dice {dice.mean():.3f}{fd} ({row['seconds']:.0f} s)",
                          flush=True)
    write_results(parts, out, prov, args.boot)
    if pictures:
        picture(pictures, out / "synthesis_generators.png")
    print((out / "synthesis_generators.md").read_text())


def write_results(parts: Path, out: Path, prov: dict, n_boot: int) -> None:
    all_rows = [json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))]
    rows = [r for r in all_rows if "dice" in r]  # the --fid-only parts hold no U-Net
    table, summary = [], []
    for k in sorted({r["k"] for r in rows}):
        at_k = [r for r in rows if r["k"] == k]
        seeds = sorted({r["seed"] for r in at_k})
        conds = sorted({r["condition"] for r in at_k}, key=lambda c: (c not in ("RD", "RD+aug"), c.startswith("SD"), c))
        have = {c: [s for s in seeds if any(r["seed"] == s and r["condition"] == c for r in at_k)] for c in conds}

        def dice(c: str, on: list[int], at_k: list[dict] = at_k) -> np.ndarray:  # (seeds, test images)
            return np.stack([np.asarray(next(r for r in at_k if r["seed"] == s and r["condition"] == c)["dice"])
                             .mean(axis=1) for s in on])

        if "RD" not in have:
            continue
        n_images = dice("RD", have["RD"][:1]).shape[1]
        boot = PairedBootstrap(n_images, n_boot=n_boot, seed=0)
        for c in conds:
            on = [s for s in have[c] if s in have["RD"]]  # a condition is paired with RD on the seeds both have
            if not on:
                continue
            value = boot.mean_score(dice(c, on))
            diff = boot.score_difference(dice(c, on), dice("RD", on)) if c != "RD" else None
            _, name, augmented = parse_condition(c)
            on_aug = [s for s in on if s in have.get("RD+aug", [])]
            aug_diff = boot.score_difference(dice(c, on_aug), dice("RD+aug", on_aug)) \
                if augmented and name is not None and on_aug else None
            fds = [r["fd"] for r in at_k if r["condition"] == c and "fd" in r]
            floors = [r["fd_floor"] for r in at_k if r["condition"] == c and "fd_floor" in r]
            commits = sorted({f"{r['commit']} ({r.get('machine', '?')})" for r in at_k if r["condition"] == c})
            summary.append({"k": k, "condition": c, "seeds": on, "dice": value.value, "low": value.low,
                            "high": value.high, "per_seed": dice(c, on).mean(axis=1).round(4).tolist(),
                            "vs_rd": diff.value if diff else 0.0, "vs_rd_low": diff.low if diff else 0.0,
                            "vs_rd_high": diff.high if diff else 0.0,
                            "verdict": diff.verdict() if diff else "(reference)",
                            "vs_rd_aug": None if aug_diff is None else aug_diff.summary(),
                            "fd": float(np.mean(fds)) if fds else None,
                            "fd_floor": float(np.mean(floors)) if floors else None, "commits": commits})
            vs = "reference" if diff is None else \
                f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] {diff.verdict()}"
            vs_aug = "" if aug_diff is None else \
                f"{aug_diff.value:+.3f} [{aug_diff.low:+.3f}, {aug_diff.high:+.3f}] {aug_diff.verdict()}"
            fd = "" if not fds else f"{np.mean(fds):.2f} (floor {np.mean(floors):.2f})"
            table.append(f"| {k} | {c} | {value.value:.3f} [{value.low:.3f}, {value.high:.3f}] | "
                         f"{' / '.join(f's{q} {v:.3f}' for q, v in zip(on, dice(c, on).mean(axis=1), strict=True))} | "
                         f"{vs} | {vs_aug} | {fd} | "
                         f"{', '.join(commits)} |")
    config = rows[0]["config"] if rows else {}
    generated = [r for r in rows if parse_condition(r["condition"])[1] not in (None, "sim")]
    for r in generated:  # the earliest parts named the budget "gen_iters"
        r["per_20"] = r["config"].get("gen_iters_per_20", r["config"].get("gen_iters"))
    per_20 = sorted({r["per_20"] for r in generated})
    iterations = {k: sorted({_generator_iterations(r) for r in generated if r["k"] == k})
                  for k in sorted({r["k"] for r in rows})}
    generator_budget = (f"{per_20[0]} iterations per 20 pairs, so the same passes over the pairs at every k"
                        if len(per_20) == 1 else "iterations per k listed under the table")
    fid_rows, fid_lines = fid_table(all_rows)
    generated += [r for r in all_rows if "dice" not in r and "generator_seconds" in r]
    timing = generator_timing(generated)
    atomic_write_text(out / "synthesis_generators.json",
                      json.dumps({"provenance": prov, "rows": summary, "fid": fid_rows}, indent=1))
    lines = [
        "# Mask-to-image generators as synthetic data for segmentation (jtsc_tecom)", "",
        f"Tables written at commit {prov['commit']} (dirty: {prov['dirty']}), {prov['started']}, "
        f"{prov['machine']}; each part's own commit and CPU are in the last column and in "
        "`synthesis_generators_parts/`.", "",
        f"A fixed test split of {N_TEST} real images; RD = k real image/mask pairs; the shape database and every "
        f"generator see only those k. SD = {config.get('n_synth')} images from synthetic single-cell masks: the "
        f"simulator's renders (sim) or a generator trained on the k pairs ({generator_budget}, of its `cpu` preset; "
        "no epoch picked by any score). "
        "U-Net (ResNet18 encoder, from scratch), "
        f"{config.get('iters')} iterations of batch {config.get('batch')}. Dice = mean of cytoplasm and nucleus Dice "
        "per test image; value = mean over images and seeds, 95% paired bootstrap CI; 'vs RD' = paired difference, "
        "on the seeds both conditions have (the 'per seed' column names them). "
        "FD = Frechet distance of the RD U-Net encoder's pooled features, 50 generated vs 50 real test images; "
        "floor = the other 50 real test images vs the same 50. A run that adds a generator to a k and seed "
        "retrains that RD U-Net for its features, and the retrained one differs (CPU threads, machine), so read "
        "each FD against its own floor, not across generators.", "",
        "'+aug' = the U-Net's flips, blur, sharpening, noise, channel inversion, brightness, contrast and "
        "desaturation on every training image (synthesis.py's augmentation); 'vs RD+aug' = paired difference to "
        "RD with the same augmentation.", "",
        "| k | training data | Dice [95% CI] | per seed | vs RD [95% CI] | vs RD+aug [95% CI] | "
        "FD (real-vs-real floor) | commits |",
        "|---|---|---|---|---|---|---|---|", *table, "",
        "Generator iterations: " + "; ".join(f"k = {k}: {', '.join(map(str, v))}" for k, v in iterations.items() if v)
        + ".", "",
        "Generator training time (the `cpu` presets, from the parts: one row per generator, k and machine; each "
        "generator trained once per seed and condition that needs it, and again for a `--fid-only` part). "
        "The parts before 12e6255 record neither "
        "thread counts nor what else ran on the machine, so these are the costs these runs saw, not a controlled "
        "speed measurement (that is `synth_models.md`'s table):", "",
        "| generator | k | iterations | trainings | s / iteration (min-max) | minutes per training | machine | "
        "torch threads |",
        "|---|---|---|---|---|---|---|---|", *timing, "",
        *fid_lines, "", "![masks and generated images](synthesis_generators.png)", ""]
    atomic_write_text(out / "synthesis_generators.md", "\n".join(lines))


def fid_table(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Inception FID per k and source of synthetic images, from every part that recorded one. The parts of one
    generator training (SD, RD+SD) share its images and so its FID; a +aug part or a --fid-only part is a training of
    its own, and a seed's value is the mean over its trainings."""
    with_fid = [r for r in rows if "fid" in r]
    if not with_fid:
        return [], ["Inception FID was not measured (`--fid-model fid-helper` after `pip install -e '.[fid]'`, or "
                    "a TorchScript file)."]
    models = sorted({f"`{r['fid_model']['file']}` (sha256 {r['fid_model']['hash'][:12]})" for r in with_fid})
    summary, lines = [], []
    for k in sorted({r["k"] for r in with_fid}):
        for source in sorted({parse_condition(r["condition"])[1] for r in with_fid if r["k"] == k}):
            of = [r for r in with_fid if r["k"] == k and parse_condition(r["condition"])[1] == source]
            per_seed, retrained = {}, set()
            for seed in sorted({r["seed"] for r in of}):
                trainings = {round(r["fid"], 6) for r in of if r["seed"] == seed}  # one value per training
                per_seed[seed] = float(np.mean(sorted(trainings)))
                if source != "sim" and any(r["condition"].startswith("FID-") for r in of if r["seed"] == seed):
                    retrained.add(seed)
            floor = of[0]["fid_floor"]
            commits = sorted({f"{r['commit']} ({r.get('machine', '?')})" for r in of})
            summary.append({"k": k, "source": source, "fid": float(np.mean(list(per_seed.values()))),
                            "per_seed": per_seed, "retrained_seeds": sorted(retrained), "floor": floor,
                            "commits": commits})
            lines.append(f"| {k} | {source} | {np.mean(list(per_seed.values())):.1f} | "
                         + " / ".join(f"s{q} {v:.1f}{'*' if q in retrained else ''}" for q, v in per_seed.items())
                         + f" | {floor:.1f} | {', '.join(commits)} |")
    return summary, [
        "## Image quality: Inception FID", "",
        "InceptionV3 pool features (2048-d) from " + ", ".join(models) + ", textbook sample covariances, of the "
        "same 50 generated and 50 real test images as FD; floor = the other 50 real test images vs those 50. With "
        "50 images in 2048 dimensions FID is strongly biased upwards (paper 004 reports a floor of about 140 on its "
        "own set), so read each value against the floor, not against published FIDs. The features are fixed, so "
        "unlike FD these compare across generators and runs. Only parts run with `--fid-model` have one. "
        "A value is of the images a U-Net of the Dice table trained on (a +aug row's, for the generators measured "
        "with `--fid-model` in their +aug rows), except where marked *: a `--fid-only` part, which trained the "
        "generator again (same seed, iterations and masks; CPU training is not bit-for-bit repeatable) for its "
        "images alone. The simulator's images are rendered again identically.", "",
        "| k | synthetic images | FID (mean over seeds) | per seed | real-vs-real floor | commits |",
        "|---|---|---|---|---|---|", *lines]


def generator_timing(generated: list[dict]) -> list[str]:
    """Table rows of generator training speed from the parts that trained a generator (the SD, RD+SD and +aug parts
    of one run share one training, so each (k, seed, generator, start) counts once)."""
    trainings: dict[tuple, dict] = {}
    for r in generated:
        if "generator_seconds" in r:
            _, name, _ = parse_condition(r["condition"])
            trainings[(r["k"], r["seed"], name, r["started"])] = r | {"name": name, "iters": _generator_iterations(r)}
    groups: dict[tuple, list[dict]] = {}
    for r in trainings.values():
        threads = str(r.get("torch_threads", "not recorded"))
        groups.setdefault((r["name"], r["k"], r["iters"], r.get("machine", "?"), threads), []).append(r)
    rows = []
    for (name, k, iters, machine, threads), runs in sorted(groups.items()):
        per_iter = [r["generator_seconds"] / iters for r in runs]
        minutes = [r["generator_seconds"] / 60 for r in runs]
        rows.append(f"| {name} | {k} | {iters} | {len(runs)} | {_span(per_iter, '.2f')} | {_span(minutes, '.0f')} | "
                    f"{machine} | {threads} |")
    return rows


def _generator_iterations(r: dict) -> int:
    """A generator part's iterations (the earliest parts recorded only the budget per 20 pairs)."""
    if "generator_iterations" in r:
        return r["generator_iterations"]
    return max(2, round(r["per_20"] * r["k"] / 20))


def _span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def picture(pictures: dict, path: Path) -> None:
    """Per k: synthetic masks, then each generator's images from them (first seed)."""
    colours = np.array([[255, 255, 255], [120, 170, 240], [90, 20, 120]], np.uint8)
    rows = []
    for k, p in pictures.items():
        tiles = [("masks", colours[p["masks"]])] + [(g, v) for g, v in p.items() if g != "masks"]
        for name, images in tiles:
            row = np.concatenate(list(images), axis=1)
            bar = np.full((16, row.shape[1], 3), 255, np.uint8)
            cv2.putText(bar, f"k={k}: {name}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            rows.append(np.concatenate([bar, row], axis=0))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
