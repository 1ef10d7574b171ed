"""SASRec's self-attention block: causal multi-head attention and a point-wise FFN."""

from __future__ import annotations

import keras
from keras import ops


def _seeded(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


@keras.saving.register_keras_serializable(package="keras_rec")
class CausalSelfAttentionBlock(keras.layers.Layer):
    """A pre-norm Transformer block where position `i` sees only positions `<= i`.

    As SASRec (§III.B-C) writes it, each sub-layer `g` is wrapped as
    `g(x) = x + Dropout(g(LayerNorm(x)))`:

    `S = x + Dropout(SA(LN(x)))`, `SA` causal multi-head self-attention;
    `F = S + Dropout(FFN(LN(S)))`, `FFN(s) = Dropout(ReLU(s W1 + b1)) W2 + b2`
    (the inner dropout is the reference code's). Padded positions
    (`padding_mask` false) are masked as keys, their attention rows are zero,
    and their outputs are multiplied by the mask, as the reference code does,
    so they neither attend, nor are attended to, nor carry anything.

    Differences from the reference TensorFlow code, which follows the paper's
    formula less literally: it adds the residual to `LN(x)` rather than `x`,
    takes keys and values from `x` rather than `LN(x)`, applies dropout to
    the attention weights instead of the attention output, and has no output
    projection; `keras.layers.MultiHeadAttention` adds one (`d x d` + bias).
    `attention_dropout_rate` gives the reference's weight dropout.

    Args:
        hidden_dim: int. Width `d` of the inputs and outputs.
        num_heads: int. Attention heads; must divide `hidden_dim`.
        intermediate_dim: int or None. Inner FFN width (`None`: `hidden_dim`,
            as SASRec).
        dropout_rate: float. Dropout on each sub-layer's output and inside
            the FFN.
        attention_dropout_rate: float. Dropout on the attention weights.
        layer_norm_epsilon: float. Epsilon of the layer normalisations (the
            reference code's is `1e-8`).
        seed: int or None. Seed of the initialisers and dropout: the block
            uses `seed` to `seed + 10` (dropouts 1, 2, 4, 6; feed-forward
            kernels 3, 5; query, key, value and output kernels 7-10; `seed`
            itself only for the attention layer's own initializer, which
            those four replace), so blocks of one model need seeds at least
            10 apart to start from distinct kernels (SASRec gives block `b`
            `seed + 10 (b + 1)`).

    Example:
    >>> block = CausalSelfAttentionBlock(hidden_dim=8, num_heads=2)
    >>> block(keras.ops.ones((2, 5, 8))).shape
    TensorShape([2, 5, 8])

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018.
        https://arxiv.org/abs/1808.09781
        Vaswani et al., Attention Is All You Need, NeurIPS 2017.
        https://arxiv.org/abs/1706.03762
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int = 1,
        intermediate_dim: int | None = None,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-8,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed
        for label, value in (
            ("hidden_dim", hidden_dim),
            ("num_heads", num_heads),
            ("intermediate_dim", 1 if intermediate_dim is None else intermediate_dim),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{label}` must be a positive integer. Received {label}={value}"
                )
        if hidden_dim % num_heads:
            raise ValueError(
                "`num_heads` must divide `hidden_dim`. Received "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        for label, value in (
            ("dropout_rate", dropout_rate),
            ("attention_dropout_rate", attention_dropout_rate),
        ):
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"`{label}` must be in [0, 1). Received {label}={value}"
                )
        if layer_norm_epsilon <= 0:
            raise ValueError(
                "`layer_norm_epsilon` must be positive. "
                f"Received layer_norm_epsilon={layer_norm_epsilon}"
            )
        inner = intermediate_dim or hidden_dim

        def glorot(offset):
            return keras.initializers.GlorotUniform(_seeded(seed, offset))

        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_norm"
        )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_dim // num_heads,
            dropout=attention_dropout_rate,
            kernel_initializer=glorot(0),
            seed=_seeded(seed, 1),
            name="attention",
        )
        self.attention_dropout = keras.layers.Dropout(
            dropout_rate, seed=_seeded(seed, 2), name="attention_dropout"
        )
        self.feedforward_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="feedforward_norm"
        )
        self.intermediate_dense = keras.layers.Dense(
            inner, activation="relu", kernel_initializer=glorot(3), name="intermediate"
        )
        self.intermediate_dropout = keras.layers.Dropout(
            dropout_rate, seed=_seeded(seed, 4), name="intermediate_dropout"
        )
        self.output_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=glorot(5), name="output"
        )
        self.output_dropout = keras.layers.Dropout(
            dropout_rate, seed=_seeded(seed, 6), name="output_dropout"
        )

    def build(self, inputs_shape, padding_mask_shape=None):
        shape = tuple(inputs_shape)
        if shape[-1] != self.hidden_dim:
            raise ValueError(
                f"Inputs have width {shape[-1]} but `hidden_dim` is {self.hidden_dim}"
            )
        self.attention_norm.build(shape)
        self.attention.build(shape, shape)
        if self.seed is not None:
            # Keras gives the query, key, value and output projections clones
            # of one initializer, which, seeded, draw the same kernels (Q = K
            # = V at the start): each gets its own seed instead.
            projections = (
                self.attention.query_dense,
                self.attention.key_dense,
                self.attention.value_dense,
                self.attention.output_dense,
            )
            for offset, dense in enumerate(projections, start=7):
                initializer = keras.initializers.GlorotUniform(self.seed + offset)
                dense.kernel.assign(initializer(dense.kernel.shape))
        self.feedforward_norm.build(shape)
        self.intermediate_dense.build(shape)
        self.output_dense.build(shape[:-1] + (self.intermediate_dense.units,))

    def call(
        self,
        inputs,
        padding_mask=None,
        training=None,
        return_attention_scores: bool = False,
    ):
        """Args:
            inputs: float `[B, L, hidden_dim]`.
            padding_mask: bool `[B, L]`, true at real items (`None`: no padding).
            training: bool. Dropout on or off.
            return_attention_scores: bool. Also return the attention weights
                `[B, num_heads, L, L]` (rows of padded queries are zero).

        Returns:
            `[B, L, hidden_dim]`, or `(outputs, scores)`.
        """
        length = ops.shape(inputs)[1]
        causal = ops.tril(ops.ones((length, length), "bool"))[None]
        if padding_mask is None:
            attention_mask = causal
        else:
            padding_mask = ops.cast(padding_mask, "bool")
            attention_mask = ops.logical_and(causal, padding_mask[:, None, :])
        normed = self.attention_norm(inputs)
        attended, scores = self.attention(
            normed,
            normed,
            attention_mask=attention_mask,
            use_causal_mask=True,
            return_attention_scores=True,
            training=training,
        )
        hidden = inputs + self.attention_dropout(attended, training=training)
        normed = self.feedforward_norm(hidden)
        inner = self.intermediate_dropout(
            self.intermediate_dense(normed), training=training
        )
        outputs = hidden + self.output_dropout(
            self.output_dense(inner), training=training
        )
        if padding_mask is not None:
            mask = ops.cast(padding_mask, outputs.dtype)
            outputs = outputs * mask[:, :, None]
            scores = scores * mask[:, None, :, None]
        return (outputs, scores) if return_attention_scores else outputs

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "seed": self.seed,
        }
