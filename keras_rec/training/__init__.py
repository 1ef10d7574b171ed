"""Training loops, checkpoints and results files."""

from keras_rec.training.optimizers import FusedAdam, FusedNadam
from keras_rec.training.results import (
    atomic_write_json,
    markdown_table,
    package_versions,
    summarize_seeds,
)
from keras_rec.training.trainer import TrainingResult, train_model

__all__ = [
    "FusedAdam",
    "FusedNadam",
    "TrainingResult",
    "atomic_write_json",
    "markdown_table",
    "package_versions",
    "summarize_seeds",
    "train_model",
]
