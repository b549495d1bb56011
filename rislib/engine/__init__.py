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

# isort: split
# the training loop (rislib.engine.trainer), recipes, EMA and process helpers
from .distributed import DistContext as DistContext
from .distributed import setup_distributed as setup_distributed
from .ema import ModelEMA as ModelEMA
from .recipes import Recipe as Recipe
from .recipes import get_recipe as get_recipe
from .trainer import NonFiniteLossError as NonFiniteLossError
from .trainer import TrainConfig as TrainConfig
from .trainer import Trainer as Trainer
from .trainer import TrainResult as TrainResult
from .trainer import lr_factor as lr_factor
from .trainer import plot_curves as plot_curves
