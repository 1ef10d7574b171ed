"""Losses, one per file."""

from keras_rec.losses.bpr import BPRLoss

__all__ = ["BPRLoss"]
