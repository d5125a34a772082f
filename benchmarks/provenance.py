"""Where a benchmark result came from (shared by every script): see :mod:`stainshift.provenance`."""

from stainshift.provenance import code_version, cpu_model, git_commit, machine, record, require_clean, tree_dirty

__all__ = ["code_version", "cpu_model", "git_commit", "machine", "record", "require_clean", "tree_dirty"]
