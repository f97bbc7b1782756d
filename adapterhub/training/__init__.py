"""Training: recipes run one adapter per task (separate) or several jointly through per-row routing.

setup (:mod:`.setup`) -> fit (:mod:`.fit`, with :mod:`.evaluate` and :mod:`.checkpoint`) -> finish
(:mod:`.finish`, :mod:`.report`); :class:`Trainer` (:mod:`.trainer`) drives it from Python, :func:`train_recipe`
(:mod:`.run`) end to end."""
from .finish import TaskResult
from .run import train_recipe
from .trainer import Trainer

__all__ = ["TaskResult", "Trainer", "train_recipe"]
