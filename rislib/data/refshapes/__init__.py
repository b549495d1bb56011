"""RefShapes and gRefShapes: the course's synthetic referring-segmentation benchmark (spec v1).

The parts, from the bottom: :mod:`.render` (shapes, colours, layouts, masks),
:mod:`.language` (the expression grammar, its parser and its evaluation on a scene),
:mod:`.candidates` (which expressions each object admits, sentence sampling),
:mod:`.scenes` (one image and its references) and :mod:`.generate` (the data set's files).
The public names are imported here, so ``from rislib.data.refshapes import generate_refshapes``
works as it always has.
"""

from .generate import generate_refshapes
from .scenes import DEFAULT_COUNTS, SPEC_VERSION, SPLIT_TYPES, SPLITS, RefShapesParams, generate_image, image_file_name

__all__ = [
    "SPLITS",
    "SPLIT_TYPES",
    "DEFAULT_COUNTS",
    "SPEC_VERSION",
    "RefShapesParams",
    "generate_refshapes",
    "generate_image",
    "image_file_name",
]
