"""ResNet classifiers on tiny simulated hospitals: fastai training, files, fine-tuning, evaluation, CLI, focal loss."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stainshift.classify.evaluate import bootstrap_ci, evaluate, evaluate_arrays, write_report
from stainshift.classify.models import ARCHS, NORMS, Classifier, build_classifier, load_classifier, save_classifier
from stainshift.classify.stain_augment import AUGMENTS
from stainshift.classify.train import (
    KEEPS,
    LOSSES,
    ClassifierRequest,
    default_name,
    finetune_classifier,
    finetune_reuse_check,
    reuse_check,
    train_classifier,
)
from stainshift.data.datasets import load_cell, to_tensor
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.errors import DataError, StainshiftError
from stainshift.losses import FocalLoss
from stainshift.project import Project
from stainshift.runs import split_file

from .conftest import make_domain, simulated_project

FAST = {"size": 32, "epochs": 1, "batch_size": 4, "progress": False, "track": False}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("classify")
    make_domain(root / "data" / "mixed", {"lymphocyte": 4, "basophil": 3}, size=40)
    make_domain(root / "data" / "foreign", {"basophil": 3, "blast": 3}, size=40, seed=2)
    return simulated_project(root, per_class=6, split=(0.5, 0.25, 0.25), extra=("mixed", "foreign"))


@pytest.fixture(scope="module")
def trained(project) -> Path:
    return train_classifier(project, ClassifierRequest("clinic", seed=3, **FAST))


# fine-tuning a BatchNorm base with a large rate: the val loss is distinct at every epoch and the later ones are
# worse, so the best epoch (by val accuracy, the first on ties) is not the last one
KEEP = {"epochs": 3, "lr": 3e-2, "batch_size": 4, "seed": 0}


@pytest.fixture(scope="module")
def kept(project) -> dict[str, Path]:
    base = train_classifier(project, ClassifierRequest("clinic", norm="batch", name="clinic-bn", seed=3, **FAST))
    quiet = {"progress": False, "track": False}
    return {"base": base,
            "best": finetune_classifier(project, base, "hgtp", name="ft-best", **KEEP, **quiet),
            "last": finetune_classifier(project, base, "hgtp", name="ft-last", keep="last", **KEEP, **quiet)}


def _history(model: Path) -> list[dict[str, float]]:
    with open(model.parent / "history.csv") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture
def changed_split(project):
    """Swap the split of the first train and the first val image of a domain; restored afterwards."""
    saved: dict[Path, bytes] = {}

    def change(domain: str) -> None:
        path = split_file(project, domain)
        saved[path] = path.read_bytes()
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        first = {split: next(r for r in rows if r["split"] == split) for split in ("train", "val")}
        first["train"]["split"], first["val"]["split"] = "val", "train"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    yield change
    for path, content in saved.items():
        path.write_bytes(content)


def _images(project: Project, domain: str, split: str, size: int) -> tuple[torch.Tensor, list[str]]:
    samples = samples_in(project, domain, split)
    scale = scale_factor(project, domain)
    return torch.stack([to_tensor(load_cell(s.path, scale, size)) for s in samples]), [s.label for s in samples]


# -- models ----------------------------------------------------------------------------------------------------------
def test_build_classifier_norms_features_and_local_weights(tmp_path):
    group = build_classifier("resnet18", 3, norm="group", classes=["a", "b", "c"], input_size=32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())
    norms = [m for m in group.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 and m.num_groups <= 32 for m in norms)
    x = torch.rand(2, 3, 32, 32)
    assert group(x).shape == (2, 3) and group.features(x).shape == (2, 512) and group.predict(x).shape == (2,)

    source = build_classifier("resnet18", 5, norm="batch")
    torch.save(source.net.state_dict(), tmp_path / "imagenet.pth")
    frozen = build_classifier("resnet18", 2, norm="frozen-batch", weights=tmp_path / "imagenet.pth")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(type(m).__name__ == "FrozenBatchNorm2d" for m in frozen.modules())
    assert torch.equal(frozen.net.conv1.weight, source.net.conv1.weight)  # body loaded, head (5 vs 2) left fresh
    assert frozen.net.fc.out_features == 2
    for bad in ({"arch": "vgg16", "n_classes": 2}, {"arch": "resnet18", "n_classes": 2, "norm": "layer"}):
        with pytest.raises(StainshiftError, match="unknown"):
            build_classifier(**bad)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_examples():
    logits, target = torch.randn(16, 4) * 3, torch.randint(0, 4, (16,))
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    label = torch.tensor([0])
    ratio = {name: (FocalLoss(2.0)(x, label) / F.cross_entropy(x, label)).item()
             for name, x in (("easy", easy), ("hard", hard))}
    assert ratio["easy"] < 0.001 < 0.5 < ratio["hard"] < 1.0
    per_example = FocalLoss(0.0, alpha=[1.0, 3.0], reduction="none")(logits[:, :2], target % 2)
    plain = F.cross_entropy(logits[:, :2], target % 2, reduction="none")
    assert torch.allclose(per_example, plain * torch.where(target % 2 == 1, 3.0, 1.0), atol=1e-6)
    huge = FocalLoss()(torch.tensor([[1e4, -1e4]]), torch.tensor([1]))
    assert torch.isfinite(huge) and huge.item() > 1e3


# -- training --------------------------------------------------------------------------------------------------------
def test_train_writes_the_run_and_the_file_round_trips(project, trained, tmp_path):
    assert trained == project.runs / "classifiers" / "clinic-resnet18-group" / "model.pt"  # GroupNorm by default
    config = json.loads((trained.parent / "config.json").read_text())
    assert config["domain"] == "clinic" and config["stage"] == "train" and config["lr_used"] == 1e-3
    assert config["norm"] == "group" and config["keep"] == "last" and config["selected_epoch"] == 1
    assert config["classes"] == ["eosinophil", "lymphocyte"] and config["images"]["train"] == {
        "eosinophil": 2, "lymphocyte": 2}
    with open(trained.parent / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    assert [row["epoch"] for row in history] == ["1"] and np.isfinite(float(history[0]["train_loss"]))

    clf = load_classifier(trained)
    assert isinstance(clf, Classifier) and not clf.training and clf.input_size == 32
    assert clf.config["name"] == "clinic-resnet18-group"
    x, _ = _images(project, "hgtp", "test", 32)
    save_classifier(clf, tmp_path / "copy.pt", {"note": Path("x")})
    again = load_classifier(tmp_path / "copy.pt")
    assert again.config["note"] == "x" and again.classes == clf.classes
    with torch.no_grad():
        assert torch.equal(clf(x), again(x))
    assert torch.equal(clf.predict(x), again.predict(x))


def test_focal_group_training_with_lr_find_is_tracked(project):
    request = ClassifierRequest("clinic", loss="focal", norm="group", lr_find=True, lr_find_iters=12,
                                **{**FAST, "track": True})
    path = train_classifier(project, request)
    assert path.parent.name == "clinic-resnet18-focal-group"
    clf = load_classifier(path)
    assert clf.norm == "group" and not any(isinstance(m, nn.BatchNorm2d) for m in clf.modules())
    config = clf.config
    assert config["loss"] == "focal" and config["gamma"] == 2.0 and "lr_found" in config and config["lr_used"] > 0
    # the project's real sqlite mlflow store
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("classifiers").experiment_id],
                                filter_string="tags.mlflow.runName = 'clinic-resnet18-focal-group'")
    assert run.data.params["norm"] == "group" and float(run.data.params["lr_used"]) == config["lr_used"]
    assert {k: run.data.tags[k] for k in ("domain", "stage", "arch", "norm", "loss")} == {
        "domain": "clinic", "stage": "train", "arch": "resnet18", "norm": "group", "loss": "focal"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_accuracy")] == [1]
    assert {"train_loss", "valid_macro_f1"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.json", "history.csv"}
    assert run.data.tags["classifier_path"] == str(path)


def test_training_options_are_checked(project, trained):
    with pytest.raises(StainshiftError, match="exists"):
        train_classifier(project, ClassifierRequest("clinic", **FAST))
    for bad, match in (({"loss": "hinge"}, "unknown loss"), ({"size": 16}, "too small"),
                       ({"lr": 1e-3, "lr_find": True}, "not both"), ({"name": "../x"}, "plain folder")):
        with pytest.raises(StainshiftError, match=match):
            train_classifier(project, ClassifierRequest("clinic", **{**FAST, **bad}))


def test_finetune_continues_on_the_other_domain(project, trained):
    tuned = finetune_classifier(project, trained, "hgtp", epochs=1, batch_size=4, progress=False, track=False)
    assert tuned.parent.name == "clinic-resnet18-group-ft-hgtp"
    base, clf = load_classifier(trained), load_classifier(tuned)
    assert clf.classes == base.classes and clf.input_size == base.input_size
    assert clf.config["stage"] == "finetune" and clf.config["trained_on"] == ["clinic", "hgtp"]
    assert clf.config["base_model"] == str(trained.resolve())
    assert not torch.equal(clf.net.fc.weight, base.net.fc.weight)
    with pytest.raises(DataError, match="shares no class"):
        finetune_classifier(project, trained, "foreign", epochs=1, progress=False, track=False)
    with pytest.raises(StainshiftError, match="--keep best"):
        finetune_classifier(project, trained, "hgtp", keep="first", progress=False, track=False)


def test_finetune_keeps_the_epoch_with_the_best_val_accuracy(project, kept):
    config = json.loads((kept["best"].parent / "config.json").read_text())
    history, last_history = _history(kept["best"]), _history(kept["last"])
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in history] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in last_history]  # the same seeded trajectory
    accuracy = [row["valid_accuracy"] for row in history]
    best = 1 + int(np.argmax(accuracy))  # the first epoch reaching the best accuracy
    assert config["keep"] == "best" and config["monitor"] == "valid_accuracy" and config["selected_epoch"] == best
    assert best < KEEP["epochs"], "the scenario needs a best epoch before the last one"
    assert config["base_sha"] and config["final"]["valid_accuracy"] == pytest.approx(accuracy[best - 1])

    x, labels = _images(project, "hgtp", "val", 32)
    for name, epoch in (("best", best), ("last", KEEP["epochs"])):
        clf = load_classifier(kept[name])
        target = torch.tensor([clf.classes.index(label) for label in labels])
        with torch.no_grad():
            loss = F.cross_entropy(clf(x), target).item()
        # the val loss of the saved weights is the loss of that epoch, and of no other
        losses = [row["valid_loss"] for row in history]
        assert loss == pytest.approx(losses[epoch - 1], rel=1e-4), (name, loss, losses)
        assert all(abs(loss - other) > 1e-3 * abs(other) for i, other in enumerate(losses) if i != epoch - 1)
        assert (clf.predict(x) == target).float().mean().item() == pytest.approx(accuracy[epoch - 1])
    last = json.loads((kept["last"].parent / "config.json").read_text())
    assert last["keep"] == "last" and last["monitor"] is None and last["selected_epoch"] == KEEP["epochs"]


def test_reuse_check_compares_the_request_and_the_split(project, trained, changed_split, tmp_path):
    request = ClassifierRequest("clinic", seed=3, **FAST)  # the request that made `trained`
    assert reuse_check(trained, request, project) is None
    assert reuse_check(trained, replace(request, progress=True, device="cpu"), project) is None  # not the model's
    assert reuse_check(trained, replace(request, epochs=5), project) == "epochs 1 != 5"
    assert reuse_check(trained, replace(request, stain_augment="hed", norm="batch"), project) == (
        "norm group != batch, stain_augment None != hed")
    assert reuse_check(tmp_path / "model.pt", request, project).startswith("no classifier saved")
    older = tmp_path / "older"
    shutil.copytree(trained.parent, older)
    config = json.loads((older / "config.json").read_text())
    del config["split_sha"]
    (older / "config.json").write_text(json.dumps(config))
    assert reuse_check(older / "model.pt", request, project) == "no record of split_sha"
    changed_split("clinic")
    assert reuse_check(trained, request, project) == "split changed"


def test_finetune_reuse_check_compares_base_options_and_split(project, kept, trained, changed_split):
    options = {**KEEP, "project": project}
    assert finetune_reuse_check(kept["best"], kept["base"], "hgtp", **options) is None
    assert finetune_reuse_check(kept["last"], kept["base"], "hgtp", keep="last", **options) is None
    assert finetune_reuse_check(kept["last"], kept["base"], "hgtp", **options) == "keep last != best"
    assert finetune_reuse_check(kept["best"], kept["base"], "hgtp", **{**options, "epochs": 5}) == "epochs 3 != 5"
    assert finetune_reuse_check(kept["best"], kept["base"], "hgtp", balanced=True, **options) == (
        "balanced False != True")
    assert finetune_reuse_check(kept["best"], trained, "hgtp", **options) == "base model changed"
    changed_split("hgtp")
    assert finetune_reuse_check(kept["best"], kept["base"], "hgtp", **options) == "split changed"


def test_default_name_suffixes():
    assert default_name("clinic", "resnet18") == "clinic-resnet18-group"
    assert default_name("clinic", "resnet34", "focal", "batch") == "clinic-resnet34-focal"
    assert default_name("clinic", "resnet18", "ce", "group", "lab") == "clinic-resnet18-group-lab"
    assert ClassifierRequest("clinic", norm="frozen-batch", stain_augment="hed").run_name == (
        "clinic-resnet18-frozen-batch-hed")


# -- evaluation ------------------------------------------------------------------------------------------------------
def test_evaluate_matches_a_direct_computation_and_writes_the_report(project, trained, tmp_path):
    clf = load_classifier(trained)
    report = evaluate(clf, project, "hgtp", "test")
    x, labels = _images(project, "hgtp", "test", clf.input_size)
    predicted = [clf.classes[i] for i in clf.predict(x)]
    assert report.n == len(labels) == 4 and report.y_pred == predicted and report.y_true == labels
    assert report.accuracy == pytest.approx(np.mean([p == t for p, t in zip(predicted, labels, strict=True)]))
    for c, recall in report.per_class_recall.items():
        assert recall == pytest.approx(np.mean([p == c for p, t in zip(predicted, labels, strict=True) if t == c]))
    assert report.confusion.sum() == report.n and report.confusion.shape == (2, 2)
    assert report.accuracy_ci[0] <= report.accuracy <= report.accuracy_ci[1]
    assert report.macro_f1_ci[0] <= report.macro_f1 <= report.macro_f1_ci[1]
    assert evaluate(clf, project, "hgtp", "test").accuracy_ci == report.accuracy_ci  # seeded bootstrap
    assert report.model == "clinic-resnet18-group" and not report.excluded

    paths = write_report(report, tmp_path / "report")
    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics["accuracy"] == report.accuracy and metrics["n"] == 4 and metrics["bootstrap"]["resamples"] == 1000
    with open(paths["confusion.csv"]) as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == clf.classes and sum(int(v) for row in rows[1:] for v in row[1:]) == 4
    assert paths["confusion.png"].read_bytes()[:4] == b"\x89PNG"
    assert len(paths["predictions.csv"].read_text().splitlines()) == 5


def test_evaluate_reads_the_same_keys_from_a_harmonized_folder(project, trained, tmp_path):
    folder = tmp_path / "harmonized"
    shutil.copytree(project.domain("hgtp").folder, folder)
    raw = evaluate(trained, project, "hgtp", "val")
    copied = evaluate(trained, project, "hgtp", "val", harmonized_root=folder)
    assert copied.y_pred == raw.y_pred and copied.images == str(folder)
    (folder / raw.keys[0]).unlink()
    with pytest.raises(DataError, match=r"1 of 4 images .* missing"):
        evaluate(trained, project, "hgtp", "val", harmonized_root=folder)


def test_classes_are_matched_by_name(project, trained):
    report = evaluate(trained, project, "mixed", split=None)
    assert report.excluded == {"basophil": 3} and report.n == 4 and set(report.support) == {"lymphocyte"}
    assert report.per_class_recall.keys() == {"lymphocyte"}
    with pytest.raises(DataError, match="no class in common"):
        evaluate(trained, project, "foreign")


def test_evaluate_arrays_takes_uint8_or_float_images(project, trained):
    clf = load_classifier(trained)
    x, labels = _images(project, "hgtp", "test", 40)  # larger than the input: centre-cropped like the datasets
    uint8 = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    a = evaluate_arrays(clf, uint8, labels)
    b = evaluate_arrays(clf, x, labels)
    on_disk = evaluate(clf, project, "hgtp", "test")
    assert a.y_pred == b.y_pred == on_disk.y_pred and a.accuracy == on_disk.accuracy
    c = evaluate_arrays(clf, list(uint8[:3]), [*labels[:2], "blast"], keys=["k0", "k1", "k2"])
    assert c.excluded == {"blast": 1} and c.keys == ["k0", "k1"]
    with pytest.raises(StainshiftError, match="one per image"):
        evaluate_arrays(clf, uint8, labels[:2])
    with pytest.raises(DataError, match="no class in common"):
        evaluate_arrays(clf, uint8, ["blast"] * len(uint8))


def test_bootstrap_intervals():
    truth = np.array([0, 0, 1, 1, 1, 0, 1, 0] * 5)
    assert bootstrap_ci(truth, truth, 2) == ((1.0, 1.0), (1.0, 1.0))
    noisy = truth.copy()
    noisy[:10] = 1 - noisy[:10]
    (lo, hi), (f_lo, f_hi) = bootstrap_ci(truth, noisy, 2, seed=1)
    assert lo < 0.75 < hi and f_lo < f_hi and bootstrap_ci(truth, noisy, 2, seed=1) == ((lo, hi), (f_lo, f_hi))


def test_unusable_model_files_give_one_line_errors(tmp_path):
    cases = {"missing.pt": None, "corrupt.pt": b"not a torch file", "foreign.pt": {"weights": torch.zeros(2)},
             "gan.pt": {"format": 1, "model": "cyclegan", "epoch": 3}}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(StainshiftError) as err:
            load_classifier(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message and "stainshift classify train" in message


# -- command line ----------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch, capsys):
    from stainshift.cli import classify as classify_cli
    from stainshift.cli import main as main_module

    assert classify_cli in main_module.COMMAND_GROUPS

    def run(*argv: str) -> tuple[int, str, str]:
        code = main_module.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_help_has_examples_and_choices_match_the_api(cli, capsys):
    from stainshift.cli import classify as classify_cli

    assert (classify_cli.ARCHS, classify_cli.NORMS, classify_cli.LOSSES) == (ARCHS, NORMS, LOSSES)
    assert (classify_cli.AUGMENTS, classify_cli.KEEPS) == (AUGMENTS, KEEPS)
    for argv in (["classify"], ["classify", "train"], ["classify", "finetune"], ["classify", "eval"]):
        with pytest.raises(SystemExit) as exit_:
            cli(*argv, "--help")
        assert exit_.value.code == 0
        assert "example" in capsys.readouterr().out


def test_cli_train_finetune_eval(project, trained, cli):
    p = str(project.file)
    code, out, err = cli("classify", "train", "--domain", "clinic", "--size", "32", "--epochs", "1",
                         "--batch-size", "4", "--seed", "3", "--name", "cli", "--no-track", "--project", p)
    assert code == 0, err
    assert "val accuracy" in out and "stainshift classify eval --model cli" in out
    from_cli = load_classifier(project.runs / "classifiers" / "cli" / "model.pt")
    assert from_cli.norm == "group"  # --norm's default
    same = from_cli.net.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in load_classifier(trained).net.state_dict().items())  # seeded

    code, out, err = cli("classify", "finetune", "--model", "cli", "--domain", "mixed", "--epochs", "1",
                         "--batch-size", "4", "--no-track", "-q", "--project", p)
    assert code == 0 and out == "" and "basophil (2)" in err  # the class the model lacks is left out

    code, out, err = cli("classify", "eval", "--model", "cli", "--domain", "mixed", "--split", "all", "--project", p)
    assert code == 0, err
    assert "accuracy" in out and "95% CI" in out and "lymphocyte" in out and "basophil (3)" in err
    report = project.runs / "classifiers" / "cli" / "eval" / "mixed-all"
    assert json.loads((report / "metrics.json").read_text())["n"] == 4 and (report / "confusion.png").is_file()


def test_cli_eval_of_harmonized_images(project, trained, cli):
    p = str(project.file)
    code, _, err = cli("classify", "eval", "--model", "clinic-resnet18-group", "--domain", "hgtp", "--method",
                       "reinhard", "--project", p)
    assert code == 2 and "stainshift harmonize --src hgtp --dst clinic --method reinhard" in err
    assert err.count("\n") == 1
    folder = project.runs / "hgtp_to_clinic" / "reinhard" / "harmonized"
    shutil.copytree(project.domain("hgtp").folder, folder)
    (folder / "manifest.csv").write_text("input,output,method,epoch,checkpoint\na,b,reinhard,,\n")
    code, out, err = cli("classify", "eval", "--model", "clinic-resnet18-group", "--domain", "hgtp", "--method",
                         "reinhard", "--project", p)
    assert code == 0 and "accuracy" in out and str(folder) in out
    report = project.runs / "classifiers" / "clinic-resnet18-group" / "eval" / "hgtp-test-reinhard"
    assert (report / "metrics.json").is_file()
    code, _, err = cli("classify", "eval", "--model", "clinic-resnet18-group", "--domain", "hgtp", "--method",
                       "reinhard", "--epoch", "3", "--project", p)
    assert code == 2 and "not 3" in err and "--epoch 3" in err
    code, out, err = cli("classify", "eval", "--model", "clinic-resnet18-group", "--domain", "hgtp", "--harmonized",
                         str(folder), "--out", str(folder.parent / "report"), "-q", "--project", p)
    assert code == 0 and out.startswith("clinic-resnet18-group on hgtp test") and (folder.parent / "report").is_dir()


def test_cli_errors_are_one_line(project, trained, cli):
    p = str(project.file)
    for argv, expected in (
        (["classify", "eval", "--model", "nope", "--domain", "hgtp"], "no classifier"),
        (["classify", "eval", "--model", "clinic-resnet18-group", "--domain", "nowhere"], "unknown domain"),
        (["classify", "train", "--domain", "clinic", "--size", "32", "--no-track", "-q"], "exists"),
        (["classify", "finetune", "--model", "clinic-resnet18-group", "--domain", "foreign", "--no-track"], "no class"),
    ):
        code, _, err = cli(*argv, "--project", p)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_:
        cli("classify", "train", "--domain", "clinic", "--arch", "vgg")
    assert exit_.value.code == 2
