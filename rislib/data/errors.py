"""The data layer's error type: every message names the file, the field and what was expected."""

from __future__ import annotations

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A data file exists but its content is not what the format requires.

    Raised for truncated or malformed JSON and pickle files, missing fields, references to
    missing annotations or images, empty sentences, and unknown split names.
    """
