"""The folder layout under the project's ``runs/``: the only module that knows where anything is written.

::

    runs/
      splits/<domain>.csv (+ .json)            saved splits (stainshift.data.splits)
      scale/<domain>.json                      measured cell diameter (stainshift.data.scale)
      synth/shapes/<domain>.npz (+ .png)       cell-shape database and its contact sheet (stainshift.synth)
      classifiers/<name>/model.pt ...          classifier runs
      <src>_to_<dst>/                          a pair
        <method>/<run_id>/                     a training run
          config.json  last.pt  manifest.json
          epochs/epoch_NNN.pt                  kept epochs (translator only, with options and preprocessing)
          samples/epoch_NNN.png
          export/epoch_NNN.onnx                `stainshift export` (a kept epoch as ONNX, verified)
          selected.json                        the latest selection (what `--epoch best` reads)
          selections/<rule>[--<classifier>].json   every selection, per rule and classifier
          selection.csv  selection.png
        <method>/harmonized/                   `stainshift harmonize` output
        benchmark/                             `stainshift benchmark` tables and plot
          images/<condition>/                  harmonized test images, one folder per method and epoch
        report/index.html  report/files/       `stainshift report`: the static page and the files it shows
      <domain>.<from>_to_<domain>.<to>/        a class pair of one domain (`stainshift rare`), laid out as a pair
      pipelines/<recipe>-<hash>.json           the steps a recipe finished, per set of variables (`pipeline run`)
      registry/<model>/v<version>/             epoch files fetched from the mlflow model registry (`--model`)

A model that learns from the target domain alone (its data regime needs no source) serves every source of that
target: :func:`serving_run` finds its newest run under any ``*_to_<dst>`` pair.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from stainshift.errors import StainshiftError
from stainshift.project import Project

LAST_STATE = "last.pt"
SELECTED = "selected.json"
MODEL_FILE = "model.pt"
CLASSIFIERS = "classifiers"


# -- per domain ---------------------------------------------------------------------------------------------------
def split_file(project: Project, domain: str) -> Path:
    return project.runs / "splits" / f"{domain}.csv"


def shapes_file(project: Project, domain: str) -> Path:
    """The cached cell-shape database of ``domain`` (its contact sheet lies next to it, as ``.png``)."""
    return project.runs / "synth" / "shapes" / f"{domain}.npz"


def scale_cache(project: Project, domain: str) -> Path:
    return project.runs / "scale" / f"{domain}.json"


def fields_cache(project: Project, domain: str) -> Path:
    """The white cells located in each field of a ``fields = true`` domain."""
    return project.runs / "fields" / f"{domain}.json"


# -- pairs and training runs --------------------------------------------------------------------------------------
def pair_dir(project: Project, src: str, dst: str) -> Path:
    return project.runs / f"{src}_to_{dst}"


def class_view(domain: str, cls: str) -> str:
    """The name one class of a domain goes by in run folders (``pbc.lymphocyte``): between-class models
    (``stainshift rare``) run under ``runs/<domain>.<from>_to_<domain>.<to>/``. Domain names hold no dots."""
    return f"{domain}.{cls}"


def command_hint(action: str, method: str, src: str, dst: str) -> str:
    """The command that trains (``action="train"``) or selects for a run of this pair: ``stainshift rare ...`` for a
    class pair (``domain.class`` names), else ``stainshift train|select ...``."""
    if "." in src and "." in dst:
        domain, source = src.split(".", 1)
        target = dst.split(".", 1)[1]
        return f"stainshift rare {action} --domain {domain} --from {source} --to {target}"
    if action == "train":
        return f"stainshift train {method} --src {src} --dst {dst}"
    return f"stainshift select --src {src} --dst {dst} --method {method}"


def method_dir(project: Project, src: str, dst: str, method: str) -> Path:
    """Where the runs of ``method`` for this pair live."""
    return pair_dir(project, src, dst) / method


def new_run_id(preset: str, seed: int) -> str:
    return f"{preset}-s{seed}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def last_state(run: Path) -> Path:
    return run / LAST_STATE


def config_file(run: Path) -> Path:
    return run / "config.json"


def manifest_file(run: Path) -> Path:
    return run / "manifest.json"


def read_config(run: Path) -> dict:
    path = config_file(run)
    return json.loads(path.read_text()) if path.exists() else {}


def samples_file(run: Path, epoch: int) -> Path:
    return run / "samples" / f"epoch_{epoch:03d}.png"


def epoch_file(run: Path, epoch: int) -> Path:
    return run / "epochs" / f"epoch_{epoch:03d}.pt"


def kept_epochs(run: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run / "epochs").glob("epoch_*.pt"))


def _newest(states: Iterable[Path]) -> Path | None:
    """The run folder whose ``last.pt`` was written last."""
    runs = [p.parent for p in states]
    return max(runs, key=lambda p: last_state(p).stat().st_mtime) if runs else None


def latest_run(project: Project, src: str, dst: str, method: str) -> Path | None:
    """The most recently updated run of this pair and method that has a ``last.pt``."""
    return _newest(method_dir(project, src, dst, method).glob(f"*/{LAST_STATE}"))


def latest_started_run(project: Project, src: str, dst: str, method: str) -> Path | None:
    """The most recently started run (a ``config.json``), whether or not it finished an epoch."""
    started = [p.parent for p in method_dir(project, src, dst, method).glob("*/config.json")]
    return max(started, key=lambda p: config_file(p).stat().st_mtime) if started else None


def serving_run(project: Project, src: str, dst: str, method: str) -> Path | None:
    """The run that translates ``src`` to ``dst``: the pair's latest run; failing that, for a model that never sees
    a source (its data regime needs none), the latest run of that method for any source with this target."""
    from stainshift.models.registry import model_class

    run = latest_run(project, src, dst, method)
    if run is not None or model_class(method).data_regime.needs_source:
        return run
    return _newest(project.runs.glob(f"*_to_{dst}/{method}/*/{LAST_STATE}"))


def runs_by_seed(project: Project, src: str, dst: str, method: str, prefix: str | None = None) -> dict[int, Path]:
    """The newest run of each training seed that serves ``src -> dst`` (for a model that needs no source: under
    any pair with this target, when the pair itself has none); with ``prefix``, only runs whose id starts so."""
    from stainshift.models.registry import model_class

    def matching(found: Iterable[Path]) -> list[Path]:
        return [s for s in found if not prefix or s.parent.name.startswith(prefix)]

    states = matching(method_dir(project, src, dst, method).glob(f"*/{LAST_STATE}"))
    if not states and not model_class(method).data_regime.needs_source:
        states = matching(project.runs.glob(f"*_to_{dst}/{method}/*/{LAST_STATE}"))
    newest: dict[int, Path] = {}
    for state in sorted(states, key=lambda p: p.stat().st_mtime):
        seed = read_config(state.parent).get("seed")
        if isinstance(seed, int) and kept_epochs(state.parent):
            newest[seed] = state.parent
    return dict(sorted(newest.items()))


def find_run(project: Project, src: str, dst: str, method: str, run_id: str | None = None) -> Path:
    """The named (else serving) run, with at least one kept epoch; one-line errors saying what to do."""
    base = method_dir(project, src, dst, method)
    run = base / run_id if run_id else serving_run(project, src, dst, method)
    if run is None or not run.is_dir():
        what = f"{method} run '{run_id}'" if run_id else f"trained {method} run"
        raise StainshiftError(f"no {what} for {src} -> {dst} under {base}; train one with "
                              f"`{command_hint('train', method, src, dst)}`")
    if not kept_epochs(run):
        raise StainshiftError(f"{run}: no kept epoch files (epochs/epoch_NNN.pt) yet; let the training reach a kept "
                              "epoch or train with --keep-epochs, e.g. 1,2,3,5,10")
    return run


def resolve_epoch(project: Project, src: str, dst: str, method: str, epoch: str | int,
                  run_id: str | None = None, rule: str | None = None) -> tuple[Path, int, dict | None]:
    """The epoch file for ``epoch`` ("best", "last" or a number) of the serving (or named) run, and for "best" the
    selection record it came from: ``rule`` None reads ``selected.json`` (the latest selection made), a rule name
    the newest record of that rule under ``selections/``."""
    run = find_run(project, src, dst, method, run_id)
    kept = kept_epochs(run)
    record = None
    if epoch == "best":
        record = selection_record(run, rule, src)
        if record is None:
            which = f" by the {rule} rule" if rule else ""
            select = command_hint("select", method, src, dst) + (f" --rule {rule}" if rule else "")
            raise StainshiftError(f"{run}: no epoch selected{which} yet; run `{select}` first, or pass "
                                  "--epoch last / --epoch N")
        epoch = int(record["epoch"])
    elif epoch == "last":
        epoch = kept[-1]
    epoch = int(epoch)
    if epoch not in kept:
        raise StainshiftError(f"{run}: epoch {epoch} was not kept (kept: {', '.join(map(str, kept))}); "
                              "pass one of those with --epoch")
    return epoch_file(run, epoch), epoch, record


# -- selections ---------------------------------------------------------------------------------------------------
def serves_other_pair(run: Path, src: str | None) -> bool:
    """Whether ``run`` (a target-only model trained under another source's pair) is serving ``src``."""
    return src is not None and not run.parent.parent.name.startswith(f"{src}_to_")


def _from(run: Path, src: str | None) -> str:
    return f"--from-{src}" if serves_other_pair(run, src) else ""


def selected_file(run: Path, src: str | None = None) -> Path:
    """The latest selection for the run's own pair (``selected.json``), or for ``src`` when the run serves another
    source's pair, so one pair's selection never decides another's."""
    return run / (SELECTED if not _from(run, src) else f"selected{_from(run, src)}.json")


def selection_file(run: Path, rule: str, classifier: str | None, src: str | None = None) -> Path:
    """One selection's record, kept per rule and classifier (and source, for a run serving another pair)."""
    name = rule if not classifier else f"{rule}--{Path(classifier).parent.name or Path(classifier).stem}"
    return run / "selections" / f"{name}{_from(run, src)}.json"


def selection_record(run: Path, rule: str | None = None, src: str | None = None) -> dict | None:
    """The latest selection, or the newest one made by ``rule``, for ``src``; None when there is none."""
    if rule is None:
        path = selected_file(run, src)
        return json.loads(path.read_text()) if path.exists() else None
    suffix = _from(run, src)  # records are <rule>[--<classifier>][--from-<src>].json
    records = sorted((p for p in (run / "selections").glob(f"{rule}*.json")
                      if p.stem.split("--")[0] == rule and ("--from-" in p.stem) == bool(suffix)
                      and p.stem.endswith(suffix)), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text()) if records else None


def selection_table(run: Path, src: str | None = None) -> Path:
    """Every kept epoch's selection scores."""
    return run / f"selection{_from(run, src)}.csv"


def selection_plot(run: Path, src: str | None = None) -> Path:
    return run / f"selection{_from(run, src)}.png"


# -- outputs ------------------------------------------------------------------------------------------------------
def harmonized_dir(project: Project, src: str, dst: str, method: str) -> Path:
    """Default output of ``stainshift harmonize`` (and what ``classify eval --method`` reads)."""
    return method_dir(project, src, dst, method) / "harmonized"


def benchmark_dir(project: Project, src: str, dst: str) -> Path:
    return pair_dir(project, src, dst) / "benchmark"


def benchmark_images(project: Project, src: str, dst: str, condition: str | None = None) -> Path:
    """Harmonized test images of one benchmark condition (a method, or a learned method's run and epoch); without
    ``condition``, the folder holding them all."""
    root = benchmark_dir(project, src, dst) / "images"
    return root / condition if condition else root


def benchmark_table(project: Project, src: str, dst: str) -> Path:
    """One row per reported classifier and condition (what ``stainshift benchmark`` measured)."""
    return benchmark_dir(project, src, dst) / "benchmark.csv"


def report_dir(project: Project, src: str, dst: str) -> Path:
    """Default output of ``stainshift report``: ``index.html`` and the ``files/`` it links to."""
    return pair_dir(project, src, dst) / "report"


def learned_condition(run: Path, src: str, dst: str, epoch: int) -> str:
    """The image-folder name of a learned run's epoch: method and run, plus the run's pair when it serves another
    pair (a target-only model), so a newer run never reuses an older run's images."""
    method, pair = run.parent.name, run.parent.parent.name
    prefix = method if pair == f"{src}_to_{dst}" else f"{method}_{pair}"
    return f"{prefix}_{run.name}_e{epoch}"


def export_file(run: Path, epoch: int, fmt: str = "onnx") -> Path:
    """Default output of ``stainshift export`` for a kept epoch: ``<run>/export/epoch_NNN.<fmt>``."""
    return run / "export" / f"epoch_{epoch:03d}.{fmt}"


def checkpoint_export_file(checkpoint: Path, fmt: str = "onnx") -> Path:
    """Default output of ``stainshift export --checkpoint``: the run's ``export/`` for an epoch file inside a run
    (``<run>/epochs/epoch_NNN.pt``), else the file's own name and folder with the format's suffix."""
    number = checkpoint.stem.removeprefix("epoch_")
    if checkpoint.parent.name == "epochs" and checkpoint.stem.startswith("epoch_") and number.isdigit():
        return export_file(checkpoint.parent.parent, int(number), fmt)
    return checkpoint.with_suffix(f".{fmt}")


def registry_cache(project: Project, name: str, version: int) -> Path:
    """Where a registered harmonizer's epoch file is kept once fetched from the model registry."""
    return project.runs / "registry" / name / f"v{version}"


# -- classifiers --------------------------------------------------------------------------------------------------
def classifiers_dir(project: Project) -> Path:
    return project.runs / CLASSIFIERS


def check_classifier_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\") or name.startswith("."):
        raise StainshiftError(f"classifier name {name!r}: use a plain folder name (letters, digits, '-', '_')")


def classifier_dir(project: Project, name: str) -> Path:
    """``<runs>/classifiers/<name>``."""
    check_classifier_name(name)
    return classifiers_dir(project) / name


def find_classifier(runs: Path, ref: str | Path) -> Path:
    """A classifier file from a path (file or run folder) or a run name under ``<runs>/classifiers/``."""
    ref_path = Path(ref)
    folder = runs / CLASSIFIERS
    for candidate in (ref_path, ref_path / MODEL_FILE, folder / str(ref) / MODEL_FILE):
        if candidate.is_file():
            return candidate
    known = sorted(p.parent.name for p in folder.glob(f"*/{MODEL_FILE}")) if folder.is_dir() else []
    raise StainshiftError(f"{ref}: no classifier file or run of that name (known in {folder}: "
                          f"{', '.join(known) or 'none'}); train one with `stainshift classify train --domain NAME`")
