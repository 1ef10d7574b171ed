"""Losses, one per file."""

from keras_rec.losses.bpr import BPRLoss
from keras_rec.losses.cosine_proximity import CosineProximityLoss
from keras_rec.losses.focal import FocalLoss
from keras_rec.losses.multinomial import MultinomialLogLikelihood
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy

__all__ = [
    "BPRLoss",
    "CosineProximityLoss",
    "FocalLoss",
    "MultinomialLogLikelihood",
    "SampledBinaryCrossentropy",
]
