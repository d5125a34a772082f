"""mlflow tracking against the project's URI (an embedded sqlite file by default).

Artifacts go to ``<runs>/mlartifacts`` next to the database instead of mlflow's default ``./mlruns`` in whatever
folder the user happens to be in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from stainshift.project import Project


def _mlflow():
    import mlflow

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow


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
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield mlflow
