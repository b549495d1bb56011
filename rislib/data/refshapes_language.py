"""Former place of :mod:`rislib.data.refshapes.language`; this name stays an alias of that module."""

import sys

from .refshapes import language as _module

sys.modules[__name__] = _module
