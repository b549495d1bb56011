"""Former place of :mod:`rislib.data.refshapes.candidates`; this name stays an alias of that module."""

import sys

from .refshapes import candidates as _module

sys.modules[__name__] = _module
