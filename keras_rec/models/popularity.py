"""Most-popular baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from keras_rec.data.interactions import Interactions
from keras_rec.models.base import (
    ITEM_HISTORY,
    Recommender,
    check_inputs,
    serialize_config,
)

if TYPE_CHECKING:
    import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_rec")
class Popularity(Recommender, keras.Model):
    """Ranks items by their number of training interactions, for everyone.

    `s(u, i) = log(1 + count(i))`, the same for every user; items in the
    user's history are excluded when recommending. Fitted in closed form
    with `fit_closed_form(train)`; the counts are a non-trainable weight so
    they survive saving.

    Args:
        num_items: int. Size of the item vocabulary.

    Example:
    >>> model = Popularity(num_items=5)
    >>> model.score_all({"item_history": np.array([[0, -1]])}).shape
    TensorShape([1, 5])
    """

    input_kind = ITEM_HISTORY
    closed_form = True

    def __init__(self, num_items: int, **kwargs):
        if num_items <= 0:
            raise ValueError(
                f"`num_items` must be positive. Received num_items={num_items}"
            )
        # === Layers ===
        scorer = _ItemPrior(num_items, name="item_prior")
        # === Functional model ===
        history = keras.Input(shape=(None,), dtype="int64", name=ITEM_HISTORY)
        scores = scorer(history)
        super().__init__(inputs={ITEM_HISTORY: history}, outputs=scores, **kwargs)
        # === Config ===
        self.scorer = scorer
        self.num_items = num_items

    def fit_closed_form(self, train: Interactions) -> Popularity:
        """Sets each item's score to `log(1 + count)`, its number of
        interactions in `train`, and returns the model.

        Raises:
            ValueError: `train` holds an item id outside `[0, num_items)`.
        """
        item_ids = np.asarray(train.item_ids)
        if len(item_ids) and (item_ids.min() < 0 or item_ids.max() >= self.num_items):
            raise ValueError(
                f"`train` holds item ids in [{item_ids.min()}, {item_ids.max()}], "
                f"outside the model's {self.num_items} items [0, {self.num_items})"
            )
        counts = np.bincount(item_ids, minlength=self.num_items)
        self.scorer.prior.assign(np.log1p(counts).astype("float32"))
        return self

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        return self.scorer(inputs[ITEM_HISTORY])

    def get_config(self):
        return serialize_config(self, num_items=self.num_items)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_rec")
class _ItemPrior(keras.layers.Layer):
    """The same `[num_items]` score vector broadcast to each row of a batch."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.prior = self.add_weight(
            shape=(num_items,), initializer="zeros", trainable=False, name="prior"
        )

    def call(self, history):
        batch = ops.shape(history)[0]
        return ops.broadcast_to(self.prior[None, :], (batch, self.num_items))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}
