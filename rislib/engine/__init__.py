"""The engine: the evaluation and training loops that work for every model.

``evaluate(model, dataset, ...)`` scores every sentence of a split (see
:mod:`rislib.engine.evaluator`); :mod:`rislib.engine.heuristics` holds the non-learned
baselines every method must beat. Each public name is re-exported below (``X as X``).
"""

from .evaluator import EvalResult as EvalResult
from .evaluator import Evaluator as Evaluator
from .evaluator import evaluate as evaluate
from .evaluator import result_path as result_path
from .evaluator import write_result as write_result
