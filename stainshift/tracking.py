"""mlflow tracking against the project's URI (an embedded sqlite file by default): the one module that talks to it.

- :func:`tracked_run`: a run for the duration of a ``with`` block (classifiers, the demo);
- :class:`RunTracker`: a run that outlives one call, started or resumed by id (training, which resumes);
- :func:`log_to_run`: tags, stepped metrics and artifacts added to an existing (possibly finished) run (selection).

Artifacts go to ``<runs>/mlartifacts`` next to the database instead of mlflow's default ``./mlruns`` in whatever
folder the user happens to be in.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
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
