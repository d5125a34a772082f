"""Mask -> image generation: the mask encoding, pix2pix's options, `synth train`, `select` on generation epochs and
`synth generate` with its layout, manifest, resume and one-line errors. Real training on the simulated project."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from stainshift.cli.main import main
from stainshift.data.io import read_image, read_mask, write_image
from stainshift.models.registry import build_model
from stainshift.project import Project, load_project
from stainshift.synth.encoding import check_label_map, encode, region_edges, regions, semantic_to_values

from .conftest import simulated_project


def _flags(project: Project) -> list[str]:
    return ["--project", str(project.file), "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Project:
    """The simulated clinic with masks, a tiny pix2pix trained on it (2 epochs) and a label-free selection."""
    project = simulated_project(tmp_path_factory.mktemp("gen"), per_class=6, split=(0.5, 0.25, 0.25), masks=True)
    assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--run-id", "t",
                 "--no-track", *_flags(project)]) == 0
    assert main(["select", "--src", "clinic", "--dst", "clinic", "--method", "pix2pix", "--no-track", "--rule",
                 "label-free", *_flags(project)]) == 0
    return project


@pytest.fixture(scope="module")
def synthetic_masks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masks") / "m"
    assert main(["synth", "masks", "--simulator", "--n", "3", "--size", "64x64", "--crop", "--out", str(out),
                 "--quiet"]) == 0
    return out


# -- encoding -----------------------------------------------------------------------------------------------------
def test_encoding_quantises_the_sites_values_and_marks_region_boundaries():
    labels = torch.zeros(1, 1, 8, 8)
    labels[..., 2:6, 2:6] = 140  # cytoplasm, a BCCD-like noisy value
    labels[..., 3:5, 3:5] = 250  # nucleus
    r = regions(labels)
    assert r[0, 0, 0] == 0 and r[0, 2, 2] == 1 and r[0, 3, 3] == 2
    onehot = encode(labels)
    assert onehot.shape == (1, 3, 8, 8) and set(onehot.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal((onehot[0] > 0).float().argmax(0), r[0])
    edges = region_edges(r)[0, 0]
    assert edges[0, 0] == 0 and edges[7, 7] == 0  # far from any boundary
    assert edges[1, 3] == 1 and edges[2, 3] == 1  # both sides of the background / cytoplasm border
    assert edges[2, 2:6].sum() == 4 and edges[4, 4] == 1  # cytoplasm ring and the nucleus border
    with_all = encode(labels, "colour", edges=True, noise_channels=2)
    assert with_all.shape == (1, 6, 8, 8)
    assert torch.equal(with_all[0, 3], edges * 2 - 1)


def test_semantic_ids_become_the_value_coding_and_raw_ids_are_refused(tmp_path):
    sem = np.array([[0, 1], [2, 3]], np.uint8)
    assert semantic_to_values(sem).tolist() == [[0, 0], [128, 255]]  # red cells: background (no real mask has them)
    with pytest.raises(Exception, match="class ids"):
        check_label_map(sem, tmp_path / "m.png")


# -- pix2pix ------------------------------------------------------------------------------------------------------
def _pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, 8:24, 8:24] = 128
    mask[:, :, 12:20, 12:20] = 255
    image = torch.ones(2, 3, size, size) * torch.tensor([0.9, 0.8, 0.85])[:, None, None]
    image[:, :, 8:24, 8:24] = torch.tensor([0.8, 0.6, 0.8])[:, None, None]
    image[:, :, 12:20, 12:20] = torch.tensor([0.35, 0.15, 0.5])[:, None, None]
    return mask, image


@pytest.mark.parametrize("overrides", [{}, {"discriminator": "global", "n_layers_d": 3, "noise_channels": 2,
                                        "mask_input": "colour", "edges": True}])
def test_pix2pix_learns_a_fixed_mask_image_pair(overrides):
    torch.manual_seed(0)
    model = build_model("pix2pix", "tiny", lr=1e-3, **overrides)
    mask, image = _pair()
    translator = model.translator()

    def l1() -> float:
        translator.eval()
        with torch.no_grad():
            return float((translator(mask) - image).abs().mean())

    before = l1()
    for _ in range(40):
        losses = model.train_step({"image": image, "mask": mask})
    assert {"G_gan", "G_L1", "D_real", "D_fake"} <= set(losses)
    assert l1() < 0.5 * before


def test_noise_channels_make_generations_depend_on_the_seed_only():
    torch.manual_seed(0)
    translator = build_model("pix2pix", "tiny", noise_channels=2).translator().eval()
    mask, _ = _pair()
    with torch.no_grad():
        torch.manual_seed(5)
        a = translator(mask)
        torch.manual_seed(5)
        b = translator(mask)
        torch.manual_seed(6)
        c = translator(mask)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_global_discriminator_gives_one_logit_per_image_at_any_size():
    from stainshift.nets.discriminators import GlobalDiscriminator

    d = GlobalDiscriminator(6, ndf=4, n_layers=3)
    assert d(torch.rand(3, 6, 32, 32)).shape == (3, 1) and d(torch.rand(2, 6, 48, 64)).shape == (2, 1)


# -- commands -----------------------------------------------------------------------------------------------------
def test_select_scores_generation_epochs_against_the_real_floor(trained):
    from stainshift import runs

    run = runs.method_dir(trained, "clinic", "clinic", "pix2pix") / "t"
    record = json.loads(runs.selected_file(run).read_text())
    assert record["epoch"] in (1, 2) and record["rule"] == "label-free" and record["ssim_min"] == 0.0
    rows = {r["epoch"]: r for r in record["scores"]}
    assert all(0 < rows[e]["ssim"] < 1 for e in (1, 2))  # SSIM of each generation to the real image of its mask
    assert all(rows[e]["color"] > rows[0]["color"] for e in (1, 2))  # a 2-epoch generator is not real yet
    assert record["epoch"] == min((1, 2), key=lambda e: rows[e]["color"])  # label-free, no classifier: colour


def test_the_segmentation_rule_ranks_epochs_by_a_segmenters_dice_on_real_masks(trained):
    from stainshift import runs

    assert main(["select", "--src", "clinic", "--dst", "clinic", "--method", "pix2pix", "--no-track", "--rule",
                 "segmentation", "--segmenter-iters", "40", *_flags(trained)]) == 0
    run = runs.method_dir(trained, "clinic", "clinic", "pix2pix") / "t"
    record = json.loads(runs.selected_file(run).read_text())
    dice = {r["epoch"]: r["dice"] for r in record["scores"]}
    assert record["rule"] == "segmentation" and set(dice) == {0, 1, 2} and all(0 <= d <= 1 for d in dice.values())
    # the U-Net trained on the real train images segments the real validation cells better than one trained on
    # what a 2-epoch tiny generator draws from the same masks
    assert dice[0] > max(dice[1], dice[2])
    rows = {r["epoch"]: r for r in record["scores"]}
    tied = [e for e in (1, 2) if dice[e] >= max(dice[1], dice[2]) - 0.01]
    assert record["epoch"] == min(tied, key=lambda e: (rows[e]["color"], e))  # ties: lowest colour, then earliest
    # the label-free record is kept beside it: one rule does not overwrite the other's
    assert json.loads(runs.selection_file(run, "label-free", None, "clinic").read_text())["rule"] == "label-free"


def test_the_default_rule_falls_back_to_label_free_without_two_train_masks(tmp_path):
    from stainshift import runs
    from stainshift.data.splits import samples_in

    project = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33), masks=True)
    flags = _flags(project)
    assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--run-id", "f", "--epochs",
                 "1", "--keep-epochs", "1", "--no-track", *flags]) == 0
    for sample in samples_in(load_project(project.file), "clinic", "train")[1:]:
        sample.mask.unlink()  # one train mask left: nothing to train a segmenter on
    assert main(["select", "--src", "clinic", "--dst", "clinic", "--method", "pix2pix", "--no-track", *flags]) == 0
    run = runs.method_dir(project, "clinic", "clinic", "pix2pix") / "f"
    assert json.loads(runs.selected_file(run).read_text())["rule"] == "label-free"


def test_segmenter_dice_prefers_images_that_follow_their_masks():
    """Images drawn from their own masks teach the U-Net; the same images under other masks do not."""
    from stainshift.select import SegmenterDice

    rng = np.random.default_rng(0)
    masks = np.zeros((12, 1, 32, 32), np.float32)
    for i in range(12):  # a disc of 128 with a 255 core at a random place
        yy, xx = np.mgrid[:32, :32]
        cy, cx = rng.integers(10, 22, size=2)
        r = np.hypot(yy - cy, xx - cx)
        masks[i, 0][r < 9] = 128
        masks[i, 0][r < 4] = 255
    palette = {0: (0.9, 0.85, 0.8), 128: (0.7, 0.5, 0.8), 255: (0.3, 0.1, 0.5)}

    def draw(m: np.ndarray) -> torch.Tensor:
        image = np.zeros((len(m), 3, 32, 32), np.float32)
        for value, colour in palette.items():
            image += (m == value) * np.asarray(colour, np.float32)[None, :, None, None]
        return torch.from_numpy(image + rng.normal(0, 0.03, image.shape).astype(np.float32)).clamp(0, 1)

    # the masks as a site stores them, with compression noise (BCCD): 30-odd distinct values, still three regions
    noisy = np.clip(masks + (masks > 0) * rng.integers(-12, 1, masks.shape), 0, 255).astype(np.float32)
    assert len(np.unique(noisy)) > 16
    train, val = torch.from_numpy(noisy[:8]), torch.from_numpy(noisy[8:])
    score = SegmenterDice(train, val, draw(masks[8:]), seed=0, iters=60)
    faithful = score(draw(masks[:8]))
    shuffled = score(draw(np.roll(masks[:8], 1, axis=0)))  # each image drawn from the next cell's mask
    assert faithful > 0.7 and faithful > shuffled + 0.2


def test_generate_writes_a_layout_a_domain_reads_with_manifest_and_coco(trained, synthetic_masks, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["synth", "generate", "--domain", "clinic", "--masks", str(synthetic_masks), "--out", str(out),
                 "--seed", "4", *_flags(trained)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "stainshift generated images" and manifest["config"]["method"] == "pix2pix"
    assert manifest["config"]["epoch"] == json.loads(
        (trained.runs / "clinic_to_clinic" / "pix2pix" / "t" / "selected.json").read_text())["epoch"]
    assert len(manifest["images"]) == 3 and all(e["generated"] for e in manifest["images"])
    coco = json.loads((out / "coco.json").read_text())
    for image_entry, e in zip(coco["images"], manifest["images"], strict=True):
        image = read_image(out / e["image"])
        mask = read_mask(out / e["mask"])
        assert image.shape[:2] == mask.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 128, 255}
        source = read_mask(synthetic_masks / "semantic" / f"{e['stem']}.png")
        assert np.array_equal(mask, semantic_to_values(source))
        anns = [a for a in coco["annotations"] if a["image_id"] == image_entry["id"]]
        assert all(a["category_id"] != 1 for a in anns)  # red cells are not in the generator's input: not annotated
        assert set(np.unique(read_mask(out / e["semantic"]))) <= {0, 2, 3}
        painted = np.zeros((64, 64), bool)
        for a in anns:
            painted |= mask_utils.decode(a["segmentation"]).astype(bool)
        assert np.array_equal(painted, np.isin(source, (2, 3)))
    # the output is a domain: images with their masks
    assert main(["domains", "add", "generated", str(out / "images"), "--masks", str(out / "masks"),
                 *_flags(trained)]) == 0
    from stainshift.data.domains import scan_domain

    samples = scan_domain(load_project(trained.file).domain("generated"))
    assert len(samples) == 3 and all(s.mask is not None for s in samples)


def test_generate_is_seeded_and_resumes_what_was_lost(trained, synthetic_masks, tmp_path):
    args = ["synth", "generate", "--domain", "clinic", "--masks", str(synthetic_masks), "--epoch", "2", *_flags(
        trained)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "manifest.json").read_text())["images"][1]["image"]
    before = read_image(tmp_path / "a" / first)
    (tmp_path / "a" / first).unlink()
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert np.array_equal(read_image(tmp_path / "a" / first), before)
    assert main([*args, "--out", str(tmp_path / "b"), "--n", "2"]) == 0
    assert np.array_equal(read_image(tmp_path / "b" / first), before)  # image i depends on (seed, i) alone


def test_generate_with_pix2pixhd_styles_from_the_cli(trained, synthetic_masks, tmp_path):
    """`synth generate --method pix2pixhd --style K`: cluster K for every cell, recorded in the manifest."""
    flags = _flags(trained)
    assert main(["synth", "train", "pix2pixhd", "--domain", "clinic", "--preset", "tiny", "--run-id", "hd",
                 "--epochs", "1", "--keep-epochs", "1", "--no-track", *flags]) == 0
    base = ["synth", "generate", "--domain", "clinic", "--method", "pix2pixhd", "--run-id", "hd", "--epoch", "1",
            "--masks", str(synthetic_masks), *flags]
    images = {}
    for name, style, seed in (("a", "0", "1"), ("b", "0", "9"), ("c", "2", "1")):
        assert main([*base, "--out", str(tmp_path / name), "--style", style, "--seed", seed]) == 0
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["config"]["style"] == int(style) and manifest["config"]["method"] == "pix2pixhd"
        images[name] = [read_image(tmp_path / name / e["image"]) for e in manifest["images"]]
    assert all(np.array_equal(a, b) for a, b in zip(images["a"], images["b"], strict=True))  # the seed draws nothing
    assert any(not np.array_equal(a, c) for a, c in zip(images["a"], images["c"], strict=True))
    # the instance map reaches the generator: the same masks with each cell cut into two touching cells
    split = tmp_path / "split"
    shutil.copytree(synthetic_masks, split)
    for path in sorted((split / "instance").glob("*.png")):
        ids = np.array(Image.open(path)).astype(np.int64)
        right = (ids > 0) & (np.arange(ids.shape[1])[None, :] >= ids.shape[1] // 2)
        Image.fromarray((ids + right).astype(np.uint16)).save(path)  # id + 1: another cell of the same class
    assert main([*base, "--masks", str(split), "--out", str(tmp_path / "d"), "--style", "0", "--seed", "1"]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    halves = [read_image(tmp_path / "d" / e["image"]) for e in manifest["images"]]
    assert all(not np.array_equal(a, d) for a, d in zip(images["a"], halves, strict=True))


@pytest.mark.parametrize("case, expected", [
    ("other-epoch", "other arguments"),
    ("style", "no style clusters"),
    ("too-many", "--n 9"),
    ("ids", "class ids"),
    ("best-missing", "no epoch selected"),
    ("instance", "instance map"),
    ("tiny", "from 8 to"),
])
def test_generate_bad_input_is_one_line(trained, synthetic_masks, tmp_path, capsys, case, expected):
    command = ["synth", "generate", "--domain", "clinic", "--masks", str(synthetic_masks)]
    base = [*command, "--run-id", "t", *_flags(trained)]
    if case == "other-epoch":
        assert main([*base, "--out", str(tmp_path / "o"), "--epoch", "1"]) == 0
        args = [*base, "--out", str(tmp_path / "o"), "--epoch", "2"]
    elif case == "style":
        args = [*base, "--out", str(tmp_path / "o"), "--style", "1"]
    elif case == "too-many":
        args = [*base, "--out", str(tmp_path / "o"), "--n", "9"]
    elif case == "ids":
        folder = tmp_path / "ids"
        write_image(folder / "a.png", np.array([[0, 2], [3, 1]], np.uint8).repeat(8, 0).repeat(8, 1))
        args = ["synth", "generate", "--domain", "clinic", "--masks", str(folder), "--out", str(tmp_path / "o"),
                "--run-id", "t", *_flags(trained)]
    elif case == "instance":
        args = ["synth", "generate", "--domain", "clinic", "--masks", str(synthetic_masks / "instance"), "--out",
                str(tmp_path / "o"), "--run-id", "t", *_flags(trained)]
    elif case == "tiny":
        folder = tmp_path / "tiny"
        write_image(folder / "a.png", np.full((4, 6), 128, np.uint8))
        args = ["synth", "generate", "--domain", "clinic", "--masks", str(folder), "--out", str(tmp_path / "o"),
                "--run-id", "t", *_flags(trained)]
    else:
        args = [*command, "--out", str(tmp_path / "o"), "--run-id", "second", *_flags(trained)]
        assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--run-id", "second",
                     "--epochs", "1", "--keep-epochs", "1", "--no-track", *_flags(trained)]) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_load_size_in_a_project_with_a_cell_diameter_is_not_silently_ignored(tmp_path, capsys):
    """Scale harmonization sets the training scale there, so --set load_size does nothing: the user is told so."""
    from stainshift.project import save_project

    project = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33), masks=True)
    project = dataclasses.replace(project, cell_diameter=20.0)
    save_project(project)
    assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--set", "load_size=40",
                 "--epochs", "1", "--keep-epochs", "1", "--no-track", *_flags(project)]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "load_size has no effect" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "cell_diameter" in warned[0]


def test_synth_train_on_a_domain_without_masks_names_the_fix(tmp_path, capsys):
    project = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33), masks=False)
    assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--no-track",
                 *_flags(project)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no masks" in err and "masks =" in err


@pytest.mark.parametrize("method", ["pix2pix", "cyclegan"])
@pytest.mark.parametrize("case, expected", [("ids", "class ids"), ("size", "must have their image's size")])
def test_synth_train_on_masks_it_cannot_read_names_the_file(tmp_path, capsys, method, case, expected):
    """Class-id masks would train a generator on all-background masks; the error comes before any epoch."""
    project = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33), masks=True)
    masks = sorted((project.root / "data" / "clinic" / "masks").rglob("*.png"))
    if method == "cyclegan":  # unpaired: the masks come from hgtp, the images from clinic
        masks = sorted((project.root / "data" / "hgtp" / "masks").rglob("*.png"))
    for path in masks:
        values = read_mask(path).astype(np.uint8)
        if case == "ids":
            changed = (values >= 78).astype(np.uint8) + (values >= 206).astype(np.uint8)
        else:
            changed = values[::2, ::2]  # drawn at half the image's pixels
        write_image(path, changed)
    extra = ["--masks-from", "hgtp"] if method == "cyclegan" else []
    code = main(["synth", "train", method, "--domain", "clinic", *extra, "--preset", "tiny", "--epochs", "1",
                 "--keep-epochs", "1", "--no-track", *_flags(project)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert any(str(p) in err for p in masks)
    assert not list(project.runs.rglob("*.pt"))  # refused before training, nothing half-written


def test_unpaired_mask_cyclegan_learns_from_another_domains_masks(tmp_path, synthetic_masks, capsys):
    project = simulated_project(tmp_path, per_class=4, split=(0.5, 0.25, 0.25), masks=True)
    flags = _flags(project)
    assert main(["synth", "train", "cyclegan", "--domain", "clinic", "--preset", "tiny", "--no-track",
                 *flags]) == 2
    assert "--masks-from" in capsys.readouterr().err
    assert main(["synth", "train", "cyclegan", "--domain", "clinic", "--masks-from", "hgtp", "--preset", "tiny",
                 "--run-id", "u", "--no-track", *flags]) == 0
    run = project.runs / "hgtp_to_clinic" / "maskcyclegan" / "u"
    assert json.loads((run / "config.json").read_text())["src"] == "hgtp"
    assert main(["select", "--src", "hgtp", "--dst", "clinic", "--method", "maskcyclegan", "--no-track",
                 "--segmenter-iters", "20", *flags]) == 0
    record = json.loads((run / "selected.json").read_text())
    assert record["epoch"] in (1, 2) and record["scores"][0]["epoch"] == 0
    # no classifier: a mask-to-image run is ranked by what its images teach a segmenter, not by colour alone
    assert record["rule"] == "segmentation" and all(0 <= r["dice"] <= 1 for r in record["scores"])
    out = tmp_path / "g"
    assert main(["synth", "generate", "--domain", "clinic", "--masks-from", "hgtp", "--method", "maskcyclegan",
                 "--masks", str(synthetic_masks), "--out", str(out), *flags]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["masks_from"] == "hgtp" and len(manifest["images"]) == 3
    assert read_image(out / manifest["images"][0]["image"]).shape == (64, 64, 3)


def test_cell_by_cell_composition_pastes_each_cell_generated_alone_on_a_generated_background():
    from stainshift.synth.compose import compose_field

    torch.manual_seed(0)
    translator = build_model("pix2pix", "tiny").translator().eval()
    yy, xx = np.mgrid[:96, :96]
    values = np.zeros((96, 96), np.uint8)
    instance = np.zeros((96, 96), np.uint16)
    for k, (cy, cx) in enumerate([(24, 24), (70, 64)], start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2
        values[disc] = 128
        values[(yy - cy) ** 2 + (xx - cx) ** 2 <= 5**2] = 255
        instance[disc] = 2000 + k
    field = compose_field(translator, values, instance, window=32)
    assert field.shape == (96, 96, 3) and field.dtype == np.uint8

    def run(mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = translator(torch.from_numpy(mask.astype(np.float32))[None, None])[0].permute(1, 2, 0).numpy()
        return np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8)

    background = run(np.zeros_like(values))
    assert np.array_equal(field[90:, :10], background[90:, :10])  # far from every cell
    alone = run(np.where(instance == 2002, values, 0)[70 - 16:70 + 16, 64 - 16:64 + 16])
    assert np.array_equal(field[64:77, 58:71], alone[10:23, 10:23])  # inside the second cell: its own generation
    whole = run(values)
    assert not np.array_equal(field[64:77, 58:71], whole[64:77, 58:71])  # not the one-pass generation


def test_masks_drawn_at_another_scale_than_the_domains_cells_are_refused(tmp_path, synthetic_masks, capsys):
    import dataclasses

    from stainshift.project import save_project

    project = simulated_project(tmp_path, per_class=4, split=(0.5, 0.25, 0.25), masks=True)
    small = dataclasses.replace(project.domain("clinic"), cell_diameter=12.0)  # the simulator's cells are ~40 px
    save_project(project.with_domain(small))
    flags = _flags(project)
    assert main(["synth", "train", "pix2pix", "--domain", "clinic", "--preset", "tiny", "--epochs", "1",
                 "--keep-epochs", "1", "--no-track", *flags]) == 0
    capsys.readouterr()
    assert main(["synth", "generate", "--domain", "clinic", "--epoch", "1", "--masks", str(synthetic_masks),
                 "--out", str(tmp_path / "g"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "px across" in err and "--scale 0." in err
    assert not (tmp_path / "g").exists()
