"""The model contract, run for every registered learned model, and the extension point it promises: a toy model
registered from this file alone trains, is selected, harmonizes and enters the benchmark; a toy mask -> image
model trains on paired masks. Also: the CLI's --help does not import torch, and the package has no import cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from stainshift import runs
from stainshift.cli.main import main
from stainshift.data.io import read_image, read_mask
from stainshift.errors import StainshiftError
from stainshift.models.base import ModelOptions, TranslationModel, Translator
from stainshift.models.kinds import DataRegime, EpochScoring, Kind, Modality
from stainshift.models.registry import entry, load_epoch, model_class, names, register, unregister
from stainshift.project import Project
from stainshift.train.checkpoints import load
from stainshift.train.loop import Trainer, TrainRequest, train

from .conftest import simulated_project

PACKAGE = Path(__file__).resolve().parents[1] / "stainshift"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    # 2 images per class: 1 train, 1 test; masks for the paired-mask regime
    return simulated_project(tmp_path_factory.mktemp("contract"), per_class=3, split=(0.34, 0.33, 0.33), masks=True)


def _networks(run: Path) -> dict[str, torch.Tensor]:
    state = load(runs.last_state(run), "training state", "")["model"]["networks"]
    return {f"{net}.{k}": v for net, weights in state.items() for k, v in weights.items()}


def _input(project: Project, name: str) -> torch.Tensor:
    """A batch of what model ``name`` consumes, from the target domain's test images."""
    sample = next(s for s in runs_samples(project) if s.mask is not None)
    if entry(name).consumes is Modality.MASK:
        return torch.from_numpy(read_mask(sample.mask).astype(np.float32))[None, None]
    return torch.from_numpy(read_image(sample.path).astype(np.float32) / 255).permute(2, 0, 1)[None]


def runs_samples(project: Project):
    from stainshift.data.splits import samples_in

    return samples_in(project, "clinic", "test")


def check_contract(project: Project, name: str) -> None:
    """Train 2 epochs at the `tiny` preset, and 1 + resume 1: bit-identical; then reload the epoch file and
    translate."""
    # a between-class model turns one class of the target into another; every other model maps hgtp -> clinic
    between = entry(name).between_classes
    src, classes = ("clinic", ("lymphocyte", "eosinophil")) if between else ("hgtp", None)

    teacher = {}  # a student learns from a trained translator: a tiny cyclegan's epoch
    if (option := model_class(name).teacher_option) is not None:
        teacher = {option: str(runs.epoch_file(train(project, TrainRequest(
            src, "clinic", preset="tiny", seed=3, run_id=f"teacher-of-{name}", progress=False, track=False,
            overrides={"epochs": 1, "keep_epochs": (1,)})).run_dir, 1))}

    def request(run_id: str, epochs: int, resume: bool = False) -> TrainRequest:
        return TrainRequest(src, "clinic", method=name, preset="tiny", seed=3, run_id=run_id, resume=resume,
                            overrides={"epochs": epochs, "epochs_decay": 0, "keep_epochs": (1, 2), **teacher},
                            progress=False, track=False, classes=classes)

    torch.manual_seed(3)
    untrained = {k: v.clone() for k, v in model_class(name).new_translator(
        model_class(name).presets()["tiny"]).state_dict().items()}
    whole = train(project, request(f"{name}-whole", 2)).run_dir
    train(project, request(f"{name}-split", 1))
    split = train(project, request(f"{name}-split", 2, resume=True)).run_dir
    a, b = _networks(whole), _networks(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name}: resume is not exact"
    assert runs.kept_epochs(whole) == [1, 2]

    translator, meta = load_epoch(runs.epoch_file(whole, 2))  # weights_only=True inside
    first = load_epoch(runs.epoch_file(whole, 1))[0].state_dict()
    trained = translator.state_dict()
    assert any(not torch.equal(first[k], trained[k]) for k in trained), f"{name}: epoch 2 did not change weights"
    assert any(not torch.equal(untrained[k], first[k]) for k in first if k in untrained), f"{name}: no training"
    assert meta["model"] == name and meta["epoch"] == 2
    assert meta["preprocessing"]["src"]["domain"] == src and meta["preprocessing"]["dst"]["domain"] == "clinic"
    state = load(runs.last_state(whole), "training state", "")
    model = model_class(name)(translator.options)
    model.load_training_state(state["model"])
    x = _input(project, name)
    with torch.inference_mode():  # the same seed for both: noise inputs and sampled styles draw from torch's RNG
        torch.manual_seed(11)
        y = translator(x)
        torch.manual_seed(11)
        expected = model.translator().eval()(x)
    produced = {Modality.RGB: 3, Modality.MASK: 1}[entry(name).produces]
    assert y.shape == (1, produced, *x.shape[2:])
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, expected)


@pytest.mark.parametrize("name", names(Kind.LEARNED))
def test_every_registered_model_trains_resumes_exactly_reloads_and_translates(project, name):
    check_contract(project, name)


# -- a toy model that only this file knows ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ToyOptions(ModelOptions):
    width: int = 3


class ToyTranslator(Translator):
    def __init__(self, net: nn.Module, options: ToyOptions, name: str = "toyshift", in_channels: int = 3) -> None:
        super().__init__(name, options, multiple=1, in_channels=in_channels)
        self.net = net

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x * 2 - 1) * 3)


class ToyShift(TranslationModel):
    """A 1x1 convolution pulled towards the target's mean colour: RGB -> RGB, unpaired."""

    name = "toyshift"
    options_type = ToyOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        tiny = ToyOptions(epochs=2, epochs_decay=0, crop_size=32, load_size=32, lr=1e-2, keep_epochs=(1, 2))
        return {"paper": ToyOptions(), "cpu": tiny, "tiny": tiny}

    def __init__(self, options: ToyOptions) -> None:
        super().__init__(options)
        self.G = nn.Conv2d(3, 3, 1)
        self._setup_optimizers({"G": self.G.parameters()})

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        return ToyTranslator(nn.Conv2d(3, 3, 1), options)

    def translator(self) -> Translator:
        return ToyTranslator(self.G, self.options)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        src, dst = self._batch(batch, "src"), self._batch(batch, "dst")
        self.optimizers["G"].zero_grad(set_to_none=True)
        fake = self.translator()(src)
        loss = (fake.mean((0, 2, 3)) - dst.mean((0, 2, 3))).abs().sum()
        self._step("G", loss, list(self.G.parameters()))
        return {"G": float(loss)}


class ToyPaint(ToyShift):
    """Mask in, image out: each of the mask's three regions (background, cytoplasm, nucleus) gets a colour."""

    name = "toypaint"
    data_regime: ClassVar[DataRegime] = DataRegime.PAIRED_MASK
    scoring: ClassVar[EpochScoring] = EpochScoring.GENERATION

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        return PaintTranslator(nn.Conv2d(3, 3, 1), options)

    def translator(self) -> Translator:
        return PaintTranslator(self.G, self.options)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        image, mask = self._batch(batch, "image"), self._batch(batch, "mask", channels=1)
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss = (self.translator()(mask) - image).abs().mean()
        self._step("G", loss, list(self.G.parameters()))
        return {"G": float(loss)}


class PaintTranslator(ToyTranslator):
    def __init__(self, net: nn.Module, options: ToyOptions) -> None:
        super().__init__(net, options, "toypaint", in_channels=1)

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        regions = (x >= 78).long() + (x > 205).long()  # the sites' value-coded masks: 0 / 128 / 255
        one_hot = nn.functional.one_hot(regions[:, 0], 3).permute(0, 3, 1, 2).float()
        return torch.sigmoid(self.net(one_hot) * 3)


@pytest.fixture
def toys():
    register("toyshift", ToyShift, summary="a toy 1x1 colour shift")
    register("toypaint", ToyPaint, consumes=Modality.MASK, summary="a toy mask painter")
    yield
    unregister("toyshift")
    unregister("toypaint")


def test_a_toy_model_registered_here_is_trained_selected_harmonized_and_benchmarked(project, toys, tmp_path,
                                                                                     capsys):
    check_contract(project, "toyshift")
    flags = ["--project", str(project.file), "--quiet"]
    assert main(["train", "toyshift", "--src", "hgtp", "--dst", "clinic", "--preset", "tiny", "--run-id", "cli",
                 "--no-track", *flags]) == 0
    run = runs.method_dir(project, "hgtp", "clinic", "toyshift") / "cli"
    assert runs.kept_epochs(run) == [1, 2]
    assert main(["select", "--src", "hgtp", "--dst", "clinic", "--method", "toyshift", "--run-id", "cli",
                 "--rule", "label-free", "--no-track", *flags]) == 0
    selected = json.loads(runs.selected_file(run).read_text())
    assert selected["epoch"] in (1, 2) and selected["rule"] == "label-free"
    assert runs.selection_file(run, "label-free", None).is_file()
    out = tmp_path / "harmonized"
    assert main(["harmonize", "--src", "hgtp", "--dst", "clinic", "--method", "toyshift", "--epoch", "best",
                 "--run-id", "cli", "--out", str(out), *flags]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    originals = sorted(s.key for s in runs_samples_all(project))
    assert written == originals
    # the toy model's images are not the originals: it moved them towards the clinic's colours
    first = originals[0]
    assert not np.array_equal(read_image(out / first), read_image(project.domain("hgtp").folder / first))

    capsys.readouterr()
    assert main(["benchmark", "--src", "hgtp", "--dst", "clinic", "--classifiers", "resnet18", "--epochs", "1",
                 "--finetune-epochs", "1", "--size", "32", "--batch-size", "4", "--no-track", *flags]) == 0
    table = capsys.readouterr().out
    kept = runs.kept_epochs(runs.serving_run(project, "hgtp", "clinic", "toyshift"))
    for condition in [f"toyshift e{e}" for e in kept] + ["toyshift selected (labelled)",
                                                         "toyshift selected (label-free)"]:
        assert f"| {condition} |" in table


def runs_samples_all(project: Project):
    from stainshift.data.domains import scan_domain

    return scan_domain(project.domain("hgtp"))


def test_a_toy_mask_model_trains_on_paired_masks_and_is_kept_out_of_image_commands(project, toys, capsys):
    check_contract(project, "toypaint")
    # trained longer, it paints each region of a mask in that region's colour in the paired images
    run = train(project, TrainRequest("clinic", "clinic", method="toypaint", preset="tiny", run_id="learn",
                                      overrides={"epochs": 40, "lr": 0.05, "keep_epochs": (40,)}, progress=False,
                                      track=False)).run_dir
    translator, _ = load_epoch(runs.epoch_file(run, 40))
    sample = next(s for s in runs_samples(project) if s.mask is not None)
    mask = torch.from_numpy(read_mask(sample.mask).astype(np.float32))[None, None]
    with torch.inference_mode():
        painted = translator(mask)[0]
    nucleus, background = read_mask(sample.mask) > 205, read_mask(sample.mask) < 78
    assert painted[:, torch.from_numpy(nucleus)].mean() < painted[:, torch.from_numpy(background)].mean() - 0.1

    flags = ["--project", str(project.file)]
    # --src defaults to --dst for a model that learns from one domain
    assert main(["train", "toypaint", "--dst", "clinic", "--preset", "tiny", "--no-track", "--quiet", *flags]) == 0
    assert len(list(runs.method_dir(project, "clinic", "clinic", "toypaint").glob("*/last.pt"))) == 2
    with pytest.raises(SystemExit) as exit_:  # the CLI lists image -> image methods only
        main(["harmonize", "--src", "hgtp", "--dst", "clinic", "--method", "toypaint", *flags])
    assert exit_.value.code == 2 and "invalid choice: 'toypaint'" in capsys.readouterr().err
    from stainshift.harmonize import HarmonizeRequest, harmonize

    with pytest.raises(StainshiftError, match="toypaint turns mask into rgb"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="toypaint", progress=False))
    capsys.readouterr()
    code = main(["select", "--src", "clinic", "--dst", "clinic", "--method", "toypaint", "--rule", "label-free",
                 *flags])  # a generation model: its validation images are generated from their masks
    assert code == 0 and "real validation images" in capsys.readouterr().out
    assert main(["train", "cyclegan", "--dst", "clinic", *flags]) == 2
    assert "learns from two domains: pass --src" in capsys.readouterr().err


def test_a_registered_method_needs_an_importable_target():
    register("broken", "stainshift.nowhere:Model")
    try:
        with pytest.raises(StainshiftError, match="cannot be imported"):
            model_class("broken")
    finally:
        unregister("broken")
    with pytest.raises(StainshiftError, match="already registered"):
        register("cyclegan", "stainshift.models.cyclegan:CycleGAN")
    with pytest.raises(StainshiftError, match="classical method"):
        model_class("reinhard")


# -- init_from and preprocessing ------------------------------------------------------------------------------------
def test_init_from_a_run_or_an_epoch_file_starts_from_its_weights(project):
    base = TrainRequest("hgtp", "clinic", preset="tiny", seed=5, run_id="base", progress=False, track=False,
                        overrides={"epochs": 1, "keep_epochs": (1,)})
    run = train(project, base).run_dir
    saved = _networks(run)
    warm = Trainer(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=9, run_id="warm", progress=False,
                                         track=False, init_from=run))
    now = {f"{n}.{k}": v for n, net in warm.model.networks().items() for k, v in net.state_dict().items()}
    assert all(torch.equal(saved[k], now[k]) for k in saved)
    assert warm.config["init_from"]["loaded"] == ["D_A", "D_B", "G_A", "G_B"]
    assert warm.config["init_from"]["hash"]

    from_epoch = Trainer(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=9, run_id="warm2",
                                               progress=False, track=False, init_from=runs.epoch_file(run, 1)))
    assert from_epoch.config["init_from"]["loaded"] == ["translator"]
    g = from_epoch.model.networks()["G_A"].state_dict()
    assert all(torch.equal(saved[f"G_A.{k}"], v) for k, v in g.items())
    g_b = from_epoch.model.networks()["G_B"].state_dict()
    assert not torch.equal(g_b["model.1.weight"], saved["G_B.model.1.weight"])  # G_B stays as seeded

    with pytest.raises(StainshiftError, match="weights do not fit this cyclegan"):  # same model, other sizes
        Trainer(project, TrainRequest("hgtp", "clinic", preset="tiny", run_id="bad", progress=False, track=False,
                                      overrides={"ngf": 8}, init_from=run))


def test_harmonize_uses_the_scale_the_checkpoint_was_trained_with(tmp_path):
    import dataclasses
    import warnings

    import cv2

    from stainshift.data.datasets import rescale, to_batch, to_uint8
    from stainshift.harmonize import HarmonizeRequest, harmonize, translate_images

    base = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33))
    # as loaded: a common cell diameter of 24 px, hgtp's cells 20 px (the file stays as it is)
    scaled = dataclasses.replace(base, cell_diameter=24.0)
    scaled = scaled.with_domain(dataclasses.replace(scaled.domain("hgtp"), cell_diameter=20.0))
    run = train(scaled, TrainRequest("hgtp", "clinic", preset="tiny", seed=1, run_id="scaled", progress=False,
                                     track=False, overrides={"epochs": 1, "keep_epochs": (1,)})).run_dir
    translator, meta = load_epoch(runs.epoch_file(run, 1))
    assert meta["preprocessing"]["src"]["scale"] == pytest.approx(1.2)
    changed = scaled.with_domain(dataclasses.replace(scaled.domain("hgtp"), cell_diameter=30.0))  # now 0.8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = harmonize(changed, HarmonizeRequest("hgtp", "clinic", epoch=1, run_id="scaled", out=tmp_path / "b",
                                                  progress=False)).out_dir
    assert any("the project file now gives 0.8" in str(w.message) for w in caught)
    key = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))[0]
    image = read_image(changed.domain("hgtp").folder / key)

    def by_hand(factor: float) -> np.ndarray:
        y = to_uint8(translate_images(translator, to_batch([rescale(image, factor)]), 512, 64))[0]
        return cv2.resize(y, image.shape[1::-1], interpolation=cv2.INTER_AREA if factor > 1 else cv2.INTER_LINEAR)

    assert np.array_equal(read_image(out / key), by_hand(1.2))
    assert not np.array_equal(read_image(out / key), by_hand(0.8))


# -- the CLI stays light, the package acyclic -----------------------------------------------------------------------
def test_help_of_every_command_does_not_import_torch():
    code = ("import sys\nfrom stainshift.cli.main import main\n"
            "for argv in (['train'], ['select'], ['harmonize'], ['benchmark'], ['classify', 'eval'], ['demo']):\n"
            "    try:\n        main([*argv, '--help'])\n    except SystemExit:\n        pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert "cyclegan" in done.stdout


def _module_imports() -> nx.DiGraph:
    """Module-level ``stainshift`` imports of every module (imports inside functions are deliberate lazy loads)."""
    graph = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph.add_node(module)
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stainshift"):
                targets = [node.module]
                targets += [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("stainshift")]
            for target in targets:
                graph.add_edge(module, target)
    known = {n for n in graph if (PACKAGE.parent / Path(*n.split("."))).with_suffix(".py").exists()
             or (PACKAGE.parent / Path(*n.split(".")) / "__init__.py").exists()}
    return graph.subgraph(known).copy()


def test_the_package_has_no_import_cycles():
    graph = _module_imports()
    assert graph.has_edge("stainshift.harmonize", "stainshift.runs")  # the graph sees real imports
    # a package's __init__ importing its own submodules is how packages work, not a cycle between concepts
    graph.remove_edges_from([(a, b) for a, b in graph.edges if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(graph))
    assert cycles == []
    for model in ("stainshift.models.cyclegan", "stainshift.models.colorization", "stainshift.models.base"):
        assert not graph.has_edge(model, "stainshift.models.registry")
    for module in ("stainshift.harmonize", "stainshift.select"):
        assert not graph.has_edge(module, "stainshift.train.loop")


# -- the regimes' datasets ----------------------------------------------------------------------------------------
def test_paired_mask_crops_keep_image_and_mask_aligned_through_scale_crop_turn_and_flip(project):
    from stainshift.data.datasets import PairedMaskCrops
    from stainshift.train.batches import single_plan, training_samples

    data = training_samples(project, DataRegime.PAIRED_MASK, "clinic", "clinic")
    plan = single_plan(torch.ones(len(data.dst), dtype=torch.float64), seed=0, epoch=1)
    for factor in (1.0, 0.7, 1.6):
        crops = PairedMaskCrops(data.dst, plan, crop=24, scale=factor)
        for i in range(len(crops)):
            item = crops[i]
            image, mask = item["image"], item["mask"][0]
            assert image.shape == (3, 24, 24) and mask.shape == (24, 24)
            assert set(mask.unique().tolist()) <= {0.0, 128.0, 255.0}  # nearest-neighbour: no blended labels
            # the simulator's nucleus is the darkest part of each cell: aligned crops keep it under the mask's 255
            gray = image.mean(0)
            if (mask == 255).any() and (mask == 0).any():
                assert gray[mask == 255].mean() < gray[mask == 0].mean() - 0.1


def test_labelled_crops_use_the_domain_class_order(project):
    import dataclasses

    from stainshift.data.datasets import LabelledCrops
    from stainshift.train.batches import single_plan, training_samples

    ordered = project.with_domain(dataclasses.replace(project.domain("clinic"),
                                                      classes=("lymphocyte", "eosinophil")))
    data = training_samples(ordered, DataRegime.CLASSES, "clinic", "clinic")
    assert data.classes == ("lymphocyte", "eosinophil")
    plan = single_plan(torch.ones(len(data.dst), dtype=torch.float64), seed=0, epoch=1)
    crops = LabelledCrops(data.dst, data.classes, plan, crop=32)
    labels = [int(crops[i]["label"]) for i in range(len(crops))]
    assert labels == [data.classes.index(data.dst[i].label) for i, _ in plan]


def test_a_run_stopped_before_its_first_epoch_starts_over_on_resume(project):
    request = TrainRequest("hgtp", "clinic", preset="tiny", seed=2, run_id="early", progress=False, track=False,
                           overrides={"epochs": 1, "keep_epochs": (1,), "ngf": 8})
    stopped = Trainer(project, request)
    stopped.run_dir.mkdir(parents=True)  # what a run killed inside epoch 1 leaves: its config, no last.pt
    runs.config_file(stopped.run_dir).write_text(json.dumps(stopped.config))
    with pytest.warns(UserWarning, match="stopped before finishing its first epoch; starting it over"):
        done = train(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=2, run_id="early", resume=True,
                                           progress=False, track=False))
    assert done.epochs_done == 1
    assert json.loads(runs.config_file(done.run_dir).read_text())["options"]["ngf"] == 8  # its own options


def test_init_from_refuses_another_model_and_resume(project, tmp_path):
    run = train(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=5, run_id="src-model", progress=False,
                                      track=False, overrides={"epochs": 1, "keep_epochs": (1,)})).run_dir
    with pytest.raises(StainshiftError, match="holds a 'cyclegan' model, not 'colorization'"):
        Trainer(project, TrainRequest("hgtp", "clinic", method="colorization", preset="tiny", run_id="x",
                                      progress=False, track=False, init_from=runs.epoch_file(run, 1)))
    with pytest.raises(StainshiftError, match="pass one or the other"):
        Trainer(project, TrainRequest("hgtp", "clinic", preset="tiny", run_id="src-model", resume=True,
                                      progress=False, track=False, init_from=run))


def test_register_refuses_a_class_under_another_name():
    with pytest.raises(StainshiftError, match="calls itself 'toyshift'"):
        register("other", ToyShift)


def test_add_domain_api_names_a_folder_and_saves_the_project(tmp_path):
    from stainshift.data.domains import add_domain
    from stainshift.errors import ProjectError
    from stainshift.project import Project, load_project

    from .conftest import make_domain

    make_domain(tmp_path / "site", {"neutrophil": 2, "lymphocyte": 3}, masks=True)
    project, samples = add_domain(Project(file=tmp_path / "stainshift.toml"), "site", tmp_path / "site",
                                  split=(0.5, 0.25, 0.25))
    assert len(samples) == 5 and all(s.mask is not None for s in samples)  # site/masks found by itself
    saved = load_project(tmp_path / "stainshift.toml").domain("site")
    assert saved.path == "site" and saved.masks == "site/masks" and saved.split == (0.5, 0.25, 0.25)
    with pytest.raises(ProjectError, match=r"already exists.*--force"):
        add_domain(project, "site", tmp_path / "site")
    with pytest.raises(ProjectError, match="no such folder"):
        add_domain(project, "other", tmp_path / "missing")
