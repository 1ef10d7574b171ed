"""Run an item-space network on a subset of the items (VASP's `items_sampling`).

An `items x items` kernel (Neural EASE, VASP's shallow path) grows with the
square of the catalogue: 40,981 Gowalla items make a 6.3 GiB float32
kernel, and its optimizer state and gradient triple that. VASP's authors
train their ML-20M model on the most popular 33% of the items only
(`ease_items_sampling=0.33` in zombak79/vasp): the network reads and scores
those columns, and every other item scores zero. `SelectItems` takes the
columns in, `PlaceItems` puts the network's columns back into the whole
catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def check_item_ids(item_ids: Sequence[int], num_items: int) -> list[int]:
    """`item_ids` as a list of distinct ints in `[0, num_items)`, or a
    `ValueError` that names the problem."""
    ids = np.asarray(item_ids)
    if ids.ndim != 1 or len(ids) == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            "`item_ids` must be a non-empty list of integer item ids. "
            f"Received an array of shape {ids.shape} and dtype {ids.dtype}"
        )
    if ids.min() < 0 or ids.max() >= num_items:
        bad = ids[(ids < 0) | (ids >= num_items)][0]
        raise ValueError(
            f"`item_ids` holds {int(bad)}, outside the {num_items} items [0, "
            f"{num_items})"
        )
    if len(np.unique(ids)) != len(ids):
        raise ValueError("`item_ids` must not repeat an item")
    return [int(i) for i in ids]


def most_popular_items(matrix, fraction: float) -> list[int]:
    """The `floor(fraction * num_items)` items with the most interactions in
    the user-item `matrix` (ties to the lower id), in ascending id order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1]. Received fraction={fraction}")
    num_items = matrix.shape[1]
    count = int(fraction * num_items)
    if count < 1:
        raise ValueError(
            f"fraction={fraction} of {num_items} items keeps no item; use a larger one"
        )
    popularity = np.asarray((matrix != 0).sum(axis=0)).ravel()
    order = np.argsort(-popularity, kind="stable")
    return sorted(int(i) for i in order[:count])


@keras.saving.register_keras_serializable(package="keras_rec")
class SelectItems(keras.layers.Layer):
    """`[B, num_items] -> [B, len(item_ids)]`: the rows' columns `item_ids`.

    Args:
        item_ids: non-empty sequence of non-negative item ids, in the order
            of the output's columns.

    Example:
    >>> SelectItems([2, 0])(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0]])).numpy()
    array([[3., 1.]], dtype=float32)
    """

    def __init__(self, item_ids: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        ids = np.asarray(item_ids)
        if (
            ids.ndim != 1
            or len(ids) == 0
            or not np.issubdtype(ids.dtype, np.integer)
            or (ids < 0).any()
        ):
            raise ValueError(
                "`item_ids` must be a non-empty list of non-negative integer item "
                f"ids. Received {item_ids!r}"
            )
        self.item_ids = [int(i) for i in ids]

    def build(self, input_shape):
        num_items = input_shape[-1]
        if num_items is not None and max(self.item_ids) >= num_items:
            raise ValueError(
                f"`item_ids` holds id {max(self.item_ids)}, but the input has "
                f"{num_items} items (columns)"
            )

    def call(self, rows):
        return ops.take(rows, ops.convert_to_tensor(self.item_ids, "int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.item_ids))

    def get_config(self):
        return {**super().get_config(), "item_ids": self.item_ids}


@keras.saving.register_keras_serializable(package="keras_rec")
class PlaceItems(keras.layers.Layer):
    """`[B, len(item_ids)] -> [B, num_items]`: column `k` goes to item
    `item_ids[k]`, every other item gets `fill_value` (which may be -inf).
    Rank-2 inputs only.

    Built from TFLite builtin ops (TRANSPOSE, SCATTER_ND), so an exported
    model that places its scores this way converts without Flex ops.

    Args:
        item_ids: distinct item ids in `[0, num_items)`, one per input
            column.
        num_items: int. Width of the output.
        fill_value: float. Value of the items outside `item_ids` (default
            0.0; `-inf` ranks them last).

    Example:
    >>> layer = PlaceItems([2, 0], num_items=3)
    >>> layer(keras.ops.convert_to_tensor([[5.0, 7.0]])).numpy()
    array([[7., 0., 5.]], dtype=float32)
    """

    def __init__(
        self,
        item_ids: Sequence[int],
        num_items: int,
        fill_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.item_ids = check_item_ids(item_ids, num_items)
        self.num_items = int(num_items)
        self.fill_value = float(fill_value)

    def call(self, values):
        ids = tf.constant(self.item_ids, tf.int32)[:, None]
        columns = tf.transpose(values)
        shape = tf.stack([self.num_items, tf.shape(values)[0]])
        placed = tf.transpose(tf.scatter_nd(ids, columns, shape))
        if not self.fill_value:
            return placed
        covered = np.zeros(self.num_items, bool)
        covered[self.item_ids] = True
        fill = tf.fill(tf.shape(placed), tf.constant(self.fill_value, placed.dtype))
        return tf.where(tf.constant(covered), placed, fill)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_items)

    def get_config(self):
        return {
            **super().get_config(),
            "item_ids": self.item_ids,
            "num_items": self.num_items,
            "fill_value": self.fill_value,
        }
