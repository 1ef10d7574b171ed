"""Losses, one per file."""

from keras_rec.losses.bpr import BPRLoss
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy

__all__ = [
    "BPRLoss",
    "SampledBinaryCrossentropy",
]
