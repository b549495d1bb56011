"""Reading the files of a data set: JSON with precise errors, and images as RGB."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataFormatError

__all__ = ["load_json", "load_rgb_image", "to_rgb", "check_relative_path"]


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing, truncated or malformed file gives an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}: malformed or truncated JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from e


def check_relative_path(name: Any, *, where: str) -> str:
    """``name`` if it is a relative path that stays inside the folder it is joined to, else an error.

    Annotation files name images relative to an image folder; a name such as
    ``../../etc/passwd`` or ``/etc/passwd`` would read a file outside it, so it is refused
    (checked on the text, before any file is touched; ``..`` is refused anywhere in it).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DataFormatError(f"{where}: expected a relative file name, got {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise DataFormatError(
            f"{where}: expected a file name inside the image folder, got {name!r} (absolute paths and '..' are refused)"
        )
    return name


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Grayscale and palette images are expanded, alpha is dropped (RGBA, LA), and 16/32-bit
    integer or float grayscale images (modes ``I;16*``, ``I``, ``F``) are rescaled to 0..255
    (``value / 257`` when the values exceed 255, as for 16-bit PNGs).
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.asarray(image).astype(np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_rgb_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image file as RGB.

    Args:
        path: the image file.
        expected_size: ``(height, width)`` from the annotation file; a mismatch is an error
            (the masks would not line up).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DataFormatError(f"{path}: not a readable image ({e})") from e
    if expected_size is not None and (rgb.height, rgb.width) != tuple(expected_size):
        raise DataFormatError(
            f"{path}: image is {rgb.height}x{rgb.width} (h x w) but its annotation entry says "
            f"height={expected_size[0]}, width={expected_size[1]}"
        )
    return rgb
