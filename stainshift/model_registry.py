"""Selected harmonizers in the mlflow model registry (the project's tracking URI: ``runs/mlflow.db`` by default).

A registered model per pair and method, ``stainshift-<src>_to_<dst>-<method>``; a version is one kept epoch file of
a training run (the selected one by default), logged with its selection record by a small mlflow run of the pair's
experiment, and tagged with where it came from: ``stainshift.src`` / ``dst`` / ``method`` / ``epoch`` / ``rule`` /
``checkpoint`` (sha256, 16 hex digits) / ``run_id``, the selection scores of that epoch (``stainshift.score.<metric>``)
and provenance (training code version, registering commit, training mlflow run).

    >>> version, new = register(project, "hgtp", "clinic")                   # after `stainshift select`
    >>> harmonize(project, HarmonizeRequest(model=version.uri))  # pair and method come from the version

``harmonize --model models:/NAME/VERSION`` (or ``models:/NAME/latest``, ``models:/NAME@ALIAS``) fetches the epoch
file into ``runs/registry/`` (checked against its sha256) and loads it as any epoch file, weights only: nothing
pickled is taken from the registry. A checkpoint is registered once: registering it again returns its version.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stainshift import runs
from stainshift.errors import StainshiftError
from stainshift.project import Project

if TYPE_CHECKING:
    from stainshift.tracking import ModelVersion

PREFIX = "stainshift."
SCORES = ("ssim", "color", "fd", "fid", "accuracy", "macro_f1", "min_recall", "drift")
_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9_.\-]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_\-]+))")


def model_name(src: str, dst: str, method: str) -> str:
    """The registered model that holds the harmonizers of one pair and method."""
    return f"stainshift-{src}_to_{dst}-{method}"


@dataclass(frozen=True)
class Harmonizer:
    """One registered version, read back from its tags."""

    name: str
    version: int
    src: str
    dst: str
    method: str
    epoch: int
    rule: str         # the selection rule that chose the epoch, "manual" when it was named by hand
    checkpoint: str   # sha256 of the epoch file, 16 hex digits
    file: str         # the epoch file's name under the version's artifacts
    source: str       # the version's artifact folder
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def scores(self) -> dict[str, float]:
        return {k[len(PREFIX + "score."):]: float(v) for k, v in self.tags.items() if k.startswith(PREFIX + "score.")}

    def check_request(self, src: str, dst: str, method: str, epoch: str | int) -> None:
        """One-line error when a harmonize request names another pair, method or epoch than this version."""
        for what, asked, mine in (("--src", src, self.src), ("--dst", dst, self.dst), ("--method", method,
                                                                                          self.method)):
            if asked != mine:
                raise StainshiftError(f"{self.uri} is a {self.method} harmonizer for {self.src} -> {self.dst}, not "
                                      f"{what} {asked}; drop {what} or pick another model (`stainshift models list`)")
        if epoch not in ("best", self.epoch):
            raise StainshiftError(f"{self.uri} is epoch {self.epoch}, not --epoch {epoch}; drop --epoch with --model")


def _from_version(version: ModelVersion) -> Harmonizer:
    t = version.tags
    uri = f"models:/{version.name}/{version.version}"
    if PREFIX + "method" not in t or PREFIX + "file" not in t:
        raise StainshiftError(f"{uri} was not registered by stainshift (no stainshift.* tags); register a harmonizer "
                              "with `stainshift models register --src S --dst D`")
    return Harmonizer(version.name, version.version, t[PREFIX + "src"], t[PREFIX + "dst"], t[PREFIX + "method"],
                      int(t[PREFIX + "epoch"]), t.get(PREFIX + "rule", ""), t.get(PREFIX + "checkpoint", ""),
                      t[PREFIX + "file"], version.source, dict(t))


def _registry_error(project: Project, exc: Exception) -> StainshiftError:
    return StainshiftError(f"model registry at {project.tracking_uri} failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); check tracking_uri in {project.file}")


def _tags(src: str, dst: str, method: str, run: Path, epoch: int, path: Path,
          record: dict | None, checkpoint: str) -> dict[str, str]:
    from stainshift.provenance import git_commit, tree_dirty

    config = runs.read_config(run)
    tags = {"src": src, "dst": dst, "method": method, "epoch": str(epoch), "file": path.name,
            "checkpoint": checkpoint, "run_id": run.name, "run_dir": str(run),
            "rule": record["rule"] if record and record.get("epoch") == epoch else "manual",
            "code_version": str(config.get("code_version", "")), "preset": str(config.get("preset", "")),
            "seed": str(config.get("seed", "")), "training_mlflow_run": str(config.get("mlflow_run_id") or ""),
            "registered_commit": git_commit(), "registered_dirty": str(tree_dirty())}
    if record:
        tags.update({"selection_created": str(record.get("created", "")), "ssim_min": str(record.get("ssim_min")),
                     "classifier": str(record.get("classifier") or ""), "fallback": str(record.get("fallback"))})
        row = next((r for r in record.get("scores", []) if r.get("epoch") == epoch), {})
        tags.update({f"score.{k}": str(row[k]) for k in SCORES if row.get(k) is not None})
    return {PREFIX + k: v for k, v in tags.items()}


def register(project: Project, src: str, dst: str, method: str = "cyclegan", epoch: str | int = "best",
             rule: str | None = None, run_id: str | None = None) -> tuple[Harmonizer, bool]:
    """Register the selected (or ``epoch``) epoch of the latest (or ``run_id``) ``method`` run of ``src -> dst``;
    returns the version and whether it is new (False: that checkpoint was registered before, as this version)."""
    from stainshift import tracking
    from stainshift.models.kinds import Kind
    from stainshift.models.registry import entry
    from stainshift.train.checkpoints import file_hash

    project.domain(src), project.domain(dst)
    kind = entry(method)
    if kind.kind is not Kind.LEARNED or not kind.translates_images or kind.between_classes:
        raise StainshiftError(f"{method} is not a learned stain translation: only trained harmonizers (their epoch "
                              "files) are registered; classical methods are fitted by `stainshift harmonize` itself")
    path, chosen, record = runs.resolve_epoch(project, src, dst, method, epoch, run_id, rule)
    run = path.parent.parent
    if record is None:  # an epoch named by hand: its scores from the latest selection, when it scored it
        record = runs.selection_record(run, None, src)
    checkpoint = file_hash(path)
    name = model_name(src, dst, method)
    try:
        for version in tracking.model_versions(project, name):
            if version.tags.get(PREFIX + "checkpoint") == checkpoint:
                return _from_version(version), False
        tags = _tags(src, dst, method, run, chosen, path, record, checkpoint)
        with tempfile.TemporaryDirectory() as tmp:
            files = [path]
            if record is not None:
                files.append(Path(tmp) / "selection.json")
                files[-1].write_text(json.dumps(record, indent=2))
            reason = (record or {}).get("reason", "") if tags[PREFIX + "rule"] != "manual" else "epoch named by hand"
            version = tracking.create_version(
                project, f"{src}_to_{dst}", f"register/{method}/{run.name}/e{chosen}", name, files,
                params={"src": src, "dst": dst, "method": method, "epoch": chosen, "run_id": run.name},
                metrics={f"select_{k[len(PREFIX + 'score.'):]}": float(v) for k, v in tags.items()
                         if k.startswith(PREFIX + "score.")},
                tags=tags, description=f"epoch {chosen} of {run.name} ({tags[PREFIX + 'rule']}): {reason}",
                model_description=f"stainshift {method} harmonizers {src} -> {dst}")
    except StainshiftError:
        raise
    except Exception as exc:  # the store is unreachable or refuses: one line naming it
        raise _registry_error(project, exc) from None
    return _from_version(version), True


def resolve(project: Project, uri: str) -> Harmonizer:
    """The version ``models:/NAME/VERSION`` (also ``models:/NAME/latest``, ``models:/NAME@ALIAS``) names."""
    from stainshift import tracking

    match = _URI.fullmatch(uri.strip())
    if match is None:
        raise StainshiftError(f"--model {uri!r}: use models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS "
                              "(registered names: `stainshift models list`)")
    name = match["name"]
    try:
        versions = tracking.model_versions(project, name)
        known = tracking.registered_models(project) if not versions else []
        aliased = tracking.version_by_alias(project, name, match["alias"]) if match["alias"] and versions else None
    except Exception as exc:
        raise _registry_error(project, exc) from None
    if not versions:
        raise StainshiftError(f"no registered model '{name}' in {project.tracking_uri} (known: "
                              f"{', '.join(known) or 'none'}); register one with `stainshift models register "
                              "--src S --dst D --method M`")
    if match["alias"]:
        if aliased is None:
            raise StainshiftError(f"model '{name}' has no alias '{match['alias']}'; set it in the mlflow UI or use "
                                  f"models:/{name}/VERSION (versions: {', '.join(str(v.version) for v in versions)})")
        return _from_version(aliased)
    if match["version"] == "latest":
        return _from_version(versions[-1])
    found = next((v for v in versions if v.version == int(match["version"])), None)
    if found is None:
        raise StainshiftError(f"model '{name}' has no version {match['version']} (versions: "
                              f"{', '.join(str(v.version) for v in versions)}); see `stainshift models list`")
    return _from_version(found)


def fetch(project: Project, model: Harmonizer) -> Path:
    """The version's epoch file, downloaded once into ``runs/registry/<name>/v<version>/`` and checked against its
    sha256 (a stale or damaged copy is fetched again)."""
    from stainshift import tracking
    from stainshift.train.checkpoints import file_hash

    folder = runs.registry_cache(project, model.name, model.version)
    target = folder / model.file
    if target.is_file() and file_hash(target) == model.checkpoint:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        try:
            got = tracking.download(project, f"{model.source.rstrip('/')}/{model.file}", Path(tmp))
        except Exception as exc:
            raise StainshiftError(f"{model.uri}: could not download {model.file} from {model.source} "
                                  f"({type(exc).__name__}); check that the artifact store is reachable") from None
        if file_hash(got) != model.checkpoint:
            raise StainshiftError(f"{model.uri}: the downloaded {model.file} does not match its registered sha256 "
                                  f"{model.checkpoint}; register the harmonizer again")
        os.replace(got, target)  # same folder: atomic
    return target


def list_models(project: Project, name: str | None = None) -> list[Harmonizer]:
    """Every stainshift harmonizer version in the registry (of model ``name`` only, when given)."""
    from stainshift import tracking

    try:
        names = [name] if name else [n for n in tracking.registered_models(project) if n.startswith("stainshift-")]
        versions = [v for n in names for v in tracking.model_versions(project, n)]
    except Exception as exc:
        raise _registry_error(project, exc) from None
    return [_from_version(v) for v in versions if PREFIX + "method" in v.tags]
