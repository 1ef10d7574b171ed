"""Custom layers, one per file."""

from keras_rec.layers.causal_attention import CausalSelfAttentionBlock
from keras_rec.layers.graph_propagation import (
    LightGCNPropagation,
    NGCFPropagation,
    NodeDropout,
)
from keras_rec.layers.item_subset import PlaceItems, SelectItems
from keras_rec.layers.positional_embedding import PositionalEmbedding
from keras_rec.layers.recvae_encoder import RecVAEEncoder
from keras_rec.layers.reparameterized_sampling import ReparameterizedSampling
from keras_rec.layers.residual_dense import ResidualDense
from keras_rec.layers.sparse_rows_dense import SparseRowsDense
from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense

__all__ = [
    "CausalSelfAttentionBlock",
    "LightGCNPropagation",
    "NGCFPropagation",
    "NodeDropout",
    "PlaceItems",
    "PositionalEmbedding",
    "RecVAEEncoder",
    "ReparameterizedSampling",
    "ResidualDense",
    "SelectItems",
    "SparseRowsDense",
    "ZeroDiagonalDense",
]
