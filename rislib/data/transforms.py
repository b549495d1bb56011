"""Image/mask/expression transforms for RIS training and evaluation.

* :func:`resize_pair`: image and mask to ``S x S``, either squashed ignoring the aspect ratio
  (LAVT / MagNet / ReLA protocol; the mask with NEAREST) or letterboxed (aspect kept, padded;
  CRIS-style), ``docs/data.md#how-the-reference-code-reads-the-data``.
* :func:`flip_expression`: a horizontal flip must swap left and right in the words too
  (section 4.3, pitfall 7); the reference codebases do not flip at all.
* :func:`restore_mask`: maps a prediction made at ``S x S`` back to the original image size,
  undoing either resize (the evaluator scores at the original size by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "RESIZE_MODES",
    "Letterbox",
    "resize_pair",
    "image_to_tensor",
    "mask_to_tensor",
    "flip_expression",
    "hflip_pair",
    "restore_mask",
]

RESIZE_MODES = ("squash", "letterbox")
LETTERBOX_FILL = (124, 116, 104)  # the ImageNet mean colour: zero after normalisation

_SWAPS = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}
_SWAP_RE = re.compile(r"\b(leftmost|rightmost|left|right)\b", flags=re.IGNORECASE)


@dataclass(frozen=True)
class Letterbox:
    """Where a letterboxed image sits in the ``S x S`` canvas.

    Attributes:
        scale: resize factor applied to the original image.
        offset: ``(x, y)`` of the image's top-left corner in the canvas.
        resized: ``(h, w)`` of the image inside the canvas.
    """

    scale: float
    offset: tuple[int, int]
    resized: tuple[int, int]


def image_to_tensor(image: Image.Image | np.ndarray) -> Tensor:
    """RGB ``uint8 [H, W, 3]`` (or PIL) -> float ``[3, H, W]`` in ``[0, 1]``."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # [H, W, 3] -> [3, H, W]


def mask_to_tensor(mask: np.ndarray) -> Tensor:
    """bool ``[H, W]`` -> float ``[1, H, W]`` in ``{0, 1}``."""
    return torch.from_numpy(np.array(mask, dtype=np.float32))[None]


def resize_pair(
    image: Image.Image, mask: np.ndarray, size: int, mode: str = "squash"
) -> tuple[np.ndarray, np.ndarray, Letterbox | None]:
    """Resize an image (bilinear) and its mask (nearest) to ``size x size``.

    Args:
        image: RGB PIL image ``H x W``.
        mask: bool ``[H, W]``.
        size: output side ``S``.
        mode: ``"squash"`` (ignore the aspect ratio) or ``"letterbox"`` (keep it, pad with
            the ImageNet mean colour and an empty mask).

    Returns:
        ``(uint8 [S, S, 3], bool [S, S], Letterbox or None)``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode: expected one of {RESIZE_MODES}, got {mode!r}")
    h, w = mask.shape
    if (image.height, image.width) != (h, w):
        raise ValueError(f"resize_pair: image is {image.height}x{image.width} but mask is {h}x{w}")
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255)
    if mode == "squash":
        img = image if (h, w) == (size, size) else image.resize((size, size), Image.BILINEAR)
        m = mask_img if (h, w) == (size, size) else mask_img.resize((size, size), Image.NEAREST)
        return np.asarray(img, dtype=np.uint8), np.asarray(m) > 127, None
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas = Image.new("RGB", (size, size), LETTERBOX_FILL)
    canvas.paste(image.resize((nw, nh), Image.BILINEAR), (ox, oy))
    mcanvas = Image.new("L", (size, size), 0)
    mcanvas.paste(mask_img.resize((nw, nh), Image.NEAREST), (ox, oy))
    return np.asarray(canvas, dtype=np.uint8), np.asarray(mcanvas) > 127, Letterbox(scale, (ox, oy), (nh, nw))


def flip_expression(text: str) -> str:
    """Swap left/right and leftmost/rightmost (whole words, keeping capitalisation).

    >>> flip_expression("the second circle from the left, right of the Leftmost star")
    'the second circle from the right, left of the Rightmost star'
    """

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        new = _SWAPS[word.lower()]
        if word.isupper():
            return new.upper()
        if word[0].isupper():
            return new.capitalize()
        return new

    return _SWAP_RE.sub(swap, text)


def hflip_pair(image: Tensor, mask: Tensor, text: str) -> tuple[Tensor, Tensor, str]:
    """Mirror an image ``[3, H, W]`` and mask ``[1, H, W]`` left-right and fix the words."""
    return image.flip(-1), mask.flip(-1), flip_expression(text)


def restore_mask(pred: Tensor, orig_size: tuple[int, int], letterbox: Letterbox | None = None) -> Tensor:
    """Map predictions made on the ``S x S`` input back to the original image size.

    Args:
        pred: ``[..., S, S]`` logits or probabilities (bilinear resampling; threshold after).
        orig_size: ``(h, w)`` of the original image.
        letterbox: the :class:`Letterbox` of a letterboxed input (``None`` for squash).

    Returns:
        ``[..., h, w]``.
    """
    lead = pred.shape[:-2]
    x = pred.reshape(-1, 1, *pred.shape[-2:]).float()  # [..., S, S] -> [N, 1, S, S]
    if letterbox is not None:
        (ox, oy), (nh, nw) = letterbox.offset, letterbox.resized
        x = x[..., oy : oy + nh, ox : ox + nw]
    x = F.interpolate(x, size=tuple(orig_size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, *orig_size)
