"""Neural EASE (Vančura and Kordík, ICANN 2021): EASE's item-item matrix
learned by gradient descent; the shallow path of VASP."""

from __future__ import annotations

import keras

from keras_rec.layers.item_subset import PlaceItems, SelectItems, check_item_ids
from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense
from keras_rec.models.autoencoder_base import (
    LOGITS,
    AutoencoderRecommender,
    rows_input,
)
from keras_rec.models.base import check_positive, serialize_config


@keras.saving.register_keras_serializable(package="keras_rec")
class NeuralEASE(AutoencoderRecommender, keras.Model):
    """EASE as a single bias-free dense layer with a zero diagonal.

    `s(x) = x B` with `diag(B) = 0` (`ZeroDiagonalDense`), so no item can
    predict itself; where EASE solves for `B` in closed form, Neural EASE
    learns it with a neural-network optimiser. Compile with
    `CosineProximityLoss()` (the paper's loss for Neural EASE): the loss of a
    user is `-cos(y, x B)`. Train it on user rows (`user_rows_dataset`) or on
    split-brain pairs (`keras_rec.models.vasp.split_brain_dataset`). The
    scores are `x B`.

    Args:
        num_items: int. Size of the item vocabulary.
        l2: float. L2 penalty `l2 * sum(B^2)` (the paper's Neural EASE
            uses none). Not on EASE's scale: the loss here is a per-user
            mean of cosines, not EASE's summed squared error, so EASE's
            `lambda` (hundreds) does not carry over.
        seed: int or None. Seed of the initialiser.
        item_ids: list of int or None. The items `B` covers (VASP's
            `items_sampling`: its authors keep ML-20M's most popular 33%,
            see `keras_rec.layers.item_subset`); `B` is then
            `len(item_ids)` square. The other items are 0 in the model's
            outputs (what the loss sees; not for ranking, since `x B` can
            be negative) and, from `score_all`/`score_items` and the
            exports, the value just above the dtype's lowest
            (`keras_rec.models.base.unscored_score`; excluded items get the
            lowest), which ranks them after every covered item and before
            the excluded ones. `None`:
            all items.
        sparse_rows: bool. Train on the rows' nonzeros only
            (`ZeroDiagonalDense(sparse_inputs=True)`; faster on very
            sparse rows).

    Example:
    >>> model = NeuralEASE(num_items=20)
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 20])

    References:
        Vančura and Kordík, VASP, ICANN 2021. https://arxiv.org/abs/2102.05774
        Steck, EASE, WWW 2019. https://arxiv.org/abs/1905.03375
    """

    def __init__(
        self,
        num_items: int,
        l2: float = 0.0,
        seed: int | None = None,
        item_ids: list[int] | None = None,
        sparse_rows: bool = False,
        **kwargs,
    ):
        check_positive(num_items=num_items)
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received: l2={l2}")
        if item_ids is not None:
            item_ids = check_item_ids(item_ids, num_items)
        # === Layers ===
        ease = ZeroDiagonalDense(
            num_items if item_ids is None else len(item_ids),
            kernel_initializer=keras.initializers.GlorotUniform(seed),
            kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
            sparse_inputs=sparse_rows,
            name=LOGITS,
        )
        # === Functional model ===
        rows = rows_input(num_items)
        if item_ids is None:
            scores = ease(rows)
        else:
            selected = SelectItems(item_ids, name="select_items")(rows)
            scores = PlaceItems(item_ids, num_items, name="place_items")(ease(selected))
        super().__init__(inputs=rows, outputs=scores, **kwargs)
        # === Config ===
        self.ease = ease
        self.num_items = num_items
        self.l2 = l2
        self.seed = seed
        self.item_ids = item_ids
        self.sparse_rows = sparse_rows

    def get_config(self):
        return serialize_config(
            self,
            num_items=self.num_items,
            l2=self.l2,
            seed=self.seed,
            item_ids=self.item_ids,
            sparse_rows=self.sparse_rows,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
