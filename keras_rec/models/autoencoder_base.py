"""What the user-row autoencoders share: multi-hot rows in, scores out.

The autoencoders (Mult-VAE, Mult-DAE, EASE, RecVAE, VASP) are functional
Keras models over dense multi-hot user rows `[B, num_items]` (the input
named `"rows"`), which is what `keras_rec.data.pipelines.user_rows_dataset`
feeds them in training. The model contract asks history-based models for
`score_all({"item_history": int64 [B, L]})` (padded with -1): the
`AutoencoderRecommender` mixin turns a history into its multi-hot row with
TFLite builtin ops (SCATTER_ND, via `seen_mask`) and runs the network in
inference mode, so the SavedModel and the TFLite model serve the same code.

A model whose functional outputs are a dict (e.g. Mult-VAE's
`{"logits", "kl"}`) is scored by its `"logits"` entry; a model whose scores
are something else overrides `score_rows`.
"""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.data.interactions import Interactions
from keras_rec.models.base import (
    ITEM_HISTORY,
    Recommender,
    check_inputs,
    seen_mask,
    unscored_score,
)

ROWS = "rows"
LOGITS = "logits"


def history_to_rows(history: tf.Tensor, num_items: int) -> tf.Tensor:
    """Float32 multi-hot rows `[B, num_items]` of padded histories `[B, L]`.

    Padding (negative ids) and repeated ids are ignored: a row holds 1.0 at
    each distinct item of the history and 0.0 elsewhere.

    Example:
    >>> history_to_rows(tf.constant([[-1, 2, 0]]), 4).numpy()
    array([[1., 0., 1., 0.]], dtype=float32)
    """
    rows = tf.cast(seen_mask(history, num_items), tf.float32)
    # seen_mask slices with a tensor bound; restore the static width.
    return tf.reshape(rows, [-1, num_items])


def training_rows(train: Interactions) -> sp.csr_matrix:
    """The binary user-item CSR matrix of `train` without its empty rows.

    Under strong generalization, `split.train` keeps the id space of all
    users, but only the training users have rows: the held-out users' rows
    are empty and must not be fed as examples.
    """
    matrix = train.to_csr()
    nonempty = np.flatnonzero(np.diff(matrix.indptr) > 0)
    return matrix[nonempty]


def rows_input(num_items: int) -> keras.KerasTensor:
    """The functional input every autoencoder takes: float32 `[B, num_items]`."""
    return keras.Input(shape=(num_items,), dtype="float32", name=ROWS)


def check_rate(**values) -> None:
    """Raises `ValueError` naming the first argument outside `[0, 1)`."""
    for label, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"`{label}` must be in [0, 1). Received: {label}={value}")


class AutoencoderRecommender(Recommender):
    """Mixin of the row autoencoders: `score_all` from a history.

    Subclasses are `keras.Model`s whose functional input is `rows_input`
    and that set `self.num_items`.
    """

    input_kind = ITEM_HISTORY

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        rows = history_to_rows(inputs[ITEM_HISTORY], self.num_items)
        scores = self.score_rows(rows)
        item_ids = getattr(self, "item_ids", None)
        if item_ids is None:
            return scores
        # A model of a subset of the items ranks the others last (but
        # above the excluded items, see `unscored_score`).
        covered = np.zeros(self.num_items, bool)
        covered[item_ids] = True
        lowest = tf.constant(unscored_score(scores.dtype), scores.dtype)
        return tf.where(tf.constant(covered), scores, lowest)

    def score_rows(self, rows: tf.Tensor) -> tf.Tensor:
        """Scores `[B, num_items]` of multi-hot rows, in inference mode."""
        outputs = self(rows, training=False)
        if isinstance(outputs, dict):
            outputs = outputs[LOGITS]
        return outputs
