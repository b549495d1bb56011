"""rislib: referring image segmentation, built step by step.

Layers, from the bottom: ``layers`` -> ``data`` -> ``encoders`` -> ``fusion`` -> ``decoders``
-> ``models`` -> ``engine`` -> ``viz``. A layer never imports one above it.
"""

from .types import Batch, ModelOutput, TextFeatures, TextInput

__version__ = "0.1.0"

__all__ = ["Batch", "ModelOutput", "TextFeatures", "TextInput", "__version__"]
