"""Former place of :mod:`rislib.data.refshapes.render`; this name stays an alias of that module."""

import sys

from .refshapes import render as _module

sys.modules[__name__] = _module
