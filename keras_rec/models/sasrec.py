"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018)."""

from __future__ import annotations

import math
import weakref

import keras
import tensorflow as tf
from keras import ops

from keras_rec.layers.causal_attention import CausalSelfAttentionBlock
from keras_rec.layers.positional_embedding import PositionalEmbedding
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy
from keras_rec.models.base import (
    ITEM_HISTORY,
    Recommender,
    check_inputs,
    serialize_config,
)

POSITIVES = "positives"
NEGATIVES = "negatives"


def _seeded(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


# Eager scoring (the evaluators) runs the network as one graph: 3-4x faster
# than op by op. Kept outside the model so no export ever traces it.
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_function(model):
    function = _INFERENCE.get(model)
    if function is None:
        owner = weakref.ref(model)
        function = tf.function(
            lambda history: owner()({ITEM_HISTORY: history}, training=False),
            reduce_retracing=True,
        )
        _INFERENCE[model] = function
    return function


def _shift(ids):
    """Contract ids (`PAD = -1`) to embedding rows (`0` = padding)."""
    return ops.where(ops.greater_equal(ids, 0), ids + 1, ops.zeros_like(ids))


@keras.saving.register_keras_serializable(package="keras_rec")
class SASRec(Recommender, keras.Model):
    """Self-attentive sequential recommendation: causal Transformer blocks.

    `E_hat = Dropout(sqrt(d) M_{s_t} + P_t)`, then `num_blocks`
    `CausalSelfAttentionBlock`s and a final LayerNorm give `F_t` at each
    position `t`; the score of item `i` after `t` is `r_{i,t} = F_t M_i^T`
    with the input item embedding `M` shared for prediction. The functional
    model maps `{"item_history": [B, T]}` (`PAD = -1`, left padded, any
    width `T <= maxlen`) to `F` `[B, T, d]` (zero at padding). Training
    (`compute_loss`) takes the targets `{"positives", "negatives"}` of
    `keras_rec.data.sequence_dataset` and applies
    `SampledBinaryCrossentropy` to `[r_{o_t,t}, r_{j_t,t}]`. `score_all`
    ranks every item by the last position's `F`.

    Width-cropped batches are exact: positions are aligned to the end (the
    most recent item always gets `P_{maxlen-1}`), padded keys are masked and
    padded outputs zeroed, so a batch whose longest history has `T` items
    gives, at its items, the same `F` as the batch padded to `maxlen`
    (`sequence_dataset(..., bucket_by_length=True)` feeds such batches).
    Scoring (`score_all`, `score_items`, the SavedModel) pads or crops a
    history of any width to its latest `maxlen` slots first (`fit_history`)
    and reads the last one, so a history must end with its most recent
    item: a row whose last slot is padding is an error (eagerly and in the
    SavedModel; the TFLite model, which has no asserts, fails its bounds
    check). The exports (SavedModel and, by default, TFLite) take histories
    of any width, read their latest `maxlen` items and exclude all of them.

    Ids are shifted by one inside the model, so embedding row 0 is padding.

    Args:
        num_items: int. Size of the item vocabulary.
        maxlen: int. Longest history read (SASRec's `n`); longer histories
            keep their latest `maxlen` items.
        hidden_dim: int. Latent dimension `d`.
        num_blocks: int. Number of self-attention blocks.
        num_heads: int. Attention heads per block.
        dropout_rate: float. Dropout on the embeddings and in each block.
        attention_dropout_rate: float. Dropout on the attention weights.
        layer_norm_epsilon: float. Epsilon of every LayerNorm.
        seed: int or None. Seed of the initialisers and dropout.

    Example:
    >>> model = SASRec(num_items=30, maxlen=6, hidden_dim=8)
    >>> model.score_all({"item_history": [[-1, -1, 3, 4]]}).shape
    TensorShape([1, 30])

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018.
        https://arxiv.org/abs/1808.09781
    """

    input_kind = ITEM_HISTORY
    needs_last_item = True

    def __init__(
        self,
        num_items: int,
        maxlen: int = 50,
        hidden_dim: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout_rate: float = 0.5,
        attention_dropout_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-8,
        seed: int | None = None,
        **kwargs,
    ):
        for label, value in (
            ("num_items", num_items),
            ("maxlen", maxlen),
            ("hidden_dim", hidden_dim),
            ("num_blocks", num_blocks),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{label}` must be a positive integer. Received {label}={value}"
                )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(
                f"`dropout_rate` must be in [0, 1). Received dropout_rate={dropout_rate}"
            )
        # === Layers ===
        # Sub-layers are assigned before the functional call, as in keras-hub.
        self.item_embedding = keras.layers.Embedding(
            num_items + 1,
            hidden_dim,
            embeddings_initializer=keras.initializers.GlorotUniform(seed),
            name="item_embedding",
        )
        self.position_embedding = PositionalEmbedding(
            maxlen, seed=_seeded(seed, 1), name="position_embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout_rate, seed=_seeded(seed, 2), name="embedding_dropout"
        )
        self.blocks = [
            CausalSelfAttentionBlock(
                hidden_dim,
                num_heads,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                layer_norm_epsilon=layer_norm_epsilon,
                seed=_seeded(seed, 10 * (index + 1)),
                name=f"block_{index}",
            )
            for index in range(num_blocks)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="final_norm"
        )
        # === Functional model ===
        # Any width up to `maxlen` (width-cropped training batches); scoring
        # and export go through `fit_history`, which fixes it at `maxlen`.
        history = keras.Input(shape=(None,), dtype="int64", name=ITEM_HISTORY)
        sequence = self.encode(history)
        super().__init__(inputs={ITEM_HISTORY: history}, outputs=sequence, **kwargs)
        # === Config ===
        self.num_items = num_items
        self.maxlen = maxlen
        self.history_length = maxlen
        self.hidden_dim = hidden_dim
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed

    def encode(self, history, training=None, return_attention_scores=False):
        """`F` `[B, L, d]` of `history` `[B, L]`, optionally with each block's
        attention weights `[B, num_heads, L, L]` (a list)."""
        mask = ops.greater_equal(history, 0)
        dim = self.item_embedding.output_dim
        hidden = self.item_embedding(_shift(history)) * math.sqrt(dim)
        hidden = self.embedding_dropout(
            self.position_embedding(hidden), training=training
        )
        hidden = hidden * ops.cast(mask, hidden.dtype)[..., None]
        scores = []
        for block in self.blocks:
            hidden, block_scores = block(
                hidden,
                padding_mask=mask,
                training=training,
                return_attention_scores=True,
            )
            scores.append(block_scores)
        hidden = self.final_norm(hidden) * ops.cast(mask, hidden.dtype)[..., None]
        return (hidden, scores) if return_attention_scores else hidden

    def fit_history(self, history) -> tf.Tensor:
        """`history` `[B, any]` cropped to its latest `maxlen` items or left
        padded with -1 to `maxlen`."""
        history = tf.cast(history, tf.int64)[:, -self.maxlen :]
        missing = self.maxlen - tf.shape(history)[1]
        history = tf.pad(history, [[0, 0], [missing, 0]], constant_values=-1)
        return tf.reshape(history, [-1, self.maxlen])

    def last_state(self, inputs: dict) -> tf.Tensor:
        """`F` at the last (most recent) position `[B, d]`, inference mode."""
        history = self.fit_history(inputs[ITEM_HISTORY])
        if tf.executing_eagerly():
            return _inference_function(self)(history)[:, -1, :]
        return self({ITEM_HISTORY: history}, training=False)[:, -1, :]

    def attention_scores(self, inputs: dict) -> list[tf.Tensor]:
        """Each block's attention weights `[B, num_heads, maxlen, maxlen]`."""
        history = self.fit_history(inputs[ITEM_HISTORY])
        return self.encode(history, training=False, return_attention_scores=True)[1]

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        items = self.item_embedding.embeddings[1:]
        return ops.matmul(self.last_state(inputs), ops.transpose(items))

    def score_items(self, inputs: dict, item_ids: tf.Tensor) -> tf.Tensor:
        check_inputs(self, inputs, item_ids)
        candidates = self.item_embedding(
            _shift(ops.convert_to_tensor(item_ids, "int64"))
        )
        return ops.einsum("bd,bcd->bc", self.last_state(inputs), candidates)

    def pair_logits(self, sequence, positives, negatives):
        """`[B, L, 2]` logits `r_{o_t,t}`, `r_{j_t,t}` of `sequence` `[B, L, d]`."""
        pairs = ops.stack([positives, negatives], axis=-1)
        embedded = self.item_embedding(_shift(ops.cast(pairs, "int64")))
        return ops.einsum("bld,blkd->blk", sequence, embedded)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        logits = self.pair_logits(y_pred, y[POSITIVES], y[NEGATIVES])
        return super().compute_loss(x, y[POSITIVES], logits, sample_weight, **kwargs)

    def compile(self, optimizer="auto", loss="auto", **kwargs):
        """Defaults to the paper's Adam (lr 0.001, beta_2 0.98) and
        `SampledBinaryCrossentropy`."""
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=1e-3, beta_2=0.98)
        if loss == "auto":
            loss = SampledBinaryCrossentropy()
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # Keras skips restoring the compile state of models that override
        # `compile`; restore it (with the optimizer's slots) as Keras does.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return serialize_config(
            self,
            num_items=self.num_items,
            maxlen=self.maxlen,
            hidden_dim=self.hidden_dim,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
            seed=self.seed,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
