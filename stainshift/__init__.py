"""stainshift: standardize blood-cell microscopy staining across hospitals.

The public API is importable from here; heavy modules (torch, mlflow) load on first use:

    >>> from stainshift import load_project, simulate, domain_split
"""

from __future__ import annotations

import importlib
import os

# Offline by construction: timm would otherwise retry the Hugging Face hub for ~48 s before failing, and mlflow
# would try to send telemetry. Users can still override either variable explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # registry fetches: no bar on stderr

__version__ = "0.1.0"

_API = {
    "Project": "stainshift.project",
    "DomainConfig": "stainshift.project",
    "load_project": "stainshift.project",
    "save_project": "stainshift.project",
    "StainshiftError": "stainshift.errors",
    "read_image": "stainshift.data.io",
    "read_mask": "stainshift.data.io",
    "write_image": "stainshift.data.io",
    "scan_domain": "stainshift.data.domains",
    "add_domain": "stainshift.data.domains",
    "domain_split": "stainshift.data.splits",
    "samples_in": "stainshift.data.splits",
    "domain_dataset": "stainshift.data.datasets",
    "scale_factor": "stainshift.data.scale",
    "inspect_domain": "stainshift.data.inspect",
    "simulate": "stainshift.data.simulate",
    "build_normalizer": "stainshift.normalize",
    "build_model": "stainshift.models.registry",
    "register_model": "stainshift.models.registry",
    "load_translator": "stainshift.models.registry",
    "TrainRequest": "stainshift.train.loop",
    "train": "stainshift.train.loop",
    "HarmonizeRequest": "stainshift.harmonize",
    "harmonize": "stainshift.harmonize",
    "select_epoch": "stainshift.select",
    "BenchmarkRequest": "stainshift.benchmark",
    "run_benchmark": "stainshift.benchmark",
    "Selection": "stainshift.select",
    "ClassifierRequest": "stainshift.classify.train",
    "train_classifier": "stainshift.classify.train",
    "finetune_classifier": "stainshift.classify.train",
    "load_classifier": "stainshift.classify.models",
    "evaluate_classifier": "stainshift.classify.evaluate",
    "run_demo": "stainshift.demo",
}

__all__ = sorted(_API)


_RENAMED = {"build_normalizer": "build", "evaluate_classifier": "evaluate", "register_model": "register"}


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), _RENAMED.get(name, name))
    raise AttributeError(f"module 'stainshift' has no attribute {name!r}")
