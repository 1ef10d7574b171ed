"""Custom layers, one per file."""

from keras_rec.layers.causal_attention import CausalSelfAttentionBlock
from keras_rec.layers.positional_embedding import PositionalEmbedding

__all__ = [
    "CausalSelfAttentionBlock",
    "PositionalEmbedding",
]
