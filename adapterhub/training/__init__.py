"""Training: recipes run one adapter per task (separate) or several jointly through per-row routing."""
from .cli import train_recipe
from .loop import Trainer

__all__ = ["Trainer", "train_recipe"]
