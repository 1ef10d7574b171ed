"""The model contract every keras_rec model fulfils, and its shared top-k ops.

A model is a `keras.Model` that also inherits `Recommender` and declares:

* `input_kind`: `"user_id"` (scores from an id, e.g. BPR-MF, NCF) or
  `"item_history"` (scores from a padded history, most recent last, `PAD=-1`,
  e.g. SASRec, the autoencoders, popularity);
* `num_items`;
* `score_all(inputs)`: `[B, num_items]` scores, where `inputs` is
  `{"user_id": int64 [B]}` or `{"item_history": int64 [B, L]}`.

`score_items` and `recommend` follow from `score_all`; a model overrides
`score_items` where scoring a few candidates is much cheaper than all items.
Training uses Keras `fit` on the model's regime pipeline (see
`keras_rec.data.pipelines`), or a documented custom step.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

USER_ID = "user_id"
ITEM_HISTORY = "item_history"
ITEM_IDS = "item_ids"
#: Each id input's rank and valid range, `low <= id < model.<bound>` (a
#: history's -1 is padding); the eager checks here and the exported
#: signatures' in-graph asserts both read it.
ID_RANGES = {
    USER_ID: (1, 0, "num_users"),
    ITEM_HISTORY: (2, -1, "num_items"),
    ITEM_IDS: (2, 0, "num_items"),
}


class Recommender:
    """Mixin: the scoring contract shared by evaluators and exporters."""

    input_kind: str = USER_ID
    #: Longest history a history-based model reads (`None`: any length).
    history_length: int | None = None
    #: True for models fitted in closed form (`fit_closed_form(train)`)
    closed_form: bool = False
    #: True for models that read a history's last slot as its most recent
    #: item (SASRec): a history row ending in padding is then an error.
    needs_last_item: bool = False

    def score_all(self, inputs: dict) -> tf.Tensor:
        """Scores of every item, `[B, num_items]` float32, in inference mode.

        Args:
            inputs: `{"user_id": [B]}` for id-based models (`input_kind ==
                "user_id"`), `{"item_history": [B, L]}` (item ids, most
                recent last, left padded with -1) for history-based ones.

        Raises:
            ValueError: in eager calls, a missing input, an id out of range
                or a history with no item (see `check_inputs`).
        """
        raise NotImplementedError

    def score_items(self, inputs: dict, item_ids: tf.Tensor) -> tf.Tensor:
        """Scores of `item_ids` `[B, C]` for each row of `inputs`."""
        _check_input(self, item_ids, ITEM_IDS)  # `score_all` checks `inputs`
        _check_batch(inputs.get(self.input_kind), item_ids, ITEM_IDS)
        return tf.gather(self.score_all(inputs), item_ids, batch_dims=1)

    def recommend(
        self, inputs: dict, k: int = 10, exclude: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-`k` `(item_ids, scores)` with `exclude` `[B, L]` (PAD=-1) removed.

        For history-based models the history itself is excluded as well.

        Raises:
            ValueError: invalid `inputs` (see `check_inputs`), `k` not an
                int in `[1, num_items]`, or `exclude` of another batch size
                or with ids out of range.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"`k` must be an int. Received k={k!r}")
        if not 1 <= k <= self.num_items:
            raise ValueError(
                f"`k` must lie in [1, num_items={self.num_items}]. Received k={k}"
            )
        scores = self.score_all(inputs)
        if exclude is not None:
            _check_input(self, exclude, ITEM_HISTORY, label="exclude")
            _check_batch(inputs.get(self.input_kind), exclude, "exclude")
        if self.input_kind == ITEM_HISTORY:
            history = tf.cast(inputs[ITEM_HISTORY], tf.int64)
            exclude = history if exclude is None else tf.concat([exclude, history], 1)
        return exclude_and_top_k(scores, exclude, k)


def check_inputs(model, inputs: dict, item_ids=None) -> None:
    """In eager calls, raises `ValueError` on inputs the model cannot score.

    Ids must be integers in range: `user_id` `[B]` in `[0, num_users)`,
    `item_history` `[B, L]` in `[-1, num_items)` (-1 is padding; every row
    needs an item, and for a model with `needs_last_item` its last slot
    must be one) and `item_ids` `[B, C]` with `B` rows in `[0, num_items)`. Unchecked, an embedding lookup
    reads -1 as the last row, the history's spare padding column swallows
    id `num_items`, and float ids are truncated. Inside a traced function
    (the exported signatures, which assert the same ranges in-graph) this
    does nothing.
    """
    if not tf.executing_eagerly():
        return
    if model.input_kind not in inputs:
        raise ValueError(
            f"{type(model).__name__} scores from `{model.input_kind}`; "
            f"received inputs with keys {sorted(inputs)}"
        )
    _check_input(model, inputs[model.input_kind], model.input_kind)
    if item_ids is not None:
        _check_input(model, item_ids, ITEM_IDS)
        _check_batch(inputs[model.input_kind], item_ids, ITEM_IDS)


def _check_batch(query, other, label: str) -> None:
    """In eager calls, raises `ValueError` unless `other` has one row per
    row of `query` (a broadcast would answer for the wrong users)."""
    if not tf.executing_eagerly() or query is None:
        return
    rows, other_rows = np.shape(query)[0], np.shape(other)[0]
    if rows != other_rows:
        raise ValueError(
            f"`{label}` must have one row per request row: received {other_rows} "
            f"rows for a batch of {rows}"
        )


def _check_input(model, values, name: str, label: str | None = None) -> None:
    """Integer dtype, rank and range of the id input `name` (see `ID_RANGES`).

    A model without the bounding attribute (a user-id model with no
    `num_users`) leaves that side unbounded. Does nothing when tracing.
    """
    if not tf.executing_eagerly():
        return
    rank, low, bound = ID_RANGES[name]
    high = getattr(model, bound, None)
    label = label or name
    ids = np.asarray(values)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"`{label}` must hold integer ids; received dtype {ids.dtype}")
    if ids.ndim != rank:
        raise ValueError(
            f"`{label}` must have rank {rank}; received shape {list(ids.shape)}"
        )
    high = np.inf if high is None else high
    if ids.size and (ids.min() < low or ids.max() >= high):
        bad = ids[(ids < low) | (ids >= high)]
        raise ValueError(
            f"`{label}` ids must be in [{low}, {bound}={high}); received "
            f"{bad.size} outside it (e.g. {bad.flat[0]})"
        )
    if name == ITEM_HISTORY and label == ITEM_HISTORY:
        _check_history_rows(model, ids)


def _check_history_rows(model, history: np.ndarray) -> None:
    """Every history row holds an item; for a `needs_last_item` model the
    last slot is one (the most recent item, left padding)."""
    empty = np.flatnonzero(~np.any(history >= 0, axis=1))
    if empty.size:
        raise ValueError(
            f"`item_history` has {empty.size} rows with no item (only PAD=-1; "
            f"e.g. row {empty[0]}): every history needs at least one item id"
        )
    if getattr(model, "needs_last_item", False) and history.shape[1]:
        ending = np.flatnonzero(history[:, -1] < 0)
        if ending.size:
            raise ValueError(
                f"`item_history` rows must end with their most recent item: "
                f"{type(model).__name__} reads the last slot, and {ending.size} "
                f"rows end with PAD=-1 (e.g. row {ending[0]}). Pad on the left"
            )


def excluded_score(dtype) -> np.floating:
    """The score `exclude_and_top_k` gives excluded items: `dtype`'s lowest
    finite value, below every other score.

    Finite, so that TF Serving's REST API writes it as a JSON number (it
    writes -inf as `-Infinity`, which strict JSON parsers refuse), and the
    same in the TFLite model (its converter turns a -inf constant into
    this value anyway).
    """
    return np.finfo(tf.as_dtype(dtype).as_numpy_dtype).min


def unscored_score(dtype) -> np.floating:
    """The score of items a model leaves unscored (outside a subset model's
    items): the value just above `excluded_score`, so they rank after every
    scored item and before the excluded ones, in the SavedModel and TFLite."""
    lowest = excluded_score(dtype)
    return np.nextafter(lowest, lowest.dtype.type(0))


def exclude_and_top_k(
    scores: tf.Tensor, exclude: tf.Tensor | None, k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-`k` of `scores` `[B, I]` after setting `exclude` ids to the
    lowest finite score (`excluded_score`).

    Built from TFLite builtin ops only (SCATTER_ND, EQUAL, SELECT_V2, MAXIMUM,
    TOPK_V2), so the same code serves the SavedModel and the TFLite model.
    Negative ids in `exclude` are padding. A score below `unscored_score`
    (-inf from an overflowing model) or NaN is set to it first, so it still
    ranks before every excluded item and after every scored one.
    """
    floor = tf.constant(unscored_score(scores.dtype), scores.dtype)
    # NaN is ranked as unscored too: TOPK_V2 orders it arbitrarily.
    scores = tf.where(tf.equal(scores, scores), tf.maximum(scores, floor), floor)
    if exclude is not None:
        lowest = tf.constant(excluded_score(scores.dtype), scores.dtype)
        excluded = tf.fill(tf.shape(scores), lowest)
        scores = tf.where(seen_mask(exclude, tf.shape(scores)[1]), excluded, scores)
    top = tf.math.top_k(scores, k=k)
    return tf.cast(top.indices, tf.int64), top.values


def seen_mask(exclude: tf.Tensor, num_items) -> tf.Tensor:
    """Bool `[B, num_items]`, true at the ids in `exclude` `[B, L]` (PAD < 0)."""
    exclude = tf.cast(exclude, tf.int32)
    num_items = tf.cast(num_items, tf.int32)
    batch = tf.shape(exclude)[0]
    # Padding is sent to a spare column `num_items`, then cut off.
    columns = tf.where(exclude >= 0, exclude, num_items)
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(columns))
    indices = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])
    counts = tf.scatter_nd(
        indices, tf.ones([tf.shape(indices)[0]], tf.float32), [batch, num_items + 1]
    )
    return counts[:, :num_items] > 0


def gather_rows(indptr: tf.Tensor, indices: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Rows of a CSR matrix as a `[B, L]` id matrix padded with -1.

    `L` is the longest selected row; builtin TFLite ops only.
    """
    rows = tf.cast(rows, tf.int32)
    starts = tf.gather(indptr, rows)
    lengths = tf.gather(indptr, rows + 1) - starts
    width = tf.maximum(tf.reduce_max(lengths), 1)
    offsets = tf.range(width)[None, :]
    valid = offsets < lengths[:, None]
    positions = tf.where(valid, starts[:, None] + offsets, 0)
    return tf.where(valid, tf.gather(indices, positions), -1)


def check_positive(**values) -> None:
    """Raises `ValueError` naming the first argument that is not positive
    (NaN included)."""
    for label, value in values.items():
        if value is None or not value > 0:
            raise ValueError(f"`{label}` must be positive. Received: {label}={value}")


def check_non_negative(**values) -> None:
    """Raises `ValueError` naming the first argument that is negative or NaN."""
    for label, value in values.items():
        if not value >= 0:
            raise ValueError(f"`{label}` must be >= 0. Received: {label}={value}")


def serialize_config(model: keras.Model, **arguments) -> dict:
    """`get_config` for functional subclasses: name, trainable and arguments."""
    return {"name": model.name, "trainable": model.trainable, **arguments}


class ArgumentsConfig:
    """Mixin of functional subclasses whose config is their constructor
    arguments, stored as attributes of the names in `config_keys`.

    `get_config` is `serialize_config` of those attributes, in that order;
    `from_config` calls the constructor with them.
    """

    #: Constructor arguments, stored as attributes of the same name.
    config_keys: tuple[str, ...] = ()

    def get_config(self):
        return serialize_config(
            self, **{key: getattr(self, key) for key in self.config_keys}
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
