"""The data layer's error type: every message names the file, the field and what was expected."""

from __future__ import annotations

from ..errors import RislibError

__all__ = ["DataFormatError", "DataRootError", "DegenerateAnnotationWarning"]


class DataFormatError(RislibError, ValueError):
    """A data file exists but its content is not what the format requires.

    Raised for truncated or malformed JSON and pickle files, missing fields, references to
    missing annotations or images, empty sentences, and unknown split names.
    """


class DataRootError(RislibError, FileNotFoundError):
    """A data root is missing, or exists but lacks files a loader needs (the message lists them)."""


class DegenerateAnnotationWarning(UserWarning):
    """Annotations that are legal but degenerate (a polygon of fewer than 3 points, one
    entirely outside its image, an empty segmentation...): their masks are empty or smaller
    than the annotator drew. Loaders count them and warn once; ``strict=True`` refuses them."""
