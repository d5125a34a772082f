"""Errors a user can fix. The CLI prints them as one line (no traceback) and exits with status 2."""


class StainshiftError(Exception):
    """Base class: the message names the file or setting at fault and what to do about it."""


class ImageReadError(StainshiftError):
    """An image or mask file cannot be read (corrupt, truncated, empty, unsupported layout)."""


class ImageWriteError(StainshiftError):
    """An output could not be written, or writing it would overwrite an input."""


class ProjectError(StainshiftError):
    """The project file is missing, malformed, or names an unknown domain."""


class DataError(StainshiftError):
    """A domain's folder is empty, its classes mismatch, or its saved split is stale."""
