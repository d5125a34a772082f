"""mlflow tracking against the project's URI (an embedded sqlite file by default): the one module that talks to it.

- :func:`tracked_run`: a run for the duration of a ``with`` block (classifiers, the demo);
- :class:`RunTracker`: a run that outlives one call, started or resumed by id (training, which resumes);
- :func:`log_to_run`: tags, stepped metrics and artifacts added to an existing (possibly finished) run (selection);
- the model registry (same URI): :func:`create_version`, :func:`model_versions`, :func:`download` (used by
  :mod:`stainshift.model_registry`, which decides what is registered).

Artifacts go to ``<runs>/mlartifacts`` next to the database instead of mlflow's default ``./mlruns`` in whatever
folder the user happens to be in.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stainshift.project import Project


def _mlflow():
    import mlflow

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in params.items()}


def experiment_id(project: Project, name: str) -> str:
    """The id of experiment ``name`` in the project's tracking store, created with artifacts under runs/."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(project.tracking_uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if project.tracking_uri.startswith("sqlite:"):
        location = (project.runs / "mlartifacts" / name).as_uri()
    project.runs.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def tracked_run(project: Project, experiment: str, run_name: str, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an mlflow run (params and tags logged up front); yields the ``mlflow`` module for logging."""
    mlflow = _mlflow()
    project.runs.mkdir(parents=True, exist_ok=True)
    exp = experiment_id(project, experiment)
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=dict(tags or {})):
        if params:
            mlflow.log_params(_params(params))
        yield mlflow


class RunTracker:
    """An mlflow run started now (or resumed when ``run_id`` is given) and ended by :meth:`close`."""

    def __init__(self, project: Project, experiment: str, run_name: str, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None, run_id: str | None = None) -> None:
        self.mlflow = _mlflow()
        self.mlflow.set_tracking_uri(project.tracking_uri)
        if run_id:
            self.run = self.mlflow.start_run(run_id=run_id)
        else:
            self.run = self.mlflow.start_run(experiment_id=experiment_id(project, experiment), run_name=run_name,
                                             tags=dict(tags or {}))
            if params:
                self.mlflow.log_params(_params(params))

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def log_to_run(project: Project, run_id: str, tags: Mapping[str, str] | None = None,
               metrics: Iterable[tuple[str, float, int]] = (), artifacts: Iterable[Path] = (),
               artifact_path: str | None = None) -> None:
    """Add tags, ``(key, value, step)`` metrics and artifact files to an existing run."""
    mlflow = _mlflow()
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step) for key, value, step in metrics]
    if batch:
        client.log_batch(run_id, metrics=batch)
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


# -- the model registry -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model, as plain values."""

    name: str
    version: int
    source: str  # where its artifacts are (the artifact URI of the run that logged them)
    run_id: str  # that mlflow run
    tags: dict[str, str]
    description: str


def _registry(project: Project):
    return _mlflow().MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)


def _version(v: Any) -> ModelVersion:
    return ModelVersion(v.name, int(v.version), v.source, v.run_id or "", dict(v.tags or {}), v.description or "")


def registered_models(project: Project) -> list[str]:
    """Names of every registered model in the project's registry."""
    return sorted(m.name for m in _registry(project).search_registered_models())


def model_versions(project: Project, name: str) -> list[ModelVersion]:
    """Every version of model ``name``, oldest first (empty when there is no such model)."""
    if name not in registered_models(project):
        return []
    found = _registry(project).search_model_versions(f"name='{name}'")
    return sorted((_version(v) for v in found), key=lambda v: v.version)


def version_by_alias(project: Project, name: str, alias: str) -> ModelVersion | None:
    """The version of ``name`` that ``alias`` (set in the mlflow UI, e.g. ``champion``) points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return _version(_registry(project).get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def create_version(project: Project, experiment: str, run_name: str, name: str, files: Iterable[Path],
                   params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str],
                   description: str, model_description: str) -> ModelVersion:
    """A new version of model ``name`` (created if new): an mlflow run of ``experiment`` logs ``files`` under
    ``model/`` with ``params`` and ``metrics``; the version points at that folder and carries ``tags``."""
    with tracked_run(project, experiment, run_name, params, tags) as mlflow:
        mlflow.log_metrics(dict(metrics))
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="model")
        run = mlflow.active_run().info
    client = _registry(project)
    if name not in registered_models(project):
        client.create_registered_model(name, description=model_description)
    source = client.get_run(run.run_id).info.artifact_uri.rstrip("/") + "/model"
    return _version(client.create_model_version(name, source, run_id=run.run_id, tags=dict(tags),
                                                description=description))


def download(project: Project, artifact_uri: str, folder: Path) -> Path:
    """Download one artifact (file or folder URI) into ``folder``; returns its local path."""
    import mlflow.artifacts

    _mlflow()  # the progress bar is off for the whole process (stainshift/__init__.py): one file at a time here
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(folder),
                                                    tracking_uri=project.tracking_uri,
                                                    registry_uri=project.tracking_uri))
