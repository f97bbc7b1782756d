"""Training: recipes run one adapter per task (separate) or several jointly through per-row routing."""
from .loop import Trainer
from .run import train_recipe

__all__ = ["Trainer", "train_recipe"]
