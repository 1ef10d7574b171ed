"""Experiments of the autoencoders family (filled in by its issue)."""

from __future__ import annotations

from keras_rec.configs import Experiment

EXPERIMENTS: list[Experiment] = []
